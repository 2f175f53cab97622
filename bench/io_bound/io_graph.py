"""An I/O-bound graph: one node that waits like a remote model call, then answers.

`call_model` awaits `asyncio.sleep(LATENCY_S)` and does almost nothing else, so a run's
throughput is bounded by how many cells wait at once: concurrency / LATENCY_S cells per
second is the physical limit a runner can approach. The node is async, so the graph runs
on the event loop with no thread hand-off; the answers match `bench/trivial`'s, so the same
generated cases score as correct.
"""

from __future__ import annotations

import asyncio
from typing import Final, TypedDict

from langgraph.graph import END, START, StateGraph

LATENCY_S: Final = 0.05
"""Seconds each cell waits in `call_model`, like an LLM request."""


class IoState(TypedDict, total=False):
    text: str
    answer: str


async def call_model(state: IoState) -> IoState:
    await asyncio.sleep(LATENCY_S)
    return {"answer": f"{len(state['text'].split())} words"}


def build_graph() -> StateGraph[IoState]:
    graph = StateGraph(IoState)
    graph.add_node("call_model", call_model)
    graph.add_edge(START, "call_model")
    graph.add_edge("call_model", END)
    return graph
