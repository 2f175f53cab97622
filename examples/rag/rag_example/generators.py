"""Generate nodes: answer with a sentence taken from the passages.

Each generator stands in for an LLM call and reports its usage the LangChain way: an
AIMessage with `usage_metadata`, appended to the `messages` state key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage

from rag_example.state import Doc, RagState
from rag_example.text import content_terms, sentences, token_count, words

_NUMBER = re.compile(r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve)\b", re.I)
_TIME = re.compile(
    r"\b\d{4}\b|\bcentury\b|\b(?:january|february|march|april|may|june|july|august|"
    r"september|october|november|december|monday|tuesday|wednesday|thursday|friday|"
    r"saturday|sunday)\b",
    re.I,
)


@dataclass(frozen=True)
class Evidence:
    """The sentence chosen to answer, where it came from, and what was read to choose it."""

    sentence: str
    source: str
    prompt_tokens: int


def _answer_pattern(question: str) -> re.Pattern[str] | None:
    """What an answer looks like, judged from the question's opening words."""
    opening = words(question)[:3]
    if "when" in opening or "year" in opening:
        return _TIME
    if opening[:1] == ["how"] and opening[1:2] != ["do"]:
        return _NUMBER
    return None


def match_score(text: str, query: str, pattern: re.Pattern[str] | None, context: str = "") -> int:
    """Query terms found in the text or its context, plus one when the text looks like the
    kind of answer asked for."""
    overlap = len(set(content_terms(query)) & set(content_terms(f"{context} {text}")))
    return overlap + int(pattern is not None and pattern.search(text) is not None)


def find_evidence(state: RagState, *, prefer_short: bool = False) -> Evidence | None:
    """The best-matching sentence among the relevant passages (all retrieved, if none is).

    Among equally good sentences the first in reading order wins (passages in retrieval
    rank), or with `prefer_short` the shortest.
    """
    question = state["question"]
    query = state.get("query") or question
    docs: list[Doc] = state.get("relevant") or state.get("documents", [])
    pattern = _answer_pattern(question)
    candidates = [
        # The title stands in for what "it" and "the town" refer to in the sentence.
        (match_score(sentence, query, pattern, context=doc["title"]), sentence, doc["id"])
        for doc in docs
        for sentence in sentences(doc["text"])
    ]
    if not candidates:
        return None
    top = max(score for score, _, _ in candidates)
    tied = [(sentence, source) for score, sentence, source in candidates if score == top]
    sentence, source = min(tied, key=lambda c: token_count(c[0])) if prefer_short else tied[0]
    prompt = token_count(query) + sum(token_count(d["text"]) for d in docs)
    return Evidence(sentence=sentence, source=source, prompt_tokens=prompt)


def _answered(answer: str, sources: list[str], prompt_tokens: int) -> dict[str, Any]:
    completion = token_count(answer)
    message = AIMessage(
        content=answer,
        usage_metadata={
            "input_tokens": prompt_tokens,
            "output_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        },
    )
    return {"answer": answer, "sources": sources, "messages": [message], "steps": ["generate"]}


def _answer_with_evidence(state: RagState, *, prefer_short: bool) -> dict[str, Any]:
    evidence = find_evidence(state, prefer_short=prefer_short)
    if evidence is None:
        return _answered("I don't know.", [], token_count(state["question"]))
    return _answered(evidence.sentence, [evidence.source], evidence.prompt_tokens)


def generate(state: RagState) -> dict[str, Any]:
    """Answer with the best-matching sentence of the relevant passages."""
    return _answer_with_evidence(state, prefer_short=False)


def brief(state: RagState) -> dict[str, Any]:
    """Like `generate`, but breaks ties between equally good sentences by brevity.

    Ties are uncommon, so this saves a few output tokens and changes few answers: too few
    to tell apart from the original over this data set.
    """
    return _answer_with_evidence(state, prefer_short=True)


def lead(state: RagState) -> dict[str, Any]:
    """Answer with the opening sentence of the top-ranked passage, ignoring the grades.

    The 'lead' heuristic of summarization: cheap, and right only when the retriever's
    first passage opens with the answer.
    """
    docs = state.get("documents", [])
    if not docs:
        return _answered("I don't know.", [], token_count(state["question"]))
    first = docs[0]
    return _answered(sentences(first["text"])[0], [first["id"]], token_count(first["text"]))
