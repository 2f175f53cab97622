"""Progress, the comparison matrix and the failure groups of a run, read from the result
store, in the shape of a BatchTest's status: bounded however big the batch (the best rows
and the baseline; the largest failure groups, messages cut, no tracebacks; the full data
stays in the database)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from wtb.api.batchtest import FailureGroupStatus
from wtb.api.comparison import ComparisonMatrix, MatrixRow
from wtb.comparison.failures import failure_summary
from wtb.comparison.stored import matrix_for_run
from wtb.runs.record import recorded_spec
from wtb.storage.records import RunRecord
from wtb.storage.store import ResultStore
from wtb.variant_matrix import baseline_of


@dataclass(frozen=True)
class RunStatus:
    total: int | None
    completed: int
    failed: int
    progress: str
    best: str | None
    score: str | None
    matrix: ComparisonMatrix | None
    interrupted: int = 0
    failures: list[FailureGroupStatus] | None = None
    """The largest failure groups (None: no cell failed)."""
    failure_groups_left_out: int | None = None

    @property
    def all_recorded(self) -> bool:
        """Every cell of a planned run has a result."""
        return self.total is not None and self.completed >= self.total


STATUS_GROUPS_PER_COMBINATION: Final = 5
STATUS_GROUPS: Final = 20
STATUS_MESSAGE: Final = 300
"""Bounds of the failure groups in status: per combination, in all, characters of a message."""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_failures(
    store: ResultStore, run_id: int
) -> tuple[list[FailureGroupStatus] | None, int | None]:
    """The run's largest failure groups, bounded for status, and how many were left out
    (None, None when no cell failed)."""
    summary = failure_summary(store, run_id, per_combination=STATUS_GROUPS_PER_COMBINATION)
    if not summary.groups:
        return None, None
    largest = sorted(summary.groups, key=lambda g: -g.count)[:STATUS_GROUPS]
    kept = {id(g) for g in largest}
    groups = [
        FailureGroupStatus(
            combination=g.label,
            error_type=_cut(g.error_type, STATUS_MESSAGE),
            node=None if g.node is None else _cut(g.node, STATUS_MESSAGE),
            message=_cut(g.message, STATUS_MESSAGE),
            count=g.count,
            example_case=_cut(g.example_case, STATUS_MESSAGE),
        )
        for g in summary.groups  # combinations by label, largest group first in each
        if id(g) in kept
    ]
    left_out = len(summary.groups) - len(groups) + sum(o.groups for o in summary.left_out)
    return groups, left_out or None


def _score(row: MatrixRow, metric: str) -> str | None:
    interval = row.metrics.get(metric)
    if interval is None or interval.value is None:
        return None
    text = f"{interval.value:.3g}"
    if interval.low is not None and interval.high is not None:
        text += f" [{interval.low:.3g}, {interval.high:.3g}]"
    return text


def run_status(store: ResultStore, run: RunRecord, *, max_rows: int) -> RunStatus:
    """Counts, the best combination and the matrix of `run` as recorded now."""
    recorded = recorded_spec(run)
    if not recorded.planned:
        return RunStatus(None, 0, 0, "0/?", None, None, None)
    progress = store.progress(run.id)
    spec = recorded.batch
    matrix = None
    best = score = None
    failures, left_out = status_failures(store, run.id) if progress.failed else (None, None)
    if progress.done:
        matrix = matrix_for_run(store, run.id, spec, baseline_of(spec), max_rows=max_rows)
        # Rows whose cells all failed are not candidates for best, whatever they score.
        ranked = [r for r in matrix.rows if r.succeeded]
        if ranked:
            best, score = ranked[0].label, _score(ranked[0], spec.primary_metric)
    return RunStatus(
        total=progress.total,
        completed=progress.done,
        failed=progress.failed,
        interrupted=progress.interrupted,
        progress=f"{progress.done}/{progress.total}",
        best=best,
        score=score,
        matrix=matrix,
        failures=failures,
        failure_groups_left_out=left_out,
    )
