"""`-o markdown` and `-o junit` of `wtb run` and `wtb results`: parsed back as a CI would."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from toybatch import TOY
from wtb.cli.main import cli
from wtb.cli.reports import junit, markdown, md_escape


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _broken_batch(tmp_path: Path) -> Path:
    """A second BatchTest of the toy workflow whose `broken` normalize raises on every case."""
    batch = yaml.safe_load((TOY / "batchtest.yaml").read_text())
    batch["metadata"]["name"] = "toy-broken"
    batch["spec"]["matrix"] = {"normalize": ["original", "broken"]}
    batch["spec"]["repeats"] = 1
    shutil.copy(TOY / "cases.jsonl", tmp_path)  # a data set beside the manifest
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(batch))
    return path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(database, JUnit XML of `wtb run`) for the toy BatchTest and the broken one."""
    tmp_path = tmp_path_factory.mktemp("reports")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = _invoke(
        "run", "-f", str(TOY), "-f", str(_broken_batch(tmp_path)), "--database", db, "-o", "junit"
    )
    assert result.exit_code == 4, result.output  # toy-broken's cells failed
    return db, result.stdout


def _cases(suite: ET.Element) -> dict[str, ET.Element]:
    return {case.attrib["name"]: case for case in suite.iter("testcase")}


def test_junit_fails_worse_combinations_and_failed_cells(recorded: tuple[str, str]) -> None:
    _, xml = recorded
    root = ET.fromstring(xml)
    assert root.tag == "testsuites"
    suites = {suite.attrib["name"]: suite for suite in root.iter("testsuite")}
    assert set(suites) == {"toy-answers", "toy-broken"}

    answers = suites["toy-answers"]
    cases = _cases(answers)
    assert set(cases) == {"answer=original", "answer=reversed", "answer=async"}
    failures = [name for name, case in cases.items() if case.find("failure") is not None]
    assert failures == ["answer=reversed"]
    assert answers.attrib["tests"] == "3"
    assert answers.attrib["failures"] == str(len(failures))
    failure = cases["answer=reversed"].find("failure")
    assert failure is not None
    assert failure.attrib["type"] == "worse"
    assert "significantly worse than the baseline on correct" in failure.attrib["message"]
    assert cases["answer=original"].attrib["classname"] == "toy-answers"
    out = cases["answer=reversed"].findtext("system-out") or ""
    assert "correct (95% CI): 0.000" in out
    properties = {p.attrib["name"]: p.attrib["value"] for p in answers.iter("property")}
    assert properties["primaryMetric"] == "correct"
    assert properties["baseline"] == "answer=original"
    assert properties["run"].startswith("default/toy-answers:")

    broken = _cases(suites["toy-broken"])
    failed = broken["normalize=broken"].find("failure")
    assert failed is not None
    # Every cell failed: no value of the metric, so no verdict, but the cells are failures.
    assert "20 of 20 cells failed" in failed.attrib["message"]
    assert broken["normalize=original"].find("failure") is None
    assert suites["toy-broken"].attrib["failures"] == "1"
    # The totals of every suite on the root.
    assert root.attrib["tests"] == "5"
    assert root.attrib["failures"] == "2"


def test_results_gives_the_same_reports(recorded: tuple[str, str]) -> None:
    db, xml = recorded
    stored = _invoke("results", "toy-answers", "--database", db, "-o", "junit")
    assert stored.exit_code == 0, stored.output
    suite = ET.fromstring(stored.stdout).find("testsuite")
    assert suite is not None
    from_run = next(
        s for s in ET.fromstring(xml).iter("testsuite") if s.attrib["name"] == "toy-answers"
    )
    suite.tail = from_run.tail = None  # the indentation after it
    assert ET.tostring(suite) == ET.tostring(from_run)


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    """The first Markdown table in `text`: its header cells and body rows' cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| #"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    header, rule, *body = rows
    assert all(set(cell) <= {"-", ":"} for cell in rule[0].split("|"))
    return header, body


def test_markdown_matrix(recorded: tuple[str, str]) -> None:
    db, _ = recorded
    result = _invoke("results", "toy-answers", "--database", db, "-o", "markdown")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith("### toy\\-answers") or text.startswith("### toy-answers")
    assert "1 worse, 1 no significant difference" in text
    header, body = _table(text)
    assert header[:6] == [
        "#",
        "combination",
        "correct (95% CI)",
        "Δ vs baseline",
        "p (Holm)",
        "verdict",
    ]
    assert all(len(row) == len(header) for row in body)
    verdicts = {row[1]: row[5] for row in body}
    assert verdicts == {
        "answer=original": "*baseline*",
        "answer=async": "no significant difference",
        "answer=reversed": "**worse**",
    }
    assert [row[0] for row in body] == ["1", "2", "3"]
    assert "best first by correct (higher is better)" in text
    # Every metric and total is shown: no column is dropped for width.
    assert "tokens" in header
    assert "Σ cost" in header

    both = _invoke("run", "-f", str(TOY), "--database", db, "-o", "markdown", "-q")
    assert both.exit_code == 0, both.output
    assert _table(both.stdout)[1] == body


def test_everything_is_escaped() -> None:
    assert md_escape("a|b *c* <d>\nx_y") == r"a\|b \*c\* \<d\> x\_y"
    document = {
        "batchTest": 'a<b>&"c"\x01',
        "run": "ns/a:1",
        "progress": {
            "total": 1,
            "done": 1,
            "succeeded": 1,
            "failed": 0,
            "interrupted": 0,
            "reused": 0,
        },
        "matrix": {
            "primaryMetric": "m",
            "higherIsBetter": True,
            "baseline": "n=x",
            "combinations": 1,
            "rows": [
                {
                    "combination": {"n": "x"},
                    "label": "n=x|<y>",
                    "baseline": True,
                    "runs": 1,
                    "succeeded": 1,
                    "successRate": {"value": 1.0, "n": 1},
                    "latencyMs": {},
                    "metrics": {"m": {"value": 1.0, "n": 1}},
                    "verdict": "baseline",
                }
            ],
        },
    }
    root = ET.fromstring(junit([document]))
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.attrib["name"] == 'a<b>&"c"\ufffd'
    assert root.attrib["failures"] == "0"
    case = suite.find("testcase")
    assert case is not None
    assert case.attrib["name"] == "n=x|<y>"
    md = markdown([document])
    assert r"n=x\|\<y\>" in md
    assert "<y>" not in md
