"""The workflow: retrieve -> grade -> generate, with one query rewrite when nothing is relevant."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from rag_example.generators import generate
from rag_example.grading import grade, route_after_grade
from rag_example.retrievers import keyword_overlap
from rag_example.rewrite import rewrite
from rag_example.state import RagState


def build_graph() -> StateGraph[RagState]:
    """The uncompiled graph; WTB swaps node implementations on a copy of it."""
    graph = StateGraph(RagState)
    graph.add_node("retrieve", keyword_overlap)
    graph.add_node("grade", grade)
    graph.add_node("rewrite", rewrite)
    graph.add_node("generate", generate)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "grade")
    graph.add_conditional_edges(
        "grade", route_after_grade, {"rewrite": "rewrite", "generate": "generate"}
    )
    graph.add_edge("rewrite", "retrieve")
    graph.add_edge("generate", END)
    return graph
