"""One invocation of a cell's graph, as production would run it, and what it leaves.

A graph compiled with an output schema returns only that schema's keys; evaluators and
token counting need the whole final state. LangGraph's `invoke` takes `output_keys`: asked
for every state channel (`stream_channels_asis`) it returns the full state, and the output
the graph would have returned is then those keys of the output schema, the same values.

A graph that calls `interrupt()` returns with `__interrupt__` instead of finishing (with or
without a checkpointer in LangGraph 1.x). A graph compiled with static interrupts
(`interrupt_before` / `interrupt_after`) returns its state so far with no mark at all:
only its checkpointer thread tells that nodes are still to run (`get_state(...).next`),
so WTB asks it whenever the graph has one. A case's scripted answers (`resume`) are sent one
by one with `Command(resume=value)` on the same checkpointer thread; what is still pending
afterwards makes the cell `interrupted`, and answers the graph never asked for are a
mistake in the data set, which fails the cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wtb.cells.invocation import Invocation

INTERRUPT_KEY = "__interrupt__"


class UnusedResumeError(Exception):
    """The graph finished before every scripted `resume` value was used."""


@dataclass(frozen=True, slots=True)
class GraphOutcome:
    """What an invocation left: the full state, the graph's own output, and the values of
    the interrupts it stopped at (empty when it finished)."""

    state: Any
    output: Any
    interrupts: tuple[Any, ...] = ()


def _full_keys(graph: Any) -> Any:
    return graph.stream_channels_asis


def _pending(result: Any) -> tuple[Any, ...]:
    if isinstance(result, Mapping):
        found = result.get(INTERRUPT_KEY)
        if found:
            return tuple(getattr(i, "value", i) for i in found)
    return ()


def _static_stop(snapshot: Any) -> tuple[Any, ...]:
    """The stop of a static interrupt, from the thread's state: nodes still to run."""
    if snapshot is None or not snapshot.next:
        return ()
    return (f"stopped before {', '.join(snapshot.next)} (a static interrupt)",)


def _thread(graph: Any, invocation: Invocation) -> bool:
    """Whether the invocation runs on a checkpointer thread whose state can be read."""
    configurable = invocation.config.get("configurable") or {}
    return graph.checkpointer is not None and "thread_id" in configurable


def _pending_sync(graph: Any, result: Any, invocation: Invocation) -> tuple[Any, ...]:
    found = _pending(result)
    if found or not _thread(graph, invocation):
        return found
    return _static_stop(graph.get_state(invocation.config))


async def _pending_async(graph: Any, result: Any, invocation: Invocation) -> tuple[Any, ...]:
    found = _pending(result)
    if found or not _thread(graph, invocation):
        return found
    return _static_stop(await graph.aget_state(invocation.config))


def _outcome(graph: Any, result: Any, interrupts: tuple[Any, ...]) -> GraphOutcome:
    if isinstance(result, Mapping) and INTERRUPT_KEY in result:
        result = {k: v for k, v in result.items() if k != INTERRUPT_KEY}
    wanted = graph.output_channels
    full = _full_keys(graph)
    if wanted == full or not isinstance(result, Mapping):
        output = result
    elif isinstance(wanted, str):
        output = result.get(wanted)
    else:
        output = {k: result[k] for k in wanted if k in result}
    return GraphOutcome(state=result, output=output, interrupts=interrupts)


def _unused(resume: Sequence[Any], used: int) -> UnusedResumeError:
    left = len(resume) - used
    return UnusedResumeError(
        f"the graph finished after {used} of the case's {len(resume)} `resume` values; "
        f"{left} never reached an interrupt()"
    )


def invoke_sync(
    graph: Any, inputs: dict[str, Any], resume: Sequence[Any] | None, invocation: Invocation
) -> GraphOutcome:
    from langgraph.types import Command

    keys = _full_keys(graph)
    context = invocation.context_for(graph)
    result = graph.invoke(inputs, invocation.config, context=context, output_keys=keys)
    pending = _pending_sync(graph, result, invocation)
    for used, value in enumerate(resume or ()):
        if not pending:
            raise _unused(resume or (), used)
        result = graph.invoke(
            Command(resume=value), invocation.config, context=context, output_keys=keys
        )
        pending = _pending_sync(graph, result, invocation)
    return _outcome(graph, result, pending)


async def invoke_async(
    graph: Any, inputs: dict[str, Any], resume: Sequence[Any] | None, invocation: Invocation
) -> GraphOutcome:
    from langgraph.types import Command

    keys = _full_keys(graph)
    context = invocation.context_for(graph)
    result = await graph.ainvoke(inputs, invocation.config, context=context, output_keys=keys)
    pending = await _pending_async(graph, result, invocation)
    for used, value in enumerate(resume or ()):
        if not pending:
            raise _unused(resume or (), used)
        result = await graph.ainvoke(
            Command(resume=value), invocation.config, context=context, output_keys=keys
        )
        pending = await _pending_async(graph, result, invocation)
    return _outcome(graph, result, pending)
