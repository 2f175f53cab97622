"""Turn a final graph state into JSON the result store can keep."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

_PRIMITIVES = (str, int, bool, type(None))


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: pydantic models (LangChain messages too) and dataclasses as dicts,
    sets and tuples as lists, non-finite floats and unknown objects as strings."""
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return jsonable(dump(mode="json"))
        except Exception:  # a model that cannot dump itself is still recorded, as text
            return repr(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    return repr(value)
