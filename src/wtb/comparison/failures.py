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

from wtb.variant_matrix import combination_label

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore

PER_COMBINATION = 10
"""Groups shown per combination unless told otherwise."""


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failed cells of one combination that failed the same way."""

    combo_key: str
    label: str
    """The combination's label (`wtb.variant_matrix.combination_label`)."""
    error_type: str
    node: str | None
    """The node the cells failed in ("parent/child" in a subgraph); None outside nodes."""
    message: str
    """The first line of the error message."""
    count: int
    example_case: str
    example_cell: str
    example_message: str
    example_traceback: str | None


@dataclass(frozen=True, slots=True)
class LeftOut:
    """A combination's groups beyond the bound: how many, holding how many cells."""

    label: str
    groups: int
    cells: int


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
    labels: dict[str, str] = {}
    groups = []
    for g in stored.groups:
        label = labels.setdefault(g.combo_key, combination_label(g.combination))
        groups.append(
            FailureGroup(
                combo_key=g.combo_key,
                label=label,
                error_type=g.error_type,
                node=g.node,
                message=g.message,
                count=g.count,
                example_case=g.example_case,
                example_cell=g.example_cell,
                example_message=g.example_message,
                example_traceback=g.example_traceback,
            )
        )
    order = sorted(labels, key=labels.__getitem__)
    rank = {combo_key: i for i, combo_key in enumerate(order)}
    groups.sort(key=lambda g: rank[g.combo_key])  # stable: largest first within each
    left_out = [
        LeftOut(
            labels[combo_key], stored.left_out[combo_key].groups, stored.left_out[combo_key].cells
        )
        for combo_key in order
        if combo_key in stored.left_out
    ]
    return FailureSummary(groups, left_out)


def failure_groups(
    store: ResultStore, run_id: int, *, per_combination: int = PER_COMBINATION
) -> list[FailureGroup]:
    """The run's failed cells grouped per combination by (error type, node, first line of
    the message), at most `per_combination` groups each, largest first."""
    return failure_summary(store, run_id, per_combination=per_combination).groups
