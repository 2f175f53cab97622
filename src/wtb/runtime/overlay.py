"""A store that reads through to the user's store and keeps its own writes.

One `OverlayStore` lives for one cell attempt. Reads reach the store the user compiled
into the graph (data seeded there is visible); puts and deletes land in an in-memory
layer of the attempt, and a delete is kept as a tombstone that hides the user's item. So
a cell sees its own writes, never another cell's, and the user's store is never written.

Every operation of a batch that reads is sent to the user's store in one `batch` (or
`abatch`) call first, then the batch is replayed in order against the attempt's layer:
the user's store does not change during the batch (nothing writes to it), so reading it
ahead is the same as reading it in turn. Reads are sent with `refresh_ttl=False`: a
refreshed TTL is a write to the user's store.

What the layer cannot do as the user's store would: items written during the attempt are
listed before the user's items in a search and carry no similarity score (the layer
embeds nothing), and a namespace whose every item the attempt deleted is still listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

_ALL = 2**62
"""A limit that lists everything (the attempt's own layer is small)."""

Address = tuple[tuple[str, ...], str]


class OverlayStore(BaseStore):  # type: ignore[misc]  # LangGraph is untyped to mypy here
    """The user's store for reading, an in-memory layer of one attempt for writing."""

    def __init__(self, base: BaseStore) -> None:
        self._base = base
        self._layer = InMemoryStore()
        self._written: set[Address] = set()
        self._deleted: set[Address] = set()
        # `put(..., ttl=...)` is refused unless the store supports TTLs: as the user's does.
        self.supports_ttl = base.supports_ttl
        self.ttl_config = base.ttl_config

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        return self._replay(ops, self._base.batch(self._base_reads(ops)))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        return self._replay(ops, await self._base.abatch(self._base_reads(ops)))

    def _base_reads(self, ops: Sequence[Op]) -> list[Op]:
        """The reads of `ops` as the user's store is asked them: without TTL refreshes;
        searches and listings from their start (the offset is applied after merging),
        deep enough to fill the page even when items of the user's are hidden by the
        attempt's writes and deletes."""
        hidden = len(self._written) + len(self._deleted)
        hidden += sum(isinstance(op, PutOp) for op in ops)
        reads: list[Op] = []
        for op in ops:
            if isinstance(op, GetOp):
                reads.append(op._replace(refresh_ttl=False))
            elif isinstance(op, SearchOp):
                limit = op.offset + op.limit + hidden
                reads.append(op._replace(refresh_ttl=False, offset=0, limit=limit))
            elif isinstance(op, ListNamespacesOp):
                reads.append(op._replace(offset=0, limit=op.offset + op.limit))
        return reads

    def _replay(self, ops: Sequence[Op], base_results: Sequence[Result]) -> list[Result]:
        reads = iter(base_results)
        results: list[Result] = []
        for op in ops:
            if isinstance(op, PutOp):
                self._put(op)
                results.append(None)
            elif isinstance(op, GetOp):
                results.append(self._get(op, next(reads)))
            elif isinstance(op, SearchOp):
                results.append(self._search(op, next(reads)))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._namespaces(op, next(reads)))
            else:
                raise TypeError(f"unknown store operation {type(op).__name__}")
        return results

    def _put(self, op: PutOp) -> None:
        address = (op.namespace, op.key)
        self._layer.batch([op])
        if op.value is None:
            self._written.discard(address)
            self._deleted.add(address)
        else:
            self._written.add(address)
            self._deleted.discard(address)

    def _get(self, op: GetOp, base: Item | None) -> Item | None:
        address = (op.namespace, op.key)
        if address in self._deleted:
            return None
        if address in self._written:
            return self._layer.get(op.namespace, op.key)
        return base

    def _search(self, op: SearchOp, base: list[SearchItem]) -> list[SearchItem]:
        own = self._layer.batch([op._replace(limit=_ALL, offset=0)])[0]
        shadowed = self._written | self._deleted
        theirs = [item for item in base if (item.namespace, item.key) not in shadowed]
        return [*own, *theirs][op.offset : op.offset + op.limit]

    def _namespaces(self, op: ListNamespacesOp, base: list[tuple[str, ...]]) -> list[Any]:
        own = self._layer.batch([op._replace(limit=_ALL, offset=0)])[0]
        merged = sorted(set(base) | set(own))
        return merged[op.offset : op.offset + op.limit]
