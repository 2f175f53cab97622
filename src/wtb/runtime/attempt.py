"""What one cell attempt sees of the graph's store, cache and checkpointer.

A combination's graph is compiled once per process, but a store, a cache and a
checkpointer thread must belong to one cell attempt, or cells would see each other's
writes. LangGraph takes the store and the cache at compile time only (its per-call
override is a private config key), so WTB compiles the graph with stand-ins,
`AttemptStore` and `AttemptCache`, that hand every operation to the resources of the
attempt in progress. `GraphRuntime.attempt` sets those in a ContextVar around the
invocation; LangGraph runs nodes in tasks and worker threads that copy the caller's
context, so a node reaches the attempt's resources wherever it runs (the same way the
usage meter of `wtb.usage` travels).

- Store: an `OverlayStore` over the user's store per attempt (reads reach the user's
  data, writes stay with the attempt).
- Cache: a fresh `InMemoryCache` per attempt, so a node's cached result is reused within
  the invocation, as in production, but never served to another cell, and nothing is
  written to the user's cache.
- Checkpointer: one `InMemorySaver` of WTB's per compiled graph, never the user's; each
  attempt runs on a thread of its own (`thread_id` unique per cell and attempt), deleted
  when the attempt is over, so the saver holds the threads of the attempts in flight only.
  A thread is what LangGraph keys checkpoints by, so the saver needs no stand-in. (A sync
  graph still running in a thread written off at its timeout may write to its thread
  after it was deleted; such threads are few and end with the process.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from langgraph.cache.base import BaseCache, FullKey, Namespace
from langgraph.cache.memory import InMemoryCache
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.base import BaseStore, Op, Result

from wtb.runtime.overlay import OverlayStore


@dataclass(frozen=True, slots=True)
class _AttemptResources:
    store: OverlayStore | None
    cache: InMemoryCache[Any] | None


_CURRENT: ContextVar[_AttemptResources | None] = ContextVar("wtb_attempt_resources", default=None)


def _current() -> _AttemptResources:
    resources = _CURRENT.get()
    if resources is None:
        raise RuntimeError(
            "this graph was compiled by WTB with a per-attempt store or cache: invoke it "
            "inside GraphRuntime.attempt()"
        )
    return resources


class AttemptStore(BaseStore):  # type: ignore[misc]  # LangGraph is untyped to mypy here
    """The store compiled into WTB's graphs: the overlay of the attempt in progress."""

    def __init__(self, user: BaseStore) -> None:
        # As the user's store: `put(..., ttl=...)` is refused unless it supports TTLs.
        self.supports_ttl = user.supports_ttl
        self.ttl_config = user.ttl_config

    @staticmethod
    def _overlay() -> OverlayStore:
        store = _current().store
        if store is None:  # the runtime compiled no store in; only a bug gets here
            raise RuntimeError("the graph's runtime has no store")
        return store

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self._overlay().batch(ops)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await self._overlay().abatch(ops)


class AttemptCache(BaseCache[Any]):  # type: ignore[misc]
    """The cache compiled into WTB's graphs: the cache of the attempt in progress."""

    @staticmethod
    def _cache() -> InMemoryCache[Any]:
        cache = _current().cache
        if cache is None:  # the runtime compiled no cache in; only a bug gets here
            raise RuntimeError("the graph's runtime has no cache")
        return cache

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        found: dict[FullKey, Any] = self._cache().get(keys)
        return found

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        found: dict[FullKey, Any] = await self._cache().aget(keys)
        return found

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        self._cache().set(pairs)

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        await self._cache().aset(pairs)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self._cache().clear(namespaces)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        await self._cache().aclear(namespaces)


@dataclass(frozen=True)
class GraphRuntime:
    """The resources one compiled graph gives its attempts."""

    user_store: BaseStore | None = None
    """The store the user compiled in: what every attempt's overlay reads through to."""
    cache: bool = False
    """Whether the user compiled a cache in (each attempt then gets its own)."""
    saver: InMemorySaver | None = None
    """WTB's checkpointer, when the graph needs one (the user compiled one in, or
    interrupts): then every invocation needs a thread of its own."""

    @property
    def needs_thread(self) -> bool:
        return self.saver is not None

    def compile_kwargs(self) -> dict[str, Any]:
        """What `StateGraph.compile` gets for the store, the cache and the checkpointer."""
        return {
            "store": None if self.user_store is None else AttemptStore(self.user_store),
            "cache": AttemptCache() if self.cache else None,
            "checkpointer": self.saver,
        }

    @contextmanager
    def attempt(self, config: Mapping[str, Any]) -> Iterator[None]:
        """The scope of one invocation with `config`: its store overlay and cache, and
        afterwards its checkpointer thread (`configurable.thread_id`) deleted. Enter it in
        the context the graph is invoked from."""
        if self.user_store is None and not self.cache and self.saver is None:
            yield  # a graph with none of these (most): nothing to set up per attempt
            return
        thread_id = config.get("configurable", {}).get("thread_id")
        resources = _AttemptResources(
            store=None if self.user_store is None else OverlayStore(self.user_store),
            cache=InMemoryCache() if self.cache else None,
        )
        token = _CURRENT.set(resources)
        try:
            yield
        finally:
            _CURRENT.reset(token)
            if self.saver is not None and thread_id is not None:
                self.saver.delete_thread(thread_id)
