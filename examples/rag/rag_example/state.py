"""The graph's state: a question, retrieved passages, grading, and the answer."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


class Doc(TypedDict):
    id: str
    title: str
    text: str


class RagState(TypedDict, total=False):
    question: str
    # The text retrieval searches for: the question, or its rewrite.
    query: str
    rewrites: int
    documents: list[Doc]
    relevant: list[Doc]
    answer: str
    sources: list[str]
    # The nodes visited, in order; shows whether a run took the rewrite path.
    steps: Annotated[list[str], operator.add]
    # Model messages; the generator's AIMessage carries token usage as LangChain reports it.
    messages: Annotated[list[AnyMessage], add_messages]
