"""Usage reporting: report_usage through LangGraph (sync and async nodes), message metadata."""

from __future__ import annotations

import asyncio
import contextvars
import operator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from wtb.usage import Usage, UsageMeter, combine, metering, report_usage, usage_from_state


class State(TypedDict, total=False):
    text: str
    trail: Annotated[list[str], operator.add]


def sync_node(state: State) -> dict[str, Any]:
    report_usage(input_tokens=3, output_tokens=2, cost=0.01)
    return {"trail": ["sync"]}


async def async_node(state: State) -> dict[str, Any]:
    await asyncio.sleep(0)
    report_usage(total_tokens=7, cost=0.02)
    return {"trail": ["async"]}


def sync_branch(state: State) -> dict[str, Any]:
    report_usage(input_tokens=1)
    return {"trail": ["branch"]}


def _graph(*, with_async: bool) -> Any:
    """start -> (sync_node | sync_branch, in parallel) -> last node.

    The last node is async_node (7 tokens, 0.02) or, for graphs run with plain invoke,
    which cannot run async nodes, sync_node again (5 tokens, 0.01).
    """
    g = StateGraph(State)
    g.add_node("sync_node", sync_node)
    g.add_node("sync_branch", sync_branch)
    g.add_node("last", async_node if with_async else sync_node)
    g.add_edge(START, "sync_node")
    g.add_edge(START, "sync_branch")
    g.add_edge(["sync_node", "sync_branch"], "last")
    g.add_edge("last", END)
    return g.compile()


def test_reports_from_sync_nodes_reach_the_meter_under_invoke() -> None:
    with metering() as meter:
        state = _graph(with_async=False).invoke({"text": "x"})
    assert sorted(state["trail"]) == ["branch", "sync", "sync"]
    assert meter.tokens == 11
    assert meter.cost == pytest.approx(0.02)


def test_reports_from_sync_and_async_nodes_reach_the_meter_under_ainvoke() -> None:
    async def run() -> tuple[UsageMeter, dict[str, Any]]:
        with metering() as meter:
            state = await _graph(with_async=True).ainvoke({"text": "x"})
        return meter, state

    meter, state = asyncio.run(run())
    assert sorted(state["trail"]) == ["async", "branch", "sync"]
    assert meter.tokens == 13
    assert meter.cost == pytest.approx(0.03)


def test_a_sync_graph_run_in_a_worker_thread_reports_to_the_callers_meter() -> None:
    """What the executor does for sync graphs: one thread hop with a copied context."""

    async def run() -> UsageMeter:
        with metering() as meter:
            await asyncio.to_thread(_graph(with_async=False).invoke, {"text": "x"})
        return meter

    assert asyncio.run(run()).tokens == 11


def test_concurrent_cells_keep_separate_meters() -> None:
    async def cell(n: int) -> int | None:
        with metering() as meter:
            for _ in range(n):
                await asyncio.sleep(0)
                report_usage(output_tokens=1)
        return meter.tokens

    async def run() -> list[int | None]:
        return list(await asyncio.gather(*(cell(n) for n in (1, 5, 9))))

    assert asyncio.run(run()) == [1, 5, 9]


def test_reports_from_many_threads_are_all_counted() -> None:
    def work() -> None:
        for _ in range(2000):
            report_usage(input_tokens=1, cost=0.5)

    with metering() as meter, ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(contextvars.copy_context().run, work) for _ in range(8)]
        for future in futures:
            future.result()
    assert meter.tokens == 16000
    assert meter.cost == 8000.0


def test_outside_a_metered_run_report_usage_does_nothing() -> None:
    report_usage(input_tokens=5, cost=1.0)
    assert _graph(with_async=False).invoke({"text": "x"})["trail"]
    with metering() as meter:
        pass
    assert (meter.tokens, meter.cost) == (None, None)


def test_unreported_fields_stay_none() -> None:
    with metering() as meter:
        report_usage(cost=0.25)
    assert (meter.tokens, meter.cost) == (None, 0.25)
    with metering() as meter:
        report_usage(input_tokens=4)
    assert (meter.tokens, meter.cost) == (4, None)
    with metering() as meter:
        report_usage(total_tokens=0)
    assert meter.tokens == 0


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": 1.5}, "output_tokens"),
        ({"total_tokens": True}, "total_tokens"),
        ({"cost": float("nan")}, "cost"),
        ({"cost": -0.1}, "cost"),
    ],
)
def test_bad_reports_are_refused_naming_the_argument(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        report_usage(**kwargs)


def _ai(text: str, total: int | None, *, msg_id: str | None = None, **usage: int) -> AIMessage:
    metadata: dict[str, int] = {"input_tokens": 0, "output_tokens": 0, **usage}
    metadata["total_tokens"] = total if total is not None else sum(metadata.values())
    return AIMessage(content=text, id=msg_id, usage_metadata=metadata)


def test_usage_from_state_sums_ai_messages_and_dedupes_by_id() -> None:
    first = _ai("a", None, msg_id="m1", input_tokens=10, output_tokens=5)
    second = _ai("b", 40, msg_id="m2", input_tokens=10, output_tokens=5)
    state = {
        "messages": [HumanMessage(content="q", id="h1"), first, second],
        "last": second,
        "answer": "b",
        "numbers": [1, 2],
    }
    assert usage_from_state(state) == Usage(tokens=55, cost=None)


def test_usage_from_state_reads_messages_a_graph_returned() -> None:
    class Chat(TypedDict):
        messages: Annotated[list[Any], add_messages]

    def model(state: Chat) -> dict[str, Any]:
        return {"messages": [_ai("hi", None, input_tokens=6, output_tokens=4)]}

    g = StateGraph(Chat)
    g.add_node("model", model)
    g.add_edge(START, "model")
    g.add_edge("model", END)
    state = g.compile().invoke({"messages": [HumanMessage(content="hello")]})
    assert usage_from_state(state).tokens == 10


def test_usage_from_state_without_messages_is_unreported() -> None:
    assert usage_from_state({"answer": "x", "items": ["a"]}) == Usage()
    assert usage_from_state(None) == Usage()
    assert usage_from_state({"m": [AIMessage(content="no usage")]}) == Usage()


def test_combine_adds_both_sources_and_keeps_none_when_neither_reported() -> None:
    with metering() as meter:
        pass
    assert combine(meter, Usage()) == (None, None)
    assert combine(meter, Usage(tokens=7)) == (7, None)
    with metering() as meter:
        report_usage(input_tokens=3, cost=0.5)
    assert combine(meter, Usage(tokens=7)) == (10, 0.5)
    assert combine(meter, Usage()) == (3, 0.5)
