"""The comparison matrix for CI: Markdown (a job summary, a pull request comment) and JUnit
XML (which CI systems parse into test reports), from the documents `-o json` prints.

JUnit: one testsuite per BatchTest, one testcase per combination. The combination is the
unit of the verdict: its cases are the sample of one paired test against the baseline,
not tests of their own (a case's single outcome says little, and a testcase per case would
turn every flaky case into a red test and bury the verdict under thousands of them). A
testcase fails when the combination is significantly worse than the baseline, or when
any of its cells failed or stopped at an interrupt; it is skipped when the data do not
allow a verdict ("insufficient data"). The numbers are in each testcase's system-out.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from typing import Any

from wtb.api.comparison import ComparisonMatrix, MatrixRow
from wtb.cli.render import _columns, _delta, _interval, _num, _p, _success, matrix_caption

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_VERDICT_MARK = {"better": "**better**", "worse": "**worse**", "baseline": "*baseline*"}


def _matrix(document: dict[str, Any]) -> ComparisonMatrix:
    return ComparisonMatrix.model_validate(document["matrix"])


def md_escape(text: str) -> str:
    """Text for a Markdown table cell: specials backslash-escaped, one line."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """A GitHub-flavoured Markdown table; columns in `right` are right-aligned."""
    lines = [
        "| " + " | ".join(md_escape(h) for h in headers) + " |",
        "|" + "|".join("--:" if i in right else ":--" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _verdicts(rows: Sequence[Any]) -> str:
    counts = Counter(row.verdict for row in rows if row.verdict != "baseline")
    order = ["better", "worse", "no significant difference", "insufficient data"]
    return ", ".join(f"{counts[v]} {v}" for v in order if counts[v]) or "no comparison"


def markdown_document(document: dict[str, Any]) -> str:
    """One BatchTest's matrix: a heading, the run and its counts, the table, the footer."""
    matrix = _matrix(document)
    essential, optional = _columns(matrix)
    columns = essential + optional
    headers = ["#", *(header for header, _ in columns)]
    rows = []
    for rank, row in enumerate(matrix.rows, start=1):
        cells = [str(rank)]
        for header, cell in columns:
            text = md_escape(str(cell(row)))
            cells.append(_VERDICT_MARK.get(row.verdict, text) if header == "verdict" else text)
        rows.append(cells)
    right = {
        i
        for i, h in enumerate(headers)
        if h not in ("combination", "verdict", "slowest node (p50)")
    }
    progress = document.get("progress") or {}
    counts = f"{progress.get('done', 0)}/{progress.get('total', 0)} cells, " + (
        f"{progress.get('failed', 0)} failed"
    )
    if progress.get("interrupted"):
        counts += f", {progress['interrupted']} interrupted"
    return "\n\n".join(
        [
            f"### {md_escape(document['batchTest'])}",
            f"Run `{document['run']}`: {counts}; baseline {md_escape(matrix.baseline)}; "
            f"{_verdicts(matrix.rows)}.",
            md_table(headers, rows, right),
            md_escape(matrix_caption(matrix)),
        ]
    )


def markdown(documents: Sequence[dict[str, Any]]) -> str:
    """Every document's matrix as Markdown, one section each."""
    return "\n\n".join(markdown_document(d) for d in documents)


def _xml(text: object) -> str:
    """Text XML 1.0 can hold: characters it forbids (most control characters) replaced.
    ElementTree escapes the rest (&, <, >, quotes) itself."""
    return _XML_INVALID.sub("\ufffd", str(text))


def _unsuccessful(row: MatrixRow) -> tuple[int, int]:
    """(failed, interrupted) cells of a row."""
    return row.runs - row.succeeded - row.interrupted, row.interrupted


def _summary(matrix: ComparisonMatrix, row: MatrixRow) -> str:
    primary = matrix.primary_metric
    lines = [
        f"{primary} (95% CI): {_interval(row.metrics.get(primary))}",
        f"delta vs baseline ({matrix.baseline}): {_delta(row)}",
        f"p (Holm): {_p(row)}",
        f"verdict: {row.verdict}",
        f"success: {_success(row)} of {row.runs} runs",
    ]
    lines += [
        f"{name}: {_num(value.value)} [{_num(value.low)}, {_num(value.high)}] (n={value.n})"
        for name, value in row.metrics.items()
        if name != primary
    ]
    return "\n".join(lines)


def _testcase(suite: ET.Element, name: str, matrix: ComparisonMatrix, row: MatrixRow) -> str:
    """Add the row's testcase; returns "failure", "skipped" or "passed"."""
    case = ET.SubElement(suite, "testcase", classname=_xml(name), name=_xml(row.label))
    failed, interrupted = _unsuccessful(row)
    reasons = []
    if row.verdict == "worse":
        reasons.append(
            f"significantly worse than the baseline on {matrix.primary_metric}: "
            f"delta {_delta(row)}, p (Holm) {_p(row)}"
        )
    if failed:
        reasons.append(f"{failed} of {row.runs} cells failed")
    if interrupted:
        reasons.append(f"{interrupted} of {row.runs} cells stopped at an interrupt")
    outcome = "passed"
    if reasons:
        failure = ET.SubElement(
            case,
            "failure",
            message=_xml("; ".join(reasons)),
            type="worse" if row.verdict == "worse" else "failed cells",
        )
        failure.text = _xml("\n".join(reasons))
        outcome = "failure"
    elif row.verdict == "insufficient data":
        ET.SubElement(
            case,
            "skipped",
            message=_xml("insufficient data: fewer than two cases paired with the baseline"),
        )
        outcome = "skipped"
    ET.SubElement(case, "system-out").text = _xml(_summary(matrix, row))
    return outcome


def junit(documents: Sequence[dict[str, Any]]) -> str:
    """Every document as a JUnit XML testsuite (see the module's docstring)."""
    root = ET.Element("testsuites", name="wtb")
    totals: Counter[str] = Counter()
    for document in documents:
        matrix = _matrix(document)
        name = str(document["batchTest"])
        suite = ET.SubElement(root, "testsuite", name=_xml(name))
        properties = ET.SubElement(suite, "properties")
        for key, value in (
            ("run", document["run"]),
            ("primaryMetric", matrix.primary_metric),
            ("higherIsBetter", str(matrix.higher_is_better).lower()),
            ("baseline", matrix.baseline),
            ("alpha", f"{matrix.alpha:g}"),
            ("correction", matrix.correction),
        ):
            ET.SubElement(properties, "property", name=key, value=_xml(value))
        outcomes = Counter(_testcase(suite, name, matrix, row) for row in matrix.rows)
        counts = {
            "tests": len(matrix.rows),
            "failures": outcomes["failure"],
            "errors": 0,
            "skipped": outcomes["skipped"],
        }
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(totals[key]))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
