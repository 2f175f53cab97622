"""A run's page and the index of runs as HTML (Jinja2 templates, autoescaped).

Everything recorded from a run (outputs, errors, case inputs, labels) is untrusted text:
the templates escape it, charts get it HTML-escaped (`wtb.report.charts`), and the
figures travel as JSON inside `<script type="application/json">` with `<`, `>` and `&`
escaped. Sizes are bounded: outputs are cut to `MAX_TEXT` characters, lists to
`MAX_ROWS` entries, each with a note saying how many were left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wtb.api.comparison import ComparisonMatrix, Interval, MatrixRow
from wtb.comparison.cases import CaseOutcome
from wtb.report import charts
from wtb.report.assets import environment, plotly_js
from wtb.report.page import RunPage
from wtb.storage.records import RunProgress, RunRecord

MAX_TEXT = 600
"""Characters of an output, error or input shown; the rest is cut with a note."""
MAX_TRACEBACK = 6000
MAX_ROWS = 300
"""Entries per list (cases, flips, flaky cases, evaluator errors, failure groups)."""


def clip(value: Any, limit: int = MAX_TEXT) -> str:
    """Text for a page: strings as they are, anything else as JSON; cut at `limit`."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def _interval(iv: Interval | None) -> str:
    if iv is None or iv.value is None:
        return "-"
    if iv.low is None or iv.high is None:
        return f"{iv.value:.3f}"
    return f"{iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}]"


def _delta(row: MatrixRow) -> str:
    d = row.delta
    if row.baseline or d is None or d.mean is None:
        return "-"
    if d.low is None or d.high is None:
        return f"{d.mean:+.3f}"
    return f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@dataclass(frozen=True, slots=True)
class _Limited:
    items: list[Any]
    total: int


def _limited(items: Sequence[Any], limit: int = MAX_ROWS) -> _Limited:
    return _Limited(list(items[:limit]), len(items))


def _matrix_rows(matrix: ComparisonMatrix) -> list[dict[str, Any]]:
    primary = matrix.primary_metric
    others = [m for m in (matrix.rows[0].metrics if matrix.rows else {}) if m != primary]
    rows = []
    for rank, row in enumerate(matrix.rows, start=1):
        rate = row.success_rate
        rows.append(
            {
                "rank": rank,
                "label": row.label,
                "baseline": row.baseline,
                "primary": _interval(row.metrics.get(primary)),
                "primary_errors": row.evaluator_errors.get(primary, 0),
                "delta": _delta(row),
                "p": charts._p(row.delta.p_adjusted) if row.delta and not row.baseline else "-",
                "verdict": row.verdict,
                "success": "-"
                if rate.value is None
                else f"{rate.value:.0%} [{rate.low or 0:.0%}, {rate.high or 0:.0%}]",
                "runs": row.runs,
                "succeeded": row.succeeded,
                "interrupted": row.interrupted,
                "flaky": "-" if row.flakiness is None else f"{row.flakiness:.0%}",
                "latency": f"{_number(row.latency_ms.p50)} / {_number(row.latency_ms.p95)}",
                "others": [_number(row.metrics[m].value) for m in others],
                "tokens": "-" if row.tokens is None else str(row.tokens),
                "cost": "-" if row.cost is None else f"{row.cost:.4g}",
            }
        )
    return rows


