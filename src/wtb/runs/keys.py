"""Run keys: how a run is found again, by whoever records it.

A key is derived, never drawn: the same BatchTest finds the same run after a restart, so
recording it is idempotent and nothing runs twice.
"""

from __future__ import annotations


def local_run_key(namespace: str, name: str, digest: str) -> str:
    """A run of `wtb run`: identified by its content (workflow spec, batch spec, cases), so
    the same manifests resume the same run and any change is a new run."""
    return f"{namespace}/{name}:{digest[:16]}"


def generation_run_key(namespace: str, name: str, uid: str, generation: int) -> str:
    """A run the operator records: one per generation of one BatchTest object, so a spec
    edit or a re-created object is a new run, and re-applying an unchanged spec is not."""
    return f"{namespace}/{name}:g{generation}-{uid[:8]}"
