"""The shipped corpus: short passages about the fictional Orrin Archipelago."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from rag_example.state import Doc

_CORPUS_FILE = Path(__file__).with_name("corpus.jsonl")


@cache
def passages() -> tuple[Doc, ...]:
    """All passages, in file order (the order breaks retrieval ties)."""
    with _CORPUS_FILE.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return tuple(Doc(id=r["id"], title=r["title"], text=r["text"]) for r in rows)


def searchable(doc: Doc) -> str:
    """The text a retriever indexes: title and body."""
    return f"{doc['title']}. {doc['text']}"
