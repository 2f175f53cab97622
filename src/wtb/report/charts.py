"""The page's charts as Plotly figures (plain dicts, drawn by plotly.js in the page).

Plotly reads a few HTML tags in chart text (`<b>`, `<a>`...), so every label taken from a
run (combination labels, node names) is HTML-escaped here: it is drawn as written.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wtb.api.comparison import ComparisonMatrix, MatrixRow
from wtb.domain import NodeAggregate
from wtb.variant_matrix import combo_key

Figure = dict[str, Any]

VERDICT_COLORS = {
    "better": "#1a7f37",
    "worse": "#cf222e",
    "no significant difference": "#6e7781",
    "insufficient data": "#bf8700",
    "baseline": "#0969da",
}
_FONT = {"family": "system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 12}


def _text(value: str) -> str:
    return html.escape(value, quote=False)


def _layout(title: str, **more: Any) -> dict[str, Any]:
    return {
        "title": {"text": _text(title), "x": 0, "xanchor": "left"},
        "font": _FONT,
        "margin": {"l": 10, "r": 20, "t": 50, "b": 50},
        "showlegend": False,
        **more,
    }


def _height(rows: int) -> int:
    return max(220, 80 + 34 * rows)


def _row_key(row: MatrixRow) -> str:
    return combo_key(tuple(sorted(row.combination.items())))


def forest(matrix: ComparisonMatrix) -> Figure | None:
    """Each candidate's paired delta against the baseline, its interval and its verdict."""
    rows = [r for r in matrix.rows if not r.baseline and r.delta and r.delta.mean is not None]
    if not rows:
        return None
    rows.reverse()  # Plotly draws the first category at the bottom: best on top
    means = [r.delta.mean for r in rows if r.delta]
    above = [_span(r.delta.high, r.delta.mean) for r in rows if r.delta]
    below = [_span(r.delta.mean, r.delta.low) for r in rows if r.delta]
    hover = [
        f"{_text(r.label)}<br>Δ {_signed(r.delta.mean)} [{_signed(r.delta.low)}, "
        f"{_signed(r.delta.high)}]<br>p (Holm) {_p(r.delta.p_adjusted)}, n={r.delta.n}"
        f"<br>{r.verdict}"
        for r in rows
        if r.delta
    ]
    trace = {
        "type": "scatter",
        "mode": "markers",
        "x": means,
        "y": [_text(r.label) for r in rows],
        "error_x": {
            "type": "data",
            "symmetric": False,
            "array": above,
            "arrayminus": below,
            "thickness": 2,
            "width": 6,
        },
        "marker": {
            "size": 11,
            "symbol": "diamond",
            "color": [VERDICT_COLORS[r.verdict] for r in rows],
        },
        "text": hover,
        "hoverinfo": "text",
    }
    direction = "higher" if matrix.higher_is_better else "lower"
    return {
        "data": [trace],
        "layout": _layout(
            f"Δ {matrix.primary_metric} vs the baseline, {matrix.confidence:.0%} interval "
            f"({direction} is better)",
            height=_height(len(rows)),
            xaxis={"title": {"text": f"Δ {_text(matrix.primary_metric)}"}, "zeroline": False},
            yaxis={"automargin": True},
            shapes=[
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "paper",
                    "x0": 0,
                    "x1": 0,
                    "y0": 0,
                    "y1": 1,
                    "line": {"color": "#57606a", "dash": "dot"},
                }
            ],
        ),
    }


def _span(a: float | None, b: float | None) -> float:
    return 0.0 if a is None or b is None else a - b


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}" if value >= 0.001 else "<0.001"


def success_rates(matrix: ComparisonMatrix) -> Figure | None:
    """Success rate per combination with its Wilson interval."""
    rows = [r for r in matrix.rows if r.success_rate.value is not None]
    if not rows:
        return None
    rows.reverse()
    rates = [r.success_rate.value or 0.0 for r in rows]
    trace = {
        "type": "bar",
        "orientation": "h",
        "x": rates,
        "y": [_text(r.label) for r in rows],
        "error_x": {
            "type": "data",
            "symmetric": False,
            "array": [_span(r.success_rate.high, r.success_rate.value) for r in rows],
            "arrayminus": [_span(r.success_rate.value, r.success_rate.low) for r in rows],
        },
        "marker": {"color": ["#0969da" if r.baseline else "#8c959f" for r in rows]},
        "text": [
            f"{r.succeeded}/{r.runs} succeeded"
            + (f", {r.interrupted} interrupted" if r.interrupted else "")
            for r in rows
        ],
        "hoverinfo": "text+x",
    }
    return {
        "data": [trace],
        "layout": _layout(
            "Success rate, Wilson 95% interval",
            height=_height(len(rows)),
            xaxis={"range": [0, 1.02], "tickformat": ".0%"},
            yaxis={"automargin": True},
        ),
    }


