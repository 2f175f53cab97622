"""Dotted paths into a final state: `answer`, `messages.-1.content`, `result.items.0.id`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class PathNotFoundError(KeyError):
    """A dotted path does not lead to a value; the message names the path and what exists."""

    def __str__(self) -> str:
        # KeyError would print the repr of its argument (quotes, escaped newlines).
        return str(self.args[0])


def _available(obj: Any) -> str:
    if isinstance(obj, Mapping):
        names = [str(k) for k in obj]
        return f"available keys: {', '.join(names)}" if names else "the mapping is empty"
    fields = getattr(type(obj), "model_fields", None)
    if isinstance(fields, Mapping):
        return f"available fields: {', '.join(fields)}"
    names = [n for n in dir(obj) if not n.startswith("_")]
    return f"available attributes: {', '.join(names)}" if names else "it has no attributes"


def _step(obj: Any, part: str, prefix: str, dotted: str) -> Any:
    here = f"{prefix}.{part}" if prefix else part
    if isinstance(obj, Mapping):
        if part in obj:
            return obj[part]
        raise PathNotFoundError(f"{dotted!r}: no key {part!r} at {here!r}; {_available(obj)}")
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        try:
            index = int(part)
        except ValueError:
            raise PathNotFoundError(
                f"{dotted!r}: {prefix or 'the value'!r} is a list; {part!r} is not an index"
            ) from None
        if -len(obj) <= index < len(obj):
            return obj[index]
        raise PathNotFoundError(
            f"{dotted!r}: index {index} out of range at {here!r}; the list has {len(obj)} items"
        )
    if obj is None or isinstance(obj, str | bytes | int | float):
        raise PathNotFoundError(
            f"{dotted!r}: {prefix or 'the value'!r} is {type(obj).__name__}, it has no {part!r}"
        )
    if not part.startswith("_") and hasattr(obj, part):
        return getattr(obj, part)
    raise PathNotFoundError(
        f"{dotted!r}: {type(obj).__name__} at {prefix or 'the root'!r} has no {part!r}; "
        f"{_available(obj)}"
    )


def resolve_path(obj: Any, dotted: str) -> Any:
    """The value at a dotted path: dict keys, list indexes (negative too), attributes.

    Raises PathNotFoundError (a KeyError) naming the path and the keys that do exist.
    """
    prefix = ""
    for part in dotted.split("."):
        obj = _step(obj, part, prefix, dotted)
        prefix = f"{prefix}.{part}" if prefix else part
    return obj
