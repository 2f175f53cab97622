"""`wtb compare`: two runs of one BatchTest (main, and a branch whose node changed), paired
per case; and the comparison's rules on what can and cannot be compared."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from toybatch import TOY
from wtb.api.run_comparison import ComparedRun
from wtb.cli.main import cli
from wtb.comparison.across_runs import MeasuredRun, compare_measured
from wtb.errors import WtbError

WRONG_WHEN_NOT_SHOUTED = """
def answer(state: State) -> dict[str, Any]:
    wtb.report_usage(input_tokens=len(state["text"].split()), output_tokens=1, cost=0.001)
    text = state["text"]
    return {"answer": text if text.endswith("!") else text + "?", "trail": ["answer"]}
"""


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def branch_copy(tmp_path: Path, package: str) -> Path:
    """The toy fixture as another checkout of it: package `package`, whose original `answer`
    node is wrong on every case it does not shout (16 of the 20)."""
    root = tmp_path / package
    shutil.copytree(TOY, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "toyflow").rename(root / package)
    graph = root / package / "graph.py"
    source = graph.read_text()
    start = source.index("def answer(state: State)")
    end = source.index("\n\n\n", start)
    graph.write_text(source[:start] + WRONG_WHEN_NOT_SHOUTED.strip() + source[end:])
    workflow = root / "workflow.yaml"
    workflow.write_text(workflow.read_text().replace("toyflow.", f"{package}."))
    return root


def _run(path: Path, db: str, *extra: str) -> dict[str, Any]:
    result = _invoke("run", "-f", str(path), "--database", db, "-o", "json", "-q", *extra)
    assert result.exit_code == 0, result.output
    (data,) = json.loads(result.stdout)  # one document per BatchTest, always a list
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """(database, main's run key, the branch's run key): the toy BatchTest run on main, then
    on a branch that broke the original `answer` node."""
    tmp_path = tmp_path_factory.mktemp("compare")
    db = f"sqlite:///{tmp_path / 'c.db'}"
    main = _run(TOY, db)
    branch = _run(branch_copy(tmp_path, "toyflow_branch"), db)
    assert main["run"] != branch["run"]
    return db, main["run"], branch["run"]


def test_compare_finds_the_changed_node(two_runs: tuple[str, str, str]) -> None:
    db, main, branch = two_runs
    # The branch by its BatchTest's name: its newest run.
    result = _invoke("compare", main, "toy-answers", "--database", db, "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["base"]["run"] == main
    assert data["candidate"]["run"] == branch
    assert data["metric"] == "correct"
    assert data["pairedCases"] == 20
    assert data["onlyInBase"] == {"cases": 0, "caseIds": [], "combinations": []}
    assert data["onlyInCandidate"]["cases"] == 0
    rows = {row["label"]: row for row in data["rows"]}
    assert set(rows) == {"answer=original", "answer=reversed", "answer=async"}
    broken = rows["answer=original"]
    assert broken["verdict"] == "worse"
    assert broken["delta"]["n"] == 20
    assert broken["delta"]["mean"] == pytest.approx(-16 / 20)
    assert broken["base"]["value"] == 1.0
    assert broken["candidate"]["value"] == pytest.approx(4 / 20)
    assert broken["delta"]["pAdjusted"] < 0.05
    for unchanged in ("answer=reversed", "answer=async"):
        assert rows[unchanged]["verdict"] == "no significant difference"
        assert rows[unchanged]["delta"]["mean"] == 0.0
        assert rows[unchanged]["delta"]["n"] == 20
    # Best candidate first: the broken combination is last.
    assert data["rows"][-1]["label"] == "answer=original"

    # The other way round, the branch is the base: main is better.
    back = _invoke("compare", branch, main, "--database", db, "-o", "yaml")
    assert back.exit_code == 0, back.output
    rows = {row["label"]: row for row in yaml.safe_load(back.stdout)["rows"]}
    assert rows["answer=original"]["verdict"] == "better"


def test_compare_table_markdown_and_gate(two_runs: tuple[str, str, str]) -> None:
    db, main, branch = two_runs
    table = _invoke("compare", main, branch, "--database", db)
    assert table.exit_code == 0, table.output
    assert "20 cases in both runs, paired by case id in 3 combinations" in table.stdout
    assert "worse" in table.stdout
    assert main in table.stdout
    assert branch in table.stdout

    md = _invoke("compare", main, branch, "--database", db, "-o", "markdown")
    assert md.exit_code == 0, md.output
    lines = md.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| # |"))
    body = [line for line in lines[header + 2 :] if line.startswith("|")]
    assert len(body) == 3
    assert "**worse**" in body[-1]
    assert "answer=original" in body[-1]
    assert "| 20 |" in body[-1]

    gated = _invoke("compare", main, branch, "--database", db, "--fail-on", "worse")
    assert gated.exit_code == 1
    assert "significantly worse" in gated.stderr
    # Compared with itself, nothing is worse.
    same = _invoke("compare", main, main, "--database", db, "--fail-on", "worse", "-o", "json")
    assert same.exit_code == 0, same.output
    assert {row["verdict"] for row in json.loads(same.stdout)["rows"]} == {
        "no significant difference"
    }


def test_compare_refuses_different_primary_metrics(
    two_runs: tuple[str, str, str], tmp_path: Path
) -> None:
    db, main, _ = two_runs
    batch = yaml.safe_load((TOY / "batchtest.yaml").read_text())
    batch["metadata"]["name"] = "toy-tokens"
    batch["spec"]["primaryMetric"] = "tokens"
    batch["spec"]["repeats"] = 1
    shutil.copy(TOY / "cases.jsonl", tmp_path)  # a data set beside the manifest
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump(batch))
    run = _invoke(
        "run",
        "-f",
        str(TOY / "workflow.yaml"),
        "-f",
        str(tmp_path / "tokens.yaml"),
        "--database",
        db,
        "-q",
    )
    assert run.exit_code == 0, run.output

    refused = _invoke("compare", main, "toy-tokens", "--database", db)
    assert refused.exit_code == 2
    assert "different primary metrics: 'correct' (base) and 'tokens' (candidate)" in (
        refused.stderr
    )
    assert "--metric" in refused.stderr
    # The fix it names works: a metric both runs record.
    chosen = _invoke(
        "compare", main, "toy-tokens", "--database", db, "--metric", "correct", "-o", "json"
    )
    assert chosen.exit_code == 0, chosen.output
    data = json.loads(chosen.stdout)
    assert data["metric"] == "correct"
    assert data["pairedCases"] == 20
    assert {row["verdict"] for row in data["rows"]} == {"no significant difference"}

    missing = _invoke("compare", main, "toy-tokens", "--database", db, "--metric", "nope")
    assert missing.exit_code == 2
    assert "has no metric 'nope'" in missing.stderr
    unknown = _invoke("compare", main, "no-such-batch", "--database", db)
    assert unknown.exit_code == 2
    assert "no stored run is 'no-such-batch'" in unknown.stderr


def _described(run: str) -> ComparedRun:
    return ComparedRun(
        run=run,
        batch_test=f"default/{run}",
        status="succeeded",
        created_at=datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
        cases=0,
        combinations=0,
    )


def _compare(base: MeasuredRun, candidate: MeasuredRun) -> Any:
    return compare_measured(
        base,
        candidate,
        metric="m",
        higher_is_better=True,
        base_run=_described("a"),
        candidate_run=_described("b"),
    )


X = (("node", "x"),)
Y = (("node", "y"),)
Z = (("node", "z"),)


def test_what_only_one_run_has_is_named_not_compared() -> None:
    base = MeasuredRun({X: {"c1": 0.1, "c2": 0.2, "c3": 0.3, "gone": 1.0}, Y: {"c1": 1.0}})
    candidate = MeasuredRun(
        {X: {"c1": 0.5, "c2": 0.7, "c3": 0.6, "new1": 0.0, "new2": 0.0}, Z: {"c1": 0.0}}
    )
    comparison = _compare(base, candidate)
    assert [row.label for row in comparison.rows] == ["node=x"]
    [row] = comparison.rows
    assert row.delta.n == 3
    assert row.delta.mean == pytest.approx(0.4)
    assert row.unpaired == 3
    assert row.base.value == pytest.approx(0.2)  # over the paired cases only
    assert row.candidate.value == pytest.approx(0.6)
    assert comparison.paired_cases == 3
    assert comparison.only_in_base.case_ids == ["gone"]
    assert comparison.only_in_base.combinations == ["node=y"]
    assert comparison.only_in_candidate.cases == 2
    assert comparison.only_in_candidate.combinations == ["node=z"]


def test_nothing_in_common_is_refused() -> None:
    with pytest.raises(WtbError, match="no combination in common") as caught:
        _compare(MeasuredRun({X: {"c1": 1.0}}), MeasuredRun({Y: {"c1": 1.0}}))
    assert caught.value.fix
    with pytest.raises(WtbError, match="no case with a value of 'm' in common") as caught:
        _compare(MeasuredRun({X: {"c1": 1.0}}), MeasuredRun({X: {"c2": 1.0}}))
    assert "same data set" in caught.value.fix


def test_one_pair_is_insufficient_data() -> None:
    comparison = _compare(
        MeasuredRun({X: {"c1": 0.0}, Y: {"c1": 0.0, "c2": 0.0, "c3": 0.1}}),
        MeasuredRun({X: {"c1": 1.0}, Y: {"c1": 1.0, "c2": 0.9, "c3": 1.0}}),
    )
    rows = {row.label: row for row in comparison.rows}
    assert rows["node=x"].verdict == "insufficient data"
    assert rows["node=x"].delta.n == 1
    assert rows["node=y"].verdict == "better"


def _variant_run(tmp_path: Path, db: str, name: str, cases: list[dict[str, Any]]) -> str:
    """The toy BatchTest as `name`, one repeat, over `cases`; its run key."""
    batch = yaml.safe_load((TOY / "batchtest.yaml").read_text())
    batch["metadata"]["name"] = name
    batch["spec"]["repeats"] = 1
    batch["spec"]["dataset"] = {"cases": cases}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(batch))
    data = _run(TOY / "workflow.yaml", db, "-f", str(tmp_path / f"{name}.yaml"))
    return str(data["run"])


def test_cases_in_one_run_only_and_changed_cases(
    two_runs: tuple[str, str, str], tmp_path: Path
) -> None:
    db, main, _ = two_runs
    rows = [json.loads(line) for line in (TOY / "cases.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows][:1] == ["q00"]
    rows[0]["inputs"]["question"] = "  Something else "
    rows[0]["expected"]["answer"] = "something else"
    edited = [*rows[:-1], {"id": "new", "inputs": {"question": "n"}, "expected": {"answer": "n"}}]
    candidate = _variant_run(tmp_path, db, "toy-edited", edited)

    result = _invoke("compare", main, candidate, "--database", db, "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["pairedCases"] == 19
    assert data["onlyInBase"]["caseIds"] == [rows[-1]["id"]]
    assert data["onlyInCandidate"] == {"cases": 1, "caseIds": ["new"], "combinations": []}
    assert data["changedCases"]["caseIds"] == ["q00"]
    assert {row["delta"]["n"] for row in data["rows"]} == {19}
    assert {row["unpaired"] for row in data["rows"]} == {2}
    table = _invoke("compare", main, candidate, "--database", db)
    assert "only in base, not compared: 1 case (q19)" in table.stdout
    assert "only in candidate, not compared: 1 case (new)" in table.stdout
    assert "same id but other inputs or expected values" in table.stdout

    other_ids = [
        {"id": f"x{i}", "inputs": {"question": f"q{i}"}, "expected": {"answer": f"q{i}"}}
        for i in range(3)
    ]
    disjoint = _variant_run(tmp_path, db, "toy-disjoint", other_ids)
    refused = _invoke("compare", main, disjoint, "--database", db)
    assert refused.exit_code == 2
    assert "no case with a value of 'correct' in common" in refused.stderr
    assert "fix: compare runs over the same data set" in refused.stderr
