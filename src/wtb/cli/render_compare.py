"""Two runs compared (`wtb compare`): a terminal table or Markdown; JSON and YAML are the
model itself."""

from __future__ import annotations

from typing import Any

from wtb.api.comparison import DeltaSummary, Interval
from wtb.api.run_comparison import OnlyIn, RunComparison, RunDeltaRow
from wtb.cli.render import _VERDICT_STYLE, RUN_STATE, _bounds, _interval
from wtb.cli.reports import md_escape, md_table

HEADERS = ("combination", "base", "candidate", "Δ (candidate - base)", "p (Holm)", "verdict", "n")


def _delta(delta: DeltaSummary) -> str:
    if delta.mean is None:
        return "-"
    return _bounds(delta.mean, delta.low, delta.high, sign="+")


def _p(delta: DeltaSummary) -> str:
    p = delta.p_adjusted
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


def _mean(value: Interval) -> str:
    return _interval(value)


def _cells(row: RunDeltaRow) -> list[str]:
    return [
        row.label,
        _mean(row.base),
        _mean(row.candidate),
        _delta(row.delta),
        _p(row.delta),
        row.verdict,
        str(row.delta.n),
    ]


def _only(side: str, only: OnlyIn) -> str:
    parts = []
    if only.cases:
        listed = ", ".join(only.case_ids)
        more = (
            f", ... ({only.cases - len(only.case_ids)} more)"
            if only.cases > len(only.case_ids)
            else ""
        )
        parts.append(f"{only.cases} case{'s' if only.cases != 1 else ''} ({listed}{more})")
    if only.combinations:
        parts.append(f"combinations {', '.join(only.combinations)}")
    return f"only in {side}, not compared: " + "; ".join(parts) if parts else ""


def _state(status: str) -> str:
    """A run's status as the list of runs says it (about completion, not its cells)."""
    return RUN_STATE.get(status, status)


def summary_lines(comparison: RunComparison) -> list[str]:
    """What was compared with what, and what was left out: said before any number."""
    c = comparison
    direction = "higher" if c.higher_is_better else "lower"
    lines = [
        f"base:      {c.base.run} ({_state(c.base.status)}, {c.base.created_at[:16]}): "
        f"{c.base.cases} cases, {c.base.combinations} combinations",
        f"candidate: {c.candidate.run} ({_state(c.candidate.status)}, "
        f"{c.candidate.created_at[:16]}): "
        f"{c.candidate.cases} cases, {c.candidate.combinations} combinations",
        f"{c.metric} ({direction} is better): {c.paired_cases} cases in both runs, paired by "
        f"case id in {len(c.rows)} combination{'s' if len(c.rows) != 1 else ''}",
    ]
    lines += [text for text in (_only("base", c.only_in_base),) if text]
    lines += [text for text in (_only("candidate", c.only_in_candidate),) if text]
    if c.changed_cases.cases:
        lines.append(
            f"warning: {c.changed_cases.cases} case(s) have the same id but other inputs or "
            f"expected values in the two runs ({', '.join(c.changed_cases.case_ids)}): "
            "paired all the same"
        )
    return lines


_METHODS = {"t": "Student t", "wilson": "Wilson", "score": "bounded score"}


def caption(comparison: RunComparison) -> str:
    method = _METHODS.get(comparison.ci_method, comparison.ci_method)
    return (
        "best candidate first; base and candidate: means over the paired cases "
        f"({comparison.confidence:.0%} {method} interval, unadjusted); Δ: paired per-case "
        "deltas, candidate - base; n: cases paired; verdicts: of the candidate, paired t "
        f"tests, {comparison.correction.capitalize()}-adjusted over the combinations at "
        f"alpha={comparison.alpha:g}"
    )


def comparison_table(comparison: RunComparison) -> Any:
    """The comparison as a rich Table (print `summary_lines` before it)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(
        header_style="bold",
        caption=caption(comparison),
    )
    table.add_column("#", justify="right")
    for header in HEADERS:
        left = header in ("combination", "verdict")
        table.add_column(header, justify="left" if left else "right", no_wrap=not left)
    for rank, row in enumerate(comparison.rows, start=1):
        cells: list[Any] = _cells(row)
        cells[5] = Text(row.verdict, style=_VERDICT_STYLE.get(row.verdict, ""))
        table.add_row(str(rank), *cells)
    return table


def comparison_markdown(comparison: RunComparison) -> str:
    c = comparison
    rows = []
    for rank, row in enumerate(c.rows, start=1):
        cells = [md_escape(text) for text in _cells(row)]
        if row.verdict in ("better", "worse"):
            cells[5] = f"**{row.verdict}**"
        rows.append([str(rank), *cells])
    right = {0, 2, 3, 4, 5, 7}
    body = [
        f"### {md_escape(c.candidate.batch_test)} against {md_escape(c.base.batch_test)}",
        "\n".join(f"- {md_escape(line)}" for line in summary_lines(c)),
        md_table(["#", *HEADERS], rows, right),
        md_escape(caption(c)),
    ]
    return "\n\n".join(body) + "\n"
