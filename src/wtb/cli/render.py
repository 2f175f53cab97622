"""The comparison matrix, the failure groups and the list of runs as a terminal table, JSON
or YAML (Markdown and JUnit XML: `wtb.cli.reports`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from wtb.api.comparison import ComparisonMatrix, Interval, MatrixRow

if TYPE_CHECKING:
    from wtb.comparison.failures import FailureSummary
    from wtb.storage.records import RunProgress, RunRecord, StoredCell

_VERDICT_STYLE = {
    "better": "bold green",
    "worse": "bold red",
    "no significant difference": "dim",
    "insufficient data": "yellow",
    "not comparable": "bold yellow",
    "baseline": "cyan",
}


def _num(value: float | None, digits: int = 3) -> str:
    """Three significant digits: 0.913, 24.4, 1.78e-05."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _bounds(value: float, low: float | None, high: float | None, sign: str = "") -> str:
    """`mean ±h` for a symmetric interval (t), `mean [low, high]` otherwise."""
    center = f"{value:{sign}.3f}"
    if low is None or high is None:
        return center
    below, above = value - low, high - value
    if abs(below - above) <= 1e-9 * max(1.0, abs(value)):
        return f"{center} ±{above:.3f}"
    return f"{center} [{low:{sign}.3f}, {high:{sign}.3f}]"


def _interval(iv: Interval | None) -> str:
    if iv is None or iv.value is None:
        return "-"
    return _bounds(iv.value, iv.low, iv.high)


def _delta(row: MatrixRow) -> str:
    d = row.delta
    if row.baseline or d is None or d.mean is None:
        return "-"
    return _bounds(d.mean, d.low, d.high, sign="+")


def _p(row: MatrixRow) -> str:
    d = row.delta
    if row.baseline or d is None or d.p_adjusted is None:
        return "-"
    return f"{d.p_adjusted:.2g}" if d.p_adjusted >= 0.001 else "<0.001"


Cell = Callable[[MatrixRow], Any]


def _missing(row: MatrixRow, name: str) -> str:
    """` (n=4, 2 errors)` when the metric's evaluator raised on some cells of the row: its
    value then rests on fewer cases, and the reader must see it."""
    errors = row.evaluator_errors.get(name, 0)
    if not errors:
        return ""
    found = row.metrics.get(name)
    n = found.n if found else 0
    return f" (n={n}, {errors} error{'s' if errors != 1 else ''})"


def _metric_cell(name: str) -> Cell:
    def cell(row: MatrixRow) -> str:
        found = row.metrics.get(name)
        return (_num(found.value) if found else "-") + _missing(row, name)

    return cell


def _success(row: MatrixRow) -> str:
    rate = row.success_rate.value
    text = f"{rate:.0%}" if rate is not None else "-"
    return f"{text} ({row.interrupted} interrupted)" if row.interrupted else text


def _columns(matrix: ComparisonMatrix) -> tuple[list[tuple[str, Cell]], list[tuple[str, Cell]]]:
    """(essential, optional) columns as (header, cell function); optional ones by priority."""
    from rich.text import Text

    primary = matrix.primary_metric
    others = [m for m in (matrix.rows[0].metrics if matrix.rows else {}) if m != primary]
    essential: list[tuple[str, Cell]] = [
        ("combination", lambda r: Text(r.label, style="cyan" if r.baseline else "")),
        (
            f"{primary} (95% CI)",
            lambda r: _interval(r.metrics.get(primary)) + _missing(r, primary),
        ),
        ("Δ vs baseline", _delta),
        ("p (Holm)", _p),
        ("verdict", lambda r: Text(r.verdict, style=_VERDICT_STYLE.get(r.verdict, ""))),
    ]
    optional: list[tuple[str, Cell]] = [
        ("success", _success),
        ("runs", lambda r: str(r.runs)),
        ("flaky", lambda r: f"{r.flakiness:.0%}" if r.flakiness is not None else "-"),
        ("p50/p95 ms", lambda r: f"{_num(r.latency_ms.p50)}/{_num(r.latency_ms.p95)}"),
    ]
    optional.extend((name, _metric_cell(name)) for name in others)
    if any(row.tokens is not None for row in matrix.rows):
        optional.append(("Σ tokens", lambda r: str(r.tokens) if r.tokens is not None else "-"))
    if any(row.cost is not None for row in matrix.rows):
        optional.append(("Σ cost", lambda r: f"{r.cost:.4g}" if r.cost is not None else "-"))
    if any(row.nodes for row in matrix.rows):
        optional.append(("slowest node (p50)", _slowest_node))
    return essential, optional


