"""An I/O-bound three-node graph: the middle node waits like a remote model call.

`call_model` awaits `asyncio.sleep(LATENCY_S)` and does almost nothing else, so a run's
throughput is bounded by how many cells wait at once: concurrency / LATENCY_S cells per
second is the physical limit a runner can approach. Every node is async, so the graph
runs on the event loop with no thread hand-off; the answers match `bench/trivial`'s, so
the same generated cases score as correct.
"""

from __future__ import annotations

import asyncio
from typing import Final, TypedDict

from langgraph.graph import END, START, StateGraph

LATENCY_S: Final = 0.05
"""Seconds each cell waits in `call_model`, like an LLM request."""


class IoState(TypedDict, total=False):
    text: str
    words: list[str]
    count: int
    answer: str


async def prompt(state: IoState) -> IoState:
    return {"words": state["text"].split()}


async def call_model(state: IoState) -> IoState:
    await asyncio.sleep(LATENCY_S)
    return {"count": len(state["words"])}


async def answer(state: IoState) -> IoState:
    return {"answer": f"{state['count']} words"}


def build_graph() -> StateGraph[IoState]:
    graph = StateGraph(IoState)
    graph.add_node("prompt", prompt)
    graph.add_node("call_model", call_model)
    graph.add_node("answer", answer)
    graph.add_edge(START, "prompt")
    graph.add_edge("prompt", "call_model")
    graph.add_edge("call_model", "answer")
    graph.add_edge("answer", END)
    return graph
