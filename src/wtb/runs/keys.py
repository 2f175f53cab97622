"""Run keys: how a run is found again, by whoever records it.

A key is derived, never drawn: the same BatchTest finds the same run after a restart, so
recording it is idempotent and nothing runs twice.
"""

from __future__ import annotations

SMOKE = "-smoke"
"""Ends the key of a smoke run (`wtb run --limit/--cases`): a run of part of the cases,
never taken for the full run."""


def local_run_key(namespace: str, name: str, digest: str, *, smoke: bool = False) -> str:
    """A run of `wtb run`: identified by its content (`RunSpec.identity_digest`: the specs
    without their limits, the cases, the code's fingerprint), so the same manifests and
    code resume the same run, and a change of code, nodes, evaluators or cases is a new
    run. A smoke run, of some of the cases, is keyed apart."""
    return f"{namespace}/{name}:{digest[:16]}{SMOKE if smoke else ''}"


def generation_run_key(namespace: str, name: str, uid: str, generation: int) -> str:
    """A run the operator records: one per generation of one BatchTest object, so a spec
    edit or a re-created object is a new run, and re-applying an unchanged spec is not."""
    return f"{namespace}/{name}:g{generation}-{uid[:8]}"
