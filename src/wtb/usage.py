"""Token and cost usage of a cell: what nodes report, and what their messages carry.

Two sources are added up for every cell attempt:

- `report_usage(...)`, called by plain-function nodes (an HTTP call to a model, a tool
  with a price). The executor wraps each attempt in `metering()`; the meter travels in a
  ContextVar, which LangGraph copies into the worker threads that run sync nodes, so a
  report from any node of the graph reaches the attempt's meter.
- LangChain `usage_metadata` on the AI messages found in the final state.

A node should use one source per model call, not both, or the call is counted twice.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and cost from one source; None means that source reported nothing."""

    tokens: int | None = None
    cost: float | None = None


class UsageMeter:
    """Running totals of one cell attempt; safe to report into from several threads."""

    __slots__ = ("_cost", "_lock", "_tokens")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: int | None = None
        self._cost: float | None = None

    def add(self, *, tokens: int | None, cost: float | None) -> None:
        with self._lock:
            if tokens is not None:
                self._tokens = (self._tokens or 0) + tokens
            if cost is not None:
                self._cost = (self._cost or 0.0) + cost

    @property
    def tokens(self) -> int | None:
        """Tokens reported so far; None when no report carried tokens."""
        return self._tokens

    @property
    def cost(self) -> float | None:
        """Cost reported so far; None when no report carried a cost."""
        return self._cost


_meter: ContextVar[UsageMeter | None] = ContextVar("wtb_usage_meter", default=None)


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"report_usage: {name} must be a non-negative int, got {value!r}")


def report_usage(
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    total_tokens: int | None = None,
    cost: float = 0.0,
) -> None:
    """Report tokens and cost spent by the calling node (sync or async).

    `total_tokens`, when given, is taken as the total instead of input + output (some
    providers count reasoning or cached tokens separately). Tokens count as reported when
    `total_tokens` is given or a token count is non-zero; cost when it is non-zero, so a
    free model leaves the cell's cost unreported (None) rather than 0. Several calls add up.

    Outside a WTB run (no meter active) this does nothing, so nodes work unchanged when
    the graph runs on its own.
    """
    _check_count("input_tokens", input_tokens)
    _check_count("output_tokens", output_tokens)
    if total_tokens is not None:
        _check_count("total_tokens", total_tokens)
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        raise ValueError(f"report_usage: cost must be a number, got {cost!r}")
    if not math.isfinite(cost) or cost < 0:
        raise ValueError(f"report_usage: cost must be finite and non-negative, got {cost!r}")
    meter = _meter.get()
    if meter is None:
        return
    if total_tokens is not None:
        tokens: int | None = total_tokens
    else:
        tokens = input_tokens + output_tokens if input_tokens or output_tokens else None
    meter.add(tokens=tokens, cost=float(cost) if cost else None)


@contextmanager
def metering() -> Iterator[UsageMeter]:
    """Collect the reports made inside the block (and in contexts copied from it)."""
    meter = UsageMeter()
    token = _meter.set(meter)
    try:
        yield meter
    finally:
        _meter.reset(token)


def _message_tokens(message: Any) -> int | None:
    metadata = getattr(message, "usage_metadata", None)
    if not isinstance(metadata, Mapping):
        return None
    total = metadata.get("total_tokens")
    if isinstance(total, int):
        return total
    inputs, outputs = metadata.get("input_tokens"), metadata.get("output_tokens")
    if isinstance(inputs, int) or isinstance(outputs, int):
        return (inputs if isinstance(inputs, int) else 0) + (
            outputs if isinstance(outputs, int) else 0
        )
    return None


def usage_from_state(state: Mapping[str, Any] | None) -> Usage:
    """Sum the `usage_metadata` of the AI messages in a final state.

    Looks at every value of the state that is a message or a list of messages (duck-typed
    on `usage_metadata`, so langchain_core is not imported). A message seen twice (same
    id, e.g. in `messages` and in `last_message`) counts once. LangChain messages carry no
    cost, so `cost` is always None here.
    """
    if not isinstance(state, Mapping):
        return Usage()
    seen: set[object] = set()
    total: int | None = None
    for value in state.values():
        for message in value if isinstance(value, list | tuple) else (value,):
            tokens = _message_tokens(message)
            if tokens is None:
                continue
            key = getattr(message, "id", None) or id(message)
            if key in seen:
                continue
            seen.add(key)
            total = (total or 0) + tokens
    return Usage(tokens=total)


def combine(meter: UsageMeter, state_usage: Usage) -> tuple[int | None, float | None]:
    """A cell's (tokens, cost): both sources added; None where neither reported."""
    tokens = None
    if meter.tokens is not None or state_usage.tokens is not None:
        tokens = (meter.tokens or 0) + (state_usage.tokens or 0)
    cost = None
    if meter.cost is not None or state_usage.cost is not None:
        cost = (meter.cost or 0.0) + (state_usage.cost or 0.0)
    return tokens, cost
