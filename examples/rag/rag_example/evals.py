"""A user evaluator: is the answer supported by the passages the grader found relevant?"""

from __future__ import annotations

from typing import Any

from rag_example.corpus import searchable
from rag_example.text import content_terms


def grounded(ctx: Any) -> float | None:
    """Share of the answer's content terms that occur in the relevant passages.

    `ctx` is WTB's evaluator context; only `ctx.output`, the final state, is read.
    None (no score) when the run produced no answer.
    """
    output = ctx.output or {}
    answer_terms = set(content_terms(output.get("answer") or ""))
    if not answer_terms:
        return None
    support: set[str] = set()
    for doc in output.get("relevant") or []:
        support.update(content_terms(searchable(doc)))
    return len(answer_terms & support) / len(answer_terms)