def _at(output: dict[str, Any] | None, path: str | None) -> tuple[bool, Any]:
    """(found, value) at a dotted path of an output; `$state.` paths are not in it."""
    if output is None or not path or path.startswith("$"):
        return False, None
    value: Any = output
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _outcome(outcome: CaseOutcome | None, focus: str | None = None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    found, value = _at(outcome.output, focus)
    return {
        "focus": f"{focus}: {clip(value)}" if found else None,
        "passes": outcome.passes,
        "primary": "-" if outcome.primary is None else f"{outcome.primary:.2f}",
        "ok": f"{outcome.succeeded}/{outcome.runs}",
        "all_ok": outcome.succeeded == outcome.runs,
        "flaky": outcome.flaky,
        "status": outcome.status,
        "repeat": outcome.repeat,
        "output": clip(outcome.output),
        "error": clip(outcome.error),
        "evaluator_errors": sum(outcome.evaluator_errors.values()),
    }


def _case_views(page: RunPage) -> dict[str, Any]:
    comparison = page.cases
    labels = comparison.labels
    flips = []
    flaky = []
    errors = []
    for row in comparison.rows:
        spec = page.case_specs.get(row.case_id)
        inputs = clip(spec.inputs, 300) if spec else ""
        expected = clip(spec.expected, 300) if spec and spec.expected else ""
        for key, flip in row.flips.items():
            flips.append(
                {
                    "case": row.case_id,
                    "label": labels[key],
                    "flip": flip,
                    "inputs": inputs,
                    "expected": expected,
                    "baseline": _outcome(row.baseline, page.focus),
                    "candidate": _outcome(row.candidates[key], page.focus),
                }
            )
        for key in labels:
            outcome = comparison.outcome(row, key)
            if outcome is None:
                continue
            if outcome.flaky:
                view = _outcome(outcome, page.focus) or {}
                flaky.append({"case": row.case_id, "label": labels[key], **view})
            for metric, count in outcome.evaluator_errors.items():
                errors.append(
                    {
                        "case": row.case_id,
                        "label": labels[key],
                        "metric": metric,
                        "count": count,
                        "runs": outcome.runs,
                        "message": clip(outcome.evaluator_messages.get(metric)),
                    }
                )
    flips.sort(key=lambda f: (f["flip"] != "newly failing", f["label"]))
    table = [
        {
            "case": row.case_id,
            "inputs": clip(page.case_specs[row.case_id].inputs, 160)
            if row.case_id in page.case_specs
            else "",
            "cells": [
                (_outcome(comparison.outcome(row, key)), row.flips.get(key)) for key in labels
            ],
        }
        for row in comparison.rows
    ]
    return {
        "flips": _limited(flips),
        "flaky": _limited(flaky),
        "evaluator_errors": _limited(errors),
        "table": _limited(table),
        "labels": list(labels.values()),
        "baseline_label": labels[comparison.baseline_key],
        "summaries": list(comparison.summaries.values()),
        "pass_rule": comparison.pass_rule(),
    }


def _groups(page: RunPage) -> _Limited:
    groups = [
        {
            "label": g.label,
            "error_type": g.error_type,
            "node": g.node,
            "message": clip(g.message),
            "count": g.count,
            "example_case": g.example_case,
            "example_cell": g.example_cell,
            "example_message": clip(g.example_message, 2000),
            "traceback": clip(g.example_traceback, MAX_TRACEBACK),
        }
        for g in page.failures.groups
    ]
    return _limited(groups)


def _figures(page: RunPage) -> list[dict[str, Any]]:
    """(section, figure) in page order; sections without data are left out."""
    found: list[dict[str, Any]] = []
    forest = charts.forest(page.matrix)
    if forest:
        found.append({"section": "delta", "figure": forest})
    rates = charts.success_rates(page.matrix)
    if rates:
        found.append({"section": "success", "figure": rates})
    found.extend({"section": "tradeoffs", "figure": f} for f in charts.tradeoffs(page.matrix))
    found.extend(
        {"section": "nodes", "figure": f} for f in charts.node_figures(page.matrix, page.nodes)
    )
    for i, item in enumerate(found):
        item["id"] = f"chart-{i}"
    return found


def render_run(
    page: RunPage, *, plotly_src: str | None = None, index_href: str | None = None
) -> str:
    """A run's page. plotly.js is inlined (a file that opens anywhere, offline) unless
    `plotly_src` names where the page loads it from (the viewer serves it once)."""
    matrix = page.matrix
    primary = matrix.primary_metric
    others = [m for m in (matrix.rows[0].metrics if matrix.rows else {}) if m != primary]
    return (
        environment()
        .get_template("run.html")
        .render(
            run=page.run,
            progress=page.progress,
            matrix=matrix,
            matrix_rows=_matrix_rows(matrix),
            other_metrics=others,
            repeats=page.repeats,
            fixed=page.fixed,
            cases=_case_views(page),
            groups=_groups(page),
            failures_left_out=page.failures.left_out,
            figures=_figures(page),
            plotly_js=None if plotly_src else plotly_js(),
            plotly_src=plotly_src,
            index_href=index_href,
            max_text=MAX_TEXT,
            verdict_colors=charts.VERDICT_COLORS,
        )
    )


@dataclass(frozen=True, slots=True)
class IndexEntry:
    run: RunRecord
    progress: RunProgress
    href: str


def render_index(entries: Sequence[IndexEntry], *, database: str) -> str:
    """The list of stored runs, newest first, each linking to its page."""
    return environment().get_template("index.html").render(entries=entries, database=database)
