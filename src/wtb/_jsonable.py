"""Turn a final graph state into JSON the result store can keep."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

_PRIMITIVES = (int, bool, type(None))


def clean_text(text: str) -> str:
    """Text every database accepts: NUL characters and lone surrogates replaced.

    PostgreSQL refuses both in text and JSON; without this, one odd output would make a
    batch of results impossible to write, on every retry.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: pydantic models (LangChain messages too) and dataclasses as dicts,
    sets and tuples as lists, non-finite floats and unknown objects as strings, text cleaned
    with `clean_text`."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {clean_text(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return jsonable(dump(mode="json"))
        except Exception:  # a model that cannot dump itself is still recorded, as text
            return clean_text(repr(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    return clean_text(repr(value))
