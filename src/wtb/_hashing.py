"""Canonical JSON and content hashes: the same content gives the same text everywhere.

Cell keys, case ids and run keys are content hashes, so they are stable across processes,
restarts and machines. NaN and infinities are refused: JSON has no such values.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 text; raises ValueError for NaN or infinity."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def content_hash(value: Any, size: int = 64) -> str:
    """The first `size` hex digits of sha256 over the canonical JSON of `value`."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:size]
