"""Resolve 'package.module:attribute' import paths, with errors a user can act on."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from typing import Any

from wtb.errors import ManifestError


def extend_sys_path(entries: Iterable[str]) -> None:
    """Put directories first on sys.path (once each), so user code imports from them."""
    for entry in reversed(list(entries)):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def import_object(path: str, *, where: str = "") -> Any:
    """Import the object an import path names.

    Raises ManifestError naming `where` (the manifest field) when the module cannot be
    imported or has no such attribute; the message says which part failed.
    """
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ManifestError(
            f"{path!r} is not an import path",
            where=where,
            fix="write it as 'package.module:attribute', e.g. 'myapp.graph:build_graph'",
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        raise ManifestError(
            f"cannot import {path!r}: no module named {missing!r}",
            where=where,
            fix="check the spelling, that the package is installed, or that its directory "
            "is on the Python path (wtb run adds the manifest's directory; for a src/ "
            "layout, give the Workflow `pythonPath: [src]`)",
        ) from exc
    except Exception as exc:
        raise ManifestError(
            f"cannot import {path!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}",
            where=where,
            fix="fix the error in that module",
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ManifestError(
                f"cannot import {path!r}: {module_name!r} has no attribute {attr_path!r}",
                where=where,
                fix="check the name after the colon",
            ) from exc
    return obj
