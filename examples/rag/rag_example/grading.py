"""Grade retrieved passages for relevance, and route on the grade.

The grader stands in for an LLM judge: it is billed per token through `wtb.report_usage`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import wtb
from rag_example.corpus import searchable
from rag_example.state import Doc, RagState
from rag_example.text import content_terms, token_count

MAX_REWRITES = 1
# Illustrative prices of a small hosted model, in dollars per token.
INPUT_PRICE = 0.15e-6
OUTPUT_PRICE = 0.60e-6


def terms_needed(question_terms: int) -> int:
    """How many query terms a relevant passage must contain.

    A one-term question needs its term; longer ones need at least two terms and half of
    them, so a passage that merely shares a common word like 'island' is not relevant.
    """
    if question_terms <= 1:
        return question_terms
    return max(2, math.ceil(question_terms / 2))


def is_relevant(doc: Doc, query: str, needed: int) -> bool:
    found = set(content_terms(query)) & set(content_terms(searchable(doc)))
    return needed > 0 and len(found) >= needed


def grade(state: RagState) -> dict[str, Any]:
    query = state.get("query") or state["question"]
    needed = terms_needed(len(set(content_terms(state["question"]))))
    docs = state.get("documents", [])
    relevant = [d for d in docs if is_relevant(d, query, needed)]
    prompt = token_count(query) + sum(token_count(d["text"]) for d in docs)
    verdicts = len(docs)  # one yes/no token per passage
    wtb.report_usage(
        input_tokens=prompt,
        output_tokens=verdicts,
        cost=prompt * INPUT_PRICE + verdicts * OUTPUT_PRICE,
    )
    return {"relevant": relevant, "steps": ["grade"]}


def route_after_grade(state: RagState) -> Literal["generate", "rewrite"]:
    """Rewrite the query (once) when no passage is relevant; otherwise answer."""
    if state.get("relevant") or state.get("rewrites", 0) >= MAX_REWRITES:
        return "generate"
    return "rewrite"
