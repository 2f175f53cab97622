"""The comparison matrix as a terminal table, JSON or YAML."""

from __future__ import annotations

import json
from typing import Any

from wtb.api.matrix import ComparisonMatrix, Interval, MatrixRow

_VERDICT_STYLE = {
    "better": "bold green",
    "worse": "bold red",
    "no significant difference": "dim",
    "insufficient data": "yellow",
    "baseline": "cyan",
}


def _num(value: float | None, digits: int = 3) -> str:
    """Three significant digits: 0.913, 24.4, 1.78e-05."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _interval(iv: Interval | None, digits: int = 3) -> str:
    if iv is None or iv.value is None:
        return "-"
    if iv.low is None or iv.high is None:
        return _num(iv.value, digits)
    return f"{_num(iv.value, digits)} [{_num(iv.low, digits)}, {_num(iv.high, digits)}]"


def _delta(row: MatrixRow) -> str:
    d = row.delta
    if row.baseline or d is None or d.mean is None:
        return "-"
    text = f"{d.mean:+.3f}"
    if d.low is not None and d.high is not None:
        text += f" [{d.low:+.3f}, {d.high:+.3f}]"
    return text


def _p(row: MatrixRow) -> str:
    d = row.delta
    if row.baseline or d is None or d.p_adjusted is None:
        return "-"
    return f"{d.p_adjusted:.2g}" if d.p_adjusted >= 0.001 else "<0.001"


def matrix_table(title: str, matrix: ComparisonMatrix) -> Any:
    from rich.table import Table
    from rich.text import Text

    primary = matrix.primary_metric
    others = [m for m in (matrix.rows[0].metrics if matrix.rows else {}) if m != primary]
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("combination")
    table.add_column("runs", justify="right")
    table.add_column("success", justify="right")
    table.add_column(f"{primary} (95% CI)", justify="right")
    table.add_column("Δ vs baseline", justify="right")
    table.add_column("p (Holm)", justify="right")
    table.add_column("verdict")
    for name in others:
        table.add_column(name, justify="right")
    table.add_column("p50/p95 ms", justify="right")
    show_tokens = any(row.tokens is not None for row in matrix.rows)
    show_cost = any(row.cost is not None for row in matrix.rows)
    if show_tokens:
        table.add_column("Σ tokens", justify="right")
    if show_cost:
        table.add_column("Σ cost", justify="right")
    table.add_column("flaky", justify="right")
    for rank, row in enumerate(matrix.rows, start=1):
        label = Text(row.label)
        if row.baseline:
            label.append("  (baseline)", style="cyan")
        verdict = Text(row.verdict, style=_VERDICT_STYLE.get(row.verdict, ""))
        table.add_row(
            str(rank),
            label,
            str(row.runs),
            f"{row.success_rate.value:.0%}" if row.success_rate.value is not None else "-",
            _interval(row.metrics.get(primary)),
            _delta(row),
            _p(row),
            verdict,
            *(_num(row.metrics[m].value) if m in row.metrics else "-" for m in others),
            f"{_num(row.latency_ms.p50, 3)}/{_num(row.latency_ms.p95, 3)}",
            *([str(row.tokens) if row.tokens is not None else "-"] if show_tokens else []),
            *([f"{row.cost:.4f}" if row.cost is not None else "-"] if show_cost else []),
            f"{row.flakiness:.0%}" if row.flakiness is not None else "-",
        )
    direction = "higher" if matrix.higher_is_better else "lower"
    table.caption = (
        f"best first by {primary} ({direction} is better); intervals: {matrix.ci_method} over "
        f"per-case means, Wilson for success; verdicts: paired per-case deltas, "
        f"{matrix.correction} at alpha={matrix.alpha:g}"
    )
    if matrix.combinations > len(matrix.rows):
        table.caption += f"; {len(matrix.rows)} of {matrix.combinations} combinations shown"
    return table


def as_data(
    name: str, run_key: str, matrix: ComparisonMatrix, progress: dict[str, int]
) -> dict[str, Any]:
    return {
        "batchTest": name,
        "run": run_key,
        "progress": progress,
        "matrix": matrix.model_dump(mode="json", by_alias=True),
    }


def dump(documents: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(documents if len(documents) != 1 else documents[0], indent=2)
    import yaml

    return yaml.safe_dump_all(documents, sort_keys=False)
