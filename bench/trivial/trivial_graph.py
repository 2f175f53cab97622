"""A trivial three-node sync graph: the smallest workload, so the harness's own cost shows.

Every node is a pure function of the state; the graph does almost nothing, which is the
point: a benchmark on it measures what WTB adds around `graph.invoke`, not the user's work.
"""

from __future__ import annotations

from typing import TypedDict

from langgraph.graph import END, START, StateGraph


class TrivialState(TypedDict, total=False):
    text: str
    words: list[str]
    count: int
    answer: str


def split(state: TrivialState) -> TrivialState:
    return {"words": state["text"].split()}


def count(state: TrivialState) -> TrivialState:
    return {"count": len(state["words"])}


def answer(state: TrivialState) -> TrivialState:
    return {"answer": f"{state['count']} words"}


def answer_shouting(state: TrivialState) -> TrivialState:
    """A variant of `answer`; the benchmarks keep to `original`, the demo manifest may not."""
    return {"answer": f"{state['count']} WORDS"}


def build_graph() -> StateGraph[TrivialState]:
    graph = StateGraph(TrivialState)
    graph.add_node("split", split)
    graph.add_node("count", count)
    graph.add_node("answer", answer)
    graph.add_edge(START, "split")
    graph.add_edge("split", "count")
    graph.add_edge("count", "answer")
    graph.add_edge("answer", END)
    return graph