def _slowest_node(row: MatrixRow) -> str:
    """The row's slowest node, its median ms and mean tokens: "generate 812ms 1.2k tok"."""
    if not row.nodes:
        return "-"
    node, summary = next(iter(row.nodes.items()))  # the slowest first
    text = f"{node} {_num(summary.ms_p50)}ms"
    if summary.tokens is not None:
        text += f" {_num(summary.tokens)} tok"
    return text


def _rank(rank: int, row: MatrixRow) -> str:
    """No rank for a row whose cells all failed: it is last, and not as a placing."""
    return "-" if row.runs and not row.succeeded else str(rank)


def matrix_table(title: str, matrix: ComparisonMatrix, width: int | None = None) -> Any:
    """The matrix as a rich Table; optional columns are left out until it fits `width`."""
    from rich.console import Console
    from rich.table import Table

    essential, optional = _columns(matrix)
    measure = Console(width=10_000)
    keep = len(optional)
    while True:
        table = Table(title=title, title_justify="left", header_style="bold")
        table.add_column("#", justify="right")
        columns = essential + optional[:keep]
        for header, _ in columns:
            right = header not in ("combination", "verdict")
            table.add_column(
                header, justify="right" if right else "left", no_wrap=header != "combination"
            )
        for rank, row in enumerate(matrix.rows, start=1):
            table.add_row(_rank(rank, row), *(cell(row) for _, cell in columns))
        if width is None or keep == 0 or measure.measure(table).maximum <= width:
            break
        keep -= 1
    table.caption = matrix_caption(matrix, [header for header, _ in optional[keep:]])
    return table


def matrix_caption(matrix: ComparisonMatrix, hidden: list[str] | None = None) -> str:
    """The footer of a matrix: how to read it (the table's caption, Markdown's footer);
    `hidden` names the columns left out."""
    direction = "higher" if matrix.higher_is_better else "lower"
    caption = f"best first by {matrix.primary_metric} ({direction} is better); " + interval_caption(
        matrix
    )
    if hidden:
        caption += f"; not shown for width: {', '.join(hidden)} (use -o json)"
    if any(row.interrupted for row in matrix.rows):
        caption += "; interrupted: stopped at interrupt() waiting for a human"
    if any(any(row.evaluator_errors.values()) for row in matrix.rows):
        caption += "; n=, errors: cases with a value, cells whose evaluator raised (value missing)"
    if matrix.fixed:
        fixed = ", ".join(f"{node}={variant}" for node, variant in sorted(matrix.fixed.items()))
        caption += f"; in every combination: {fixed}"
    if matrix.combinations > len(matrix.rows):
        caption += f"; {len(matrix.rows)} of {matrix.combinations} combinations shown"
    return caption


_METHOD_NAMES = {"t": "Student t", "wilson": "Wilson", "score": "bounded score"}


def interval_caption(matrix: ComparisonMatrix) -> str:
    """Which interval each column has (all unadjusted) and how verdicts are decided (Holm-
    adjusted): "intervals (95%, unadjusted): correct Wilson, ...; verdicts: ..."."""
    methods = matrix.ci_methods or {matrix.primary_metric: matrix.ci_method}
    named = [
        f"{'success' if key == 'successRate' else 'Δ' if key == 'delta' else key} "
        f"{_METHOD_NAMES.get(method, method)}"
        for key, method in methods.items()
    ]
    return (
        f"intervals ({matrix.confidence:.0%}, unadjusted, over per-case means): "
        f"{', '.join(named)}; verdicts: paired per-case t tests, "
        f"{matrix.correction.capitalize()}-adjusted at alpha={matrix.alpha:g}; "
        "not comparable: no successful cell in the row or the baseline"
    )


def progress_data(progress: RunProgress, reused: int) -> dict[str, int]:
    """A run's cell counts for -o json/yaml; `reused`: results copied from earlier runs."""
    return {
        "total": progress.total,
        "done": progress.done,
        "succeeded": progress.succeeded,
        "failed": progress.failed,
        "interrupted": progress.interrupted,
        "reused": reused,
    }


def as_data(
    name: str, run_key: str, matrix: ComparisonMatrix, progress: dict[str, int]
) -> dict[str, Any]:
    return {
        "batchTest": name,
        "run": run_key,
        "progress": progress,
        "matrix": matrix.model_dump(mode="json", by_alias=True),
    }


