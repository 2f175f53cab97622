"""A run case by case (`wtb results NAME --cases`) as a terminal table, JSON or YAML."""

from __future__ import annotations

from typing import Any

from wtb.comparison.cases import CaseComparison, CaseOutcome, CaseRow, Flip

_FLIP_STYLE: dict[Flip, str] = {"newly failing": "bold red", "newly passing": "bold green"}
_FLIP_MARK: dict[Flip, str] = {"newly failing": "▼", "newly passing": "▲"}


def _mean(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _outcome_text(outcome: CaseOutcome | None, flip: Flip | None) -> Any:
    from rich.text import Text

    if outcome is None:
        return Text("-", style="dim")
    text = Text("pass" if outcome.passes else "FAIL", style="" if outcome.passes else "red")
    text.append(f" {_mean(outcome.primary)}")
    if outcome.failed or outcome.interrupted:
        text.append(f" {outcome.succeeded}/{outcome.runs} ok", style="yellow")
    if outcome.flaky:
        text.append(" flaky", style="magenta")
    if any(outcome.evaluator_errors.values()):
        text.append(f" {sum(outcome.evaluator_errors.values())} eval err", style="yellow")
    if flip is not None:
        text.append(f" {_FLIP_MARK[flip]} {flip}", style=_FLIP_STYLE[flip])
    return text


def cases_table(title: str, comparison: CaseComparison, *, flipped: bool) -> Any:
    """One row per case, one column per combination (the baseline first)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("case", no_wrap=True)
    keys = list(comparison.labels)
    for key in keys:
        label = comparison.labels[key]
        table.add_column(f"{label} (baseline)" if key == comparison.baseline_key else label)
    rows = comparison.flipped() if flipped else comparison.rows
    for row in rows:
        table.add_row(
            row.case_id,
            *(_outcome_text(comparison.outcome(row, key), row.flips.get(key)) for key in keys),
        )
    summaries = comparison.summaries
    counts = "; ".join(
        f"{s.label}: {s.newly_failing} newly failing, {s.newly_passing} newly passing"
        for s in summaries.values()
        if not s.baseline
    )
    table.caption = (
        f"{comparison.pass_rule()}; cells: pass/FAIL and the mean {comparison.primary_metric} "
        f"over repeats; flaky: repeats disagree; {counts}"
    )
    if flipped:
        table.caption += f"; {len(rows)} of {len(comparison.rows)} cases flipped"
    return table


def _outcome_data(outcome: CaseOutcome) -> dict[str, Any]:
    return {
        "runs": outcome.runs,
        "succeeded": outcome.succeeded,
        "failed": outcome.failed,
        "interrupted": outcome.interrupted,
        "primary": outcome.primary,
        "passes": outcome.passes,
        "flaky": outcome.flaky,
        "evaluatorErrors": outcome.evaluator_errors,
        "evaluatorMessages": outcome.evaluator_messages,
        "repeat": outcome.repeat,
        "cell": outcome.cell_key,
        "status": outcome.status,
        "output": outcome.output,
        "error": outcome.error,
    }


def _row_data(comparison: CaseComparison, row: CaseRow) -> dict[str, Any]:
    return {
        "case": row.case_id,
        "baseline": _outcome_data(row.baseline) if row.baseline else None,
        "candidates": {
            comparison.labels[key]: {**_outcome_data(o), "flip": row.flips.get(key)}
            for key, o in row.candidates.items()
        },
    }


def cases_data(
    name: str, run_key: str, comparison: CaseComparison, *, flipped: bool
) -> dict[str, Any]:
    rows = comparison.flipped() if flipped else comparison.rows
    return {
        "batchTest": name,
        "run": run_key,
        "primaryMetric": comparison.primary_metric,
        "passRule": comparison.pass_rule(),
        "baseline": comparison.labels[comparison.baseline_key],
        "combinations": [
            {
                "label": s.label,
                "baseline": s.baseline,
                "cases": s.cases,
                "passing": s.passing,
                "newlyFailing": s.newly_failing,
                "newlyPassing": s.newly_passing,
                "flaky": s.flaky,
                "evaluatorErrors": s.evaluator_errors,
            }
            for s in comparison.summaries.values()
        ],
        "cases": [_row_data(comparison, row) for row in rows],
    }