@dataclass(frozen=True, slots=True)
class _Point:
    label: str
    x: float
    score: float
    baseline: bool


def pareto_front(points: Sequence[tuple[float, float]], *, higher_is_better: bool) -> list[int]:
    """Indexes of the points no other point beats: lower or equal x and a score at least as
    good, one of them strictly. Sorted by x."""
    sign = 1.0 if higher_is_better else -1.0
    front = []
    for i, (x, score) in enumerate(points):
        dominated = any(
            ox <= x and sign * os >= sign * score and (ox < x or sign * os > sign * score)
            for j, (ox, os) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -sign * points[i][1]))


def _measures(matrix: ComparisonMatrix) -> list[tuple[str, dict[str, float]]]:
    """(axis title, value per label) for each cost measure every scored row has."""
    found = []
    per_cell = {
        "cost per cell": {r.label: r.cost / r.runs for r in matrix.rows if r.cost and r.runs},
        "tokens per cell": {r.label: r.tokens / r.runs for r in matrix.rows if r.tokens and r.runs},
        "latency p50 (ms)": {
            r.label: r.latency_ms.p50 for r in matrix.rows if r.latency_ms.p50 is not None
        },
    }
    for title, values in per_cell.items():
        if values:
            found.append((title, values))
    return found


def tradeoffs(matrix: ComparisonMatrix) -> list[Figure]:
    """Cost, tokens and latency against the primary score, the Pareto front marked."""
    figures = []
    primary = matrix.primary_metric
    for title, values in _measures(matrix):
        points = [
            _Point(r.label, values[r.label], score, r.baseline)
            for r in matrix.rows
            if r.label in values and (score := r.metrics[primary].value) is not None
        ]
        if not points:
            continue
        front = pareto_front(
            [(p.x, p.score) for p in points], higher_is_better=matrix.higher_is_better
        )
        on_front = set(front)
        everything = {
            "type": "scatter",
            "mode": "markers",
            "name": "combinations",
            "x": [p.x for p in points],
            "y": [p.score for p in points],
            "text": [
                _text(p.label)
                + (" (baseline)" if p.baseline else "")
                + ("<br>on the Pareto front" if i in on_front else "")
                for i, p in enumerate(points)
            ],
            "hoverinfo": "text+x+y",
            "marker": {
                "size": 10,
                "color": ["#0969da" if p.baseline else "#8c959f" for p in points],
            },
        }
        line = {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "Pareto front",
            "x": [points[i].x for i in front],
            "y": [points[i].score for i in front],
            "line": {"color": "#1a7f37", "shape": "hv"},
            "marker": {"size": 14, "symbol": "circle-open", "color": "#1a7f37"},
            "hoverinfo": "skip",
        }
        figures.append(
            {
                "data": [everything, line],
                "layout": _layout(
                    f"{primary} vs {title} (Pareto front in green)",
                    height=340,
                    showlegend=True,
                    legend={"orientation": "h", "y": -0.25},
                    xaxis={"title": {"text": title}},
                    yaxis={"title": {"text": _text(primary)}},
                ),
            }
        )
    return figures


def node_figures(
    matrix: ComparisonMatrix, nodes: Mapping[str, Mapping[str, NodeAggregate]]
) -> list[Figure]:
    """Per node, median time (and mean tokens when reported) per combination."""
    labels = {_row_key(r): r.label for r in matrix.rows}
    keys = [k for k in labels if nodes.get(k)]
    if not keys:
        return []
    names = sorted({n for k in keys for n in nodes[k]})
    figures = []
    picks: list[tuple[str, Callable[[NodeAggregate], float | None]]] = [
        ("Median time per cell (ms), per node", lambda a: a.ms_p50),
        ("Mean tokens per cell, per node", lambda a: a.tokens),
    ]
    for title, pick in picks:
        traces = []
        for key in keys:
            values = [pick(nodes[key][n]) if n in nodes[key] else None for n in names]
            if all(v is None for v in values):
                continue
            traces.append(
                {
                    "type": "bar",
                    "name": _text(labels[key]),
                    "x": [_text(n) for n in names],
                    "y": values,
                }
            )
        if traces:
            figures.append(
                {
                    "data": traces,
                    "layout": _layout(
                        title,
                        barmode="group",
                        height=360,
                        showlegend=True,
                        legend={"orientation": "h", "y": -0.2},
                    ),
                }
            )
    return figures
