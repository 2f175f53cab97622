"""Tokenizing, stop words, a light suffix stemmer and sentence splitting."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")

# Function words, plus a few question words ("called", "many") that say nothing about topic.
_STOPWORD_TEXT = """
a about above after all also an and any are as at be been before between both but by can
could did do does for from had has have he her hers him his how i in into is it its most of
on or our out she so some than that the their them then there these they this those through
to until up was we were what when where which while who whom whose why will with would you
your make made called many much
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

# Longest first: the first suffix that fits is stripped.
_SUFFIXES = (
    ("ations", "ate"),
    ("ation", "ate"),
    ("ings", ""),
    ("ing", ""),
    ("ies", "y"),
    ("ied", "y"),
    ("ers", ""),
    ("er", ""),
    ("ed", ""),
    ("s", ""),
)
_KEEP_FINAL_S = ("ss", "us", "is")
_MIN_STEM = 3


def words(text: str) -> list[str]:
    """Lower-case alphanumeric tokens, stop words included."""
    return _WORD.findall(text.lower())


def stem(word: str) -> str:
    """Strip one common English suffix, a doubled final consonant and a final 'e'.

    Crude next to a full Porter stemmer, but it maps 'founded'/'founding'/'founder' and
    'mines'/'mined'/'mine' onto one form each, which is what retrieval needs here.
    """
    for suffix, replacement in _SUFFIXES:
        if suffix == "s" and word.endswith(_KEEP_FINAL_S):
            continue
        if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM:
            word = word[: len(word) - len(suffix)] + replacement
            break
    if len(word) > _MIN_STEM and word[-1] == word[-2] and word[-1] not in "lsz0123456789":
        word = word[:-1]
    if len(word) > _MIN_STEM and word.endswith("e"):
        word = word[:-1]
    return word


def content_terms(text: str) -> list[str]:
    """Stems of the words that carry meaning (stop words dropped), in order, repeats kept."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def token_count(text: str) -> int:
    """A stand-in for a model tokenizer: one token per word or punctuation mark."""
    return len(re.findall(r"\w+|[^\w\s]", text))
