"""Progress and the comparison matrix of a run, read from the result store, in the shape of a
BatchTest's status: bounded however big the batch (the best rows and the baseline; the full
data stays in the database)."""

from __future__ import annotations

from dataclasses import dataclass

from wtb.api.comparison import ComparisonMatrix, MatrixRow
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

    @property
    def all_recorded(self) -> bool:
        """Every cell of a planned run has a result."""
        return self.total is not None and self.completed >= self.total


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
    )
