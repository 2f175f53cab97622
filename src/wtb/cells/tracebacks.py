"""A failed attempt's traceback as the result store keeps it: the user's frames, bounded.

An error raised in a node reaches the executor through LangGraph's runner, LangChain's
runnables, asyncio or a thread pool, and WTB's own attempt drivers: dozens of frames that
say nothing about the user's code. Each run of consecutive frames in those packages is
folded into one line (`[14 frames in langgraph, langchain_core]`); the user's frames, the
exception chain and the error itself are kept as Python prints them. The text is then
bounded to its last `MAX_TRACEBACK` characters (the end is nearest the error) and cleaned
like every other text the store keeps (`wtb._jsonable.clean_text`).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Iterator
from typing import Final

from wtb._jsonable import clean_text

MAX_TRACEBACK: Final = 8000
"""Characters of a traceback kept: its end."""

_FOLDED: Final = (
    "langgraph",
    "langchain_core",
    "langsmith",
    "wtb",
    "asyncio",
    "concurrent",
    "threading",
    "contextlib",
    "pydantic",
)
"""Packages (and stdlib modules) whose frames are folded, when loaded."""
_FILE = re.compile(r'  File "(?P<path>[^"]+)", line')


def _folded_roots() -> dict[str, str]:
    """Directory (or file) prefix -> package name, for the folded packages loaded now
    (namespace packages such as langgraph have a path but no file)."""
    roots: dict[str, str] = {}
    for name in _FOLDED:
        module = sys.modules.get(name)
        if module is None:
            continue
        for directory in getattr(module, "__path__", None) or ():
            roots[os.path.join(directory, "")] = name
        where = getattr(module, "__file__", None)
        if where and not hasattr(module, "__path__"):
            roots[where] = name
    return roots


def _package(chunk: str, roots: dict[str, str]) -> str | None:
    """The folded package a formatted frame is in, None for the user's frames."""
    found = _FILE.match(chunk)
    if found is None:
        return None
    path = found["path"]
    for root, name in roots.items():
        if path.startswith(root):
            return name
    return None


def _lines(exc: BaseException) -> Iterator[str]:
    roots = _folded_roots()
    folded: list[str] = []

    def fold() -> Iterator[str]:
        if folded:
            names = ", ".join(dict.fromkeys(folded))
            count = len(folded)
            yield f"  [{count} frame{'s' if count != 1 else ''} in {names}]\n"
            folded.clear()

    for chunk in traceback.TracebackException.from_exception(exc).format():
        package = _package(chunk, roots)
        if package is not None:
            folded.append(package)
            continue
        if folded and not chunk.startswith("  [Previous line repeated"):
            yield from fold()
        yield chunk
    yield from fold()


def format_traceback(exc: BaseException, limit: int = MAX_TRACEBACK) -> str:
    """`exc`'s traceback with library frames folded, its last `limit` characters kept."""
    text = "".join(_lines(exc))
    if len(text) > limit:
        cut = text[len(text) - limit :]
        newline = cut.find("\n")
        cut = cut[newline + 1 :] if 0 <= newline < limit // 2 else cut
        text = "...(earlier frames cut)\n" + cut
    return clean_text(text.rstrip("\n"))