def cells_data(
    cells: Iterable[StoredCell], root_run_ids: Mapping[str, list[str | None]]
) -> list[dict[str, Any]]:
    """Recorded cells for -o json/yaml: what finds a cell's trace (its attempts' root run
    ids, the last one the attempt its result is from) and its per-node figures."""
    return [
        {
            "cell": c.cell_key,
            "combination": dict(c.combination),
            "case": c.case_id,
            "repeat": c.repeat,
            "status": c.status,
            "latencyMs": c.latency_ms,
            "rootRunIds": list(root_run_ids.get(c.cell_key, [])),
            "nodes": c.nodes,
        }
        for c in cells
    ]


RUN_STATE = {
    "pending": "pending",
    "running": "running",
    "succeeded": "complete",
    "failed": "stopped",
}
"""A run's status is about completion, not about its cells: said so in the list of runs."""


def run_line(run: RunRecord, progress: RunProgress) -> str:
    """One run in `wtb results`'s list: its key, whether it completed, its cells counted
    truthfully ("288 cells: 96 ok, 192 failed"), when it was created."""
    cells = (
        f"{progress.done} cells"
        if progress.done == progress.total
        else (f"{progress.done}/{progress.total} cells")
    )
    counts = [f"{progress.succeeded} ok"]
    if progress.failed:
        counts.append(f"{progress.failed} failed")
    if progress.interrupted:
        counts.append(f"{progress.interrupted} interrupted")
    state = RUN_STATE.get(run.status, run.status)
    return (
        f"{run.run_key}  {state:<8}  {cells}: {', '.join(counts)}  {run.created_at:%Y-%m-%d %H:%M}"
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failures_table(summary: FailureSummary, *, message_width: int = 120) -> Any:
    """The failure groups as a rich Table: cells, combination, error, node, first line of
    the message, example case; what the bound left out in the caption."""
    from rich.table import Table

    failed = sum(g.count for g in summary.groups) + sum(o.cells for o in summary.left_out)
    table = Table(
        title=f"failures: {failed} failed cell{'s' if failed != 1 else ''}",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("cells", justify="right")
    table.add_column("combination")
    table.add_column("error", style="red")
    table.add_column("node")
    table.add_column("message")
    table.add_column("e.g. case")
    for g in summary.groups:
        table.add_row(
            str(g.count),
            g.label,
            g.error_type,
            g.node or "-",
            _shorten(g.message, message_width),
            g.example_case,
        )
    if summary.left_out:
        table.caption = "; ".join(
            f"and {o.groups} more group{'s' if o.groups != 1 else ''}"
            f" ({o.cells} cells) in {o.label}"
            for o in summary.left_out
        )
    return table


def failure_examples(summary: FailureSummary) -> str:
    """Each group's example: its cell, whole message and last attempt's traceback."""
    parts = []
    for i, g in enumerate(summary.groups, start=1):
        where = f" in node {g.node}" if g.node else ""
        head = (
            f"[{i}] {g.error_type}{where} ({g.count} cell{'s' if g.count != 1 else ''} "
            f"of {g.label}); e.g. case {g.example_case}, cell {g.example_cell}"
        )
        body = g.example_traceback or f"{g.error_type}: {g.example_message}"
        parts.append(f"{head}\n{body}")
    return "\n\n".join(parts)


def failures_data(summary: FailureSummary) -> dict[str, Any]:
    """The failure groups for -o json/yaml."""
    return {
        "groups": [
            {
                "combination": g.label,
                "comboKey": g.combo_key,
                "errorType": g.error_type,
                "node": g.node,
                "message": g.message,
                "count": g.count,
                "example": {
                    "case": g.example_case,
                    "cell": g.example_cell,
                    "message": g.example_message,
                    "traceback": g.example_traceback,
                },
            }
            for g in summary.groups
        ],
        "leftOut": [
            {"combination": o.label, "groups": o.groups, "cells": o.cells} for o in summary.left_out
        ],
    }


def dump(documents: list[dict[str, Any]], fmt: str) -> str:
    """One shape however many BatchTests: a list of documents (one JSON array, or one YAML
    document holding a list), so a script reads `[0]` whether one ran or several."""
    if fmt in ("markdown", "junit"):
        from wtb.cli.reports import junit, markdown

        return markdown(documents) if fmt == "markdown" else junit(documents)
    if fmt == "json":
        return json.dumps(documents, indent=2)
    import yaml

    return yaml.safe_dump(documents, sort_keys=False)
