"""Per-node wall time and tokens of one attempt, from LangGraph's own callbacks.

A `NodeTimer` goes into the attempt's invocation config as a LangChain callback handler.
LangGraph runs every node as a child run named after the node, with metadata
`langgraph_node` (the node's name) and a tag `graph:step:<n>`; runs inside the node inherit
the metadata but not the name and tag, so a node's own run is recognised without walking
the run tree. Its key is the node's path, taken from `langgraph_checkpoint_ns`
("parent:<task>|child:<task>" -> "parent/child"), so a subgraph's nodes are told apart
from the parent's: a subgraph node's time includes its children's.

Tokens come from `usage_metadata` of the messages a chat model (or LLM) returns, in
`on_llm_end`; they are attributed to the innermost node the model ran in (its run's
metadata says which). Callbacks that only record a clock reading and a dict entry cost a
few microseconds per node run (bench/harness_overhead.py measures it, docs/statistics.md).

It also tells where an attempt failed (`wtb.cells.attempts.NodeWatch`). An error raised in a
node ends the node's run first, then every run around it (the subgraph node it is in, the
graph), each with `on_chain_error` and the same exception: the first node run it ends is
the innermost, the node it was raised in. A timed-out attempt hung in the innermost node
still open (or, on an event loop, the innermost one its cancellation ended).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any, Final
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from wtb.domain import MAX_NODES, NodeFigures

_STEP_TAG: Final = "graph:step:"
_MAX_ERRORS: Final = 64
"""Errors remembered per attempt (their first node each): bounded for looping graphs."""


def node_key(metadata: Mapping[str, Any]) -> str | None:
    """The node path a run belongs to, from the metadata LangGraph gives its runs."""
    namespace = metadata.get("langgraph_checkpoint_ns")
    if isinstance(namespace, str) and namespace:
        return "/".join(part.split(":", 1)[0] for part in namespace.split("|"))
    node = metadata.get("langgraph_node")
    return node if isinstance(node, str) else None


def _tokens(response: Any) -> int | None:
    """Total tokens of an LLMResult: its messages' usage_metadata."""
    total: int | None = None
    for generations in getattr(response, "generations", None) or ():
        for generation in generations:
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if not isinstance(usage, Mapping):
                continue
            count = usage.get("total_tokens")
            if not isinstance(count, int):
                count = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
            total = (total or 0) + count
    return total


class NodeTimer(BaseCallbackHandler):  # type: ignore[misc]  # untyped to mypy here
    """Collects the figures of one attempt's nodes; safe across the graph's threads."""

    run_inline = True
    """Called in the node's own thread or task, never hopped to an executor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[UUID, tuple[str, float]] = {}
        self._models: dict[UUID, str] = {}
        self._figures: dict[str, NodeFigures] = {}
        self._errors: list[tuple[BaseException, str]] = []
        """Each error that ended a node run, with the first (innermost) node it ended."""

    def _entry(self, key: str) -> NodeFigures:
        found = self._figures.get(key)
        if found is None:
            found = self._figures[key] = NodeFigures(ms=0.0, calls=0, tokens=None)
        return found

    # -- node runs ------------------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not metadata or not tags:
            return
        node = metadata.get("langgraph_node")
        if node is None or kwargs.get("name") != node:
            return
        if not any(tag.startswith(_STEP_TAG) for tag in tags):
            return
        key = node_key(metadata)
        if key is not None:
            self._open[run_id] = (key, time.perf_counter())

    def _close(self, run_id: UUID, error: BaseException | None = None) -> None:
        opened = self._open.pop(run_id, None)
        if opened is None:
            return
        key, t0 = opened
        ms = (time.perf_counter() - t0) * 1000
        with self._lock:
            entry = self._entry(key)
            entry["ms"] += ms
            entry["calls"] += 1
            if (
                error is not None
                and len(self._errors) < _MAX_ERRORS
                and not any(seen is error for seen, _ in self._errors)
            ):
                self._errors.append((error, key))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._close(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._close(run_id, error)

    # -- model runs -----------------------------------------------------------------------

    def _model_starts(self, run_id: UUID, metadata: Mapping[str, Any] | None) -> None:
        key = node_key(metadata) if metadata else None
        if key is not None:
            self._models[run_id] = key

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_starts(run_id, metadata)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_starts(run_id, metadata)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        key = self._models.pop(run_id, None)
        if key is None:
            return
        tokens = _tokens(response)
        if tokens is None:
            return
        with self._lock:
            entry = self._entry(key)
            entry["tokens"] = (entry["tokens"] or 0) + tokens

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._models.pop(run_id, None)

    # -- where it failed -------------------------------------------------------------------

    def failed_node(self, exc: BaseException) -> str | None:
        """The node `exc` was raised in (or an exception it was raised from or during); None
        when it was raised outside every node (bad input, the recursion limit)."""
        with self._lock:
            errors = list(self._errors)
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            for error, key in errors:
                if error is current:
                    return key
            current = current.__cause__ or current.__context__
        return None

    def hung_node(self) -> str | None:
        """The node a timed-out attempt hung in: the innermost node still running (the
        longest running of them when parallel branches hung), or the innermost one whose
        run the timeout cancelled; None when no node had started."""
        opened = sorted(self._open.copy().values(), key=lambda entry: entry[1])
        keys = [key for key, _ in opened]
        leaves = [key for key in keys if not any(o.startswith(key + "/") for o in keys)]
        if leaves:
            return leaves[0]
        with self._lock:
            cancelled = [key for e, key in self._errors if isinstance(e, asyncio.CancelledError)]
        if not cancelled:
            return None
        return max(cancelled, key=lambda key: key.count("/"))

    # -- the figures ----------------------------------------------------------------------

    def figures(self) -> dict[str, NodeFigures] | None:
        """Per node, the figures so far (the slowest MAX_NODES); None when no node ran.

        Nodes still running (the attempt timed out in them) count with their time so far:
        a timed-out cell shows where it hung.
        """
        now = time.perf_counter()
        with self._lock:
            figures = {key: NodeFigures(**entry) for key, entry in self._figures.items()}
            for key, t0 in self._open.copy().values():  # copy(): atomic, unlike iterating
                entry = figures.setdefault(key, NodeFigures(ms=0.0, calls=0, tokens=None))
                entry["ms"] += (now - t0) * 1000
                entry["calls"] += 1
        if not figures:
            return None
        kept = sorted(figures.items(), key=lambda item: -item[1]["ms"])[:MAX_NODES]
        return {
            key: NodeFigures(ms=round(f["ms"], 3), calls=f["calls"], tokens=f["tokens"])
            for key, f in sorted(kept)
        }
