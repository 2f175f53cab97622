"""Okapi BM25 over stemmed content terms: rare terms weigh more, long passages less."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from rag_example.corpus import searchable
from rag_example.state import Doc
from rag_example.text import content_terms


class Bm25Index:
    def __init__(self, docs: Sequence[Doc], *, k1: float = 1.2, b: float = 0.75) -> None:
        if not docs:
            raise ValueError("a BM25 index needs at least one passage")
        self._docs = tuple(docs)
        self._k1 = k1
        self._b = b
        self._tf = [Counter(content_terms(searchable(d))) for d in self._docs]
        self._len = [sum(tf.values()) for tf in self._tf]
        self._avg_len = sum(self._len) / len(self._len)
        df: Counter[str] = Counter()
        for tf in self._tf:
            df.update(tf.keys())
        n = len(self._docs)
        # The "+1" inside the log keeps the weight positive for terms in most passages.
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def score(self, query: str) -> list[float]:
        terms = set(content_terms(query))
        scores = []
        for tf, length in zip(self._tf, self._len, strict=True):
            norm = self._k1 * (1 - self._b + self._b * length / self._avg_len)
            scores.append(
                sum(
                    self._idf[t] * tf[t] * (self._k1 + 1) / (tf[t] + norm) for t in terms if t in tf
                )
            )
        return scores

    def top(self, query: str, k: int) -> list[Doc]:
        """The k best passages, best first; ties keep corpus order."""
        scores = self.score(query)
        order = sorted(range(len(self._docs)), key=lambda i: -scores[i])
        return [self._docs[i] for i in order[:k]]
