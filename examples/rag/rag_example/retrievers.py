"""Retrieve nodes: the graph's own keyword-overlap retriever and a BM25 variant.

Both are async and wait a millisecond, as a call to a search service would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

from rag_example.bm25 import Bm25Index
from rag_example.corpus import passages, searchable
from rag_example.state import Doc, RagState
from rag_example.text import words

IO_DELAY_SECONDS = 0.001
DEFAULT_K = 3

RetrieveNode = Callable[[RagState], Awaitable[dict[str, Any]]]


def _query(state: RagState) -> str:
    return state.get("query") or state["question"]


@cache
def _word_sets() -> tuple[frozenset[str], ...]:
    return tuple(frozenset(words(searchable(d))) for d in passages())


def _result(docs: list[Doc]) -> dict[str, Any]:
    return {"documents": docs, "steps": ["retrieve"]}


async def keyword_overlap(state: RagState) -> dict[str, Any]:
    """Rank passages by how many distinct raw words they share with the query.

    No stemming, no stop-word removal, no weighting: 'the' counts as much as 'lighthouse',
    and 'founded' does not match 'founding'. A common first attempt, kept as the baseline.
    """
    await asyncio.sleep(IO_DELAY_SECONDS)
    query = set(words(_query(state)))
    docs = passages()
    overlap = [len(query & doc_words) for doc_words in _word_sets()]
    order = sorted(range(len(docs)), key=lambda i: -overlap[i])
    return _result([docs[i] for i in order[:DEFAULT_K]])


def make_bm25(k: int = DEFAULT_K, k1: float = 1.2, b: float = 0.75) -> RetrieveNode:
    """A retrieve node returning the top `k` passages by BM25 over stemmed content terms."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    index = Bm25Index(passages(), k1=k1, b=b)

    async def retrieve_bm25(state: RagState) -> dict[str, Any]:
        await asyncio.sleep(IO_DELAY_SECONDS)
        return _result(index.top(_query(state), k))

    return retrieve_bm25
