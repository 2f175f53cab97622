"""Why cells failed, per combination: the failure groups of a run, from the result store.

Failed cells are grouped in the database (`wtb.storage.failures`) by (error type, node,
first line of the message); each group counts its cells and shows one example: its case,
its cell key, its whole (bounded) message and the traceback of its last attempt. At most
`per_combination` groups per combination, largest first; `failure_summary` also says what
the bound left out. Interrupted cells (stopped at `interrupt()` waiting for a human) are not
failures: they are counted apart (the run's progress, the matrix's `interrupted`) and never
grouped here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from wtb.storage.failures import FailureGroup, LeftOut

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore

__all__ = ["FailureGroup", "FailureSummary", "LeftOut", "failure_groups", "failure_summary"]

PER_COMBINATION = 10
"""Groups shown per combination unless told otherwise."""


@dataclass(frozen=True, slots=True)
class FailureSummary:
    groups: list[FailureGroup]
    """Combinations by label; in each, the largest group first."""
    left_out: list[LeftOut]
    """Per combination whose groups were cut, by label."""


def failure_summary(
    store: ResultStore, run_id: int, *, per_combination: int = PER_COMBINATION
) -> FailureSummary:
    """The run's failure groups and what the bound left out."""
    stored = store.failure_groups(run_id, per_combination)
    # Combinations by label; within each, the database's order (largest group first).
    groups = sorted(stored.groups, key=lambda g: g.label)
    left_out = sorted(stored.left_out.values(), key=lambda o: o.label)
    return FailureSummary(groups, left_out)


def failure_groups(
    store: ResultStore, run_id: int, *, per_combination: int = PER_COMBINATION
) -> list[FailureGroup]:
    """The run's failed cells grouped per combination by (error type, node, first line of
    the message), at most `per_combination` groups each, largest first."""
    return failure_summary(store, run_id, per_combination=per_combination).groups
