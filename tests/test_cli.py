"""`wtb run / results / validate` end to end: real LangGraph, a real SQLite file, real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from services.support import wait_until
from wtb.cli.main import cli
from wtb.errors import ExitCode

TOY = Path(__file__).parent / "fixtures" / "toy"
WTB = [sys.executable, "-m", "wtb"]


def _invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def _matrix(output: str) -> dict[str, Any]:
    """The one document of a run of one BatchTest: -o json always prints a list."""
    data = json.loads(output)
    assert isinstance(data, list), data
    (document,) = data
    return document  # type: ignore[no-any-return]


def _rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["label"]: row for row in data["matrix"]["rows"]}


def test_run_prints_matrix_and_resumes(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    first = _invoke("run", "-f", str(TOY), "--database", db, "-o", "json")
    assert first.exit_code == 0, first.output
    data = _matrix(first.stdout)
    assert data["progress"] == {
        "total": 120,
        "done": 120,
        "succeeded": 120,
        "failed": 0,
        "interrupted": 0,
        "reused": 0,
    }
    rows = _rows(data)
    assert rows["answer=original"]["baseline"] is True
    assert rows["answer=original"]["verdict"] == "baseline"
    assert rows["answer=reversed"]["verdict"] == "worse"
    assert rows["answer=reversed"]["metrics"]["correct"]["value"] == 0.0
    assert rows["answer=async"]["verdict"] == "no significant difference"
    assert rows["answer=async"]["metrics"]["correct"]["value"] == 1.0
    # Best first: the reversed answer is last.
    assert data["matrix"]["rows"][-1]["label"] == "answer=reversed"

    again = _invoke("run", "-f", str(TOY), "--database", db, "-o", "json")
    assert again.exit_code == 0
    assert _matrix(again.stdout)["run"] == data["run"]
    assert _matrix(again.stdout)["matrix"] == data["matrix"]
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("select count(*), count(distinct cell_key) from cells").fetchone() == (
            120,
            120,
        )
        assert conn.execute("select count(*) from batch_runs").fetchone() == (1,)
        assert conn.execute("select count(*) from attempts").fetchone() == (120,)
        audit = dict(conn.execute("select kind, count(*) from audit_log group by kind").fetchall())
    # Two runs (the second found nothing to do), every attempt of the first audited.
    assert audit == {
        "batch.started": 2,
        "batch.finished": 2,
        "cell.attempt.started": 120,
        "cell.attempt.succeeded": 120,
    }

    stored = _invoke("results", "toy-answers", "--database", db, "-o", "json")
    assert stored.exit_code == 0, stored.output
    assert _matrix(stored.stdout)["matrix"] == data["matrix"]


def test_changed_spec_is_a_new_run(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    batch = yaml.safe_load((TOY / "batchtest.yaml").read_text())
    batch["spec"]["repeats"] = 1
    shutil.copy(TOY / "cases.jsonl", tmp_path)  # a data set beside the manifest
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(batch))
    assert _invoke("run", "-f", str(TOY), "--database", db, "-q").exit_code == 0
    result = _invoke(
        "run", "-f", str(TOY / "workflow.yaml"), "-f", str(changed), "--database", db, "-o", "json"
    )
    assert result.exit_code == 0, result.output
    assert _matrix(result.stdout)["progress"]["total"] == 60
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("select count(*) from batch_runs").fetchone() == (2,)
    listing = _invoke("results", "--database", db)
    assert listing.stdout.count("default/toy-answers:") == 2


def test_table_output_and_fail_on_worse(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = _invoke("run", "-f", str(TOY), "--database", db, "--fail-on", "worse")
    assert result.exit_code == ExitCode.GATE
    assert int(ExitCode.GATE) == 1
    assert "answer=reversed" in result.stdout
    assert "worse" in result.stdout
    assert "baseline" in result.stdout
    assert "--fail-on worse: significantly worse than the baseline" in result.stderr
    assert "answer=reversed" in result.stderr
    # The footer says which interval each column has and that verdicts are Holm-adjusted.
    footer = " ".join(result.stdout.split())
    assert "intervals (95%, unadjusted, over per-case means): correct Wilson" in footer
    assert "Holm-adjusted at alpha=0.05" in footer


def _normalize_batch(tmp_path: Path, *, matrix: list[str], baseline: str, cases: int = 4) -> str:
    """The toy Workflow with its node `normalize` varied; `broken` raises in every cell."""
    wf = yaml.safe_load((TOY / "workflow.yaml").read_text())
    batch = yaml.safe_load((TOY / "batchtest.yaml").read_text())
    batch["metadata"]["name"] = "gates"
    batch["spec"]["matrix"] = {"normalize": matrix}
    batch["spec"]["baseline"] = {"normalize": baseline}
    batch["spec"]["repeats"] = 1
    batch["spec"]["dataset"] = {
        "cases": [
            {"id": f"c{i}", "inputs": {"question": f"Q {i}"}, "expected": {"answer": f"q {i}"}}
            for i in range(cases)
        ]
    }
    if not (tmp_path / "toyflow").exists():
        (tmp_path / "toyflow").symlink_to(TOY / "toyflow")
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump_all([wf, batch]))
    return str(path)


def test_failed_cells_fail_the_run_by_default(tmp_path: Path) -> None:
    path = _normalize_batch(tmp_path, matrix=["original", "broken"], baseline="original")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = _invoke("run", "-f", path, "--database", db, "-o", "json")
    assert result.exit_code == ExitCode.CELLS_FAILED, result.output
    assert int(ExitCode.CELLS_FAILED) == 4
    assert "--fail-on failed: 4 of 8 cells failed" in result.stderr
    data = _matrix(result.stdout)
    assert data["progress"]["failed"] == 4
    rows = data["matrix"]["rows"]
    # The dead variant is not compared, and not ranked above the baseline.
    assert [row["label"] for row in rows] == ["normalize=original", "normalize=broken"]
    assert rows[1]["verdict"] == "not comparable"
    assert data["matrix"]["warnings"] == []

    # Allowed: the gates listed without failed (here none but a threshold that holds).
    allowed = _invoke("run", "-f", path, "--database", db, "--fail-on", "never", "-q")
    assert allowed.exit_code == 0, allowed.output
    (dead_line,) = [line for line in allowed.stdout.splitlines() if "normalize=broken" in line]
    assert "not comparable" in dead_line
    assert dead_line.split()[1] == "-"  # no rank
    worse_only = _invoke("run", "-f", path, "--database", db, "--fail-on", "worse", "-q")
    assert worse_only.exit_code == 0, worse_only.output
    assert "4 failed, 0 interrupted cells allowed" in worse_only.stderr


def test_a_dead_baseline_fails_the_run_and_says_why(tmp_path: Path) -> None:
    path = _normalize_batch(tmp_path, matrix=["original", "broken"], baseline="broken")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = _invoke("run", "-f", path, "--database", db, "-o", "json")
    assert result.exit_code == ExitCode.CELLS_FAILED, result.output
    assert "warning: gates: the baseline normalize=broken has no successful cell" in (
        " ".join(result.stderr.split())
    )
    data = _matrix(result.stdout)
    (warning,) = data["matrix"]["warnings"]
    assert "normalize=broken has no successful cell (4 run, 4 failed)" in warning
    rows = {row["label"]: row for row in data["matrix"]["rows"]}
    assert rows["normalize=original"]["verdict"] == "not comparable"
    assert rows["normalize=original"]["delta"] is None
    assert data["matrix"]["rows"][0]["label"] == "normalize=original"  # the dead row last
    # Even with only a verdict gate, nothing can be compared: the run fails.
    worse = _invoke("run", "-f", path, "--database", db, "--fail-on", "worse", "-q")
    assert worse.exit_code == ExitCode.CELLS_FAILED, worse.output
    assert "no comparison holds" in worse.stderr
    # never: the warning still shows; the exit code is 0.
    never = _invoke("run", "-f", path, "--database", db, "--fail-on", "never", "-q")
    assert never.exit_code == 0, never.output
    assert "has no successful cell" in never.stderr
    stored = _invoke("results", "gates", "--database", db)
    assert stored.exit_code == 0, stored.output
    assert "has no successful cell" in stored.stderr


def test_metric_threshold_gate(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    failing = _invoke(
        "run", "-f", str(TOY), "--database", db, "-q", "--fail-on", "failed,correct<0.8"
    )
    assert failing.exit_code == ExitCode.GATE, failing.output
    assert "--fail-on correct<0.8: correct mean below 0.8: answer=reversed (0)" in failing.stderr
    (gate_line,) = [line for line in failing.stderr.splitlines() if "--fail-on" in line]
    assert "answer=original" not in gate_line
    # Repeatable, and both sides of a threshold: every row scores 1 or 0 here.
    passing = _invoke(
        "run",
        "-f",
        str(TOY),
        "--database",
        db,
        "-q",
        "--fail-on",
        "correct>1",
        "--fail-on",
        "failed",
    )
    assert passing.exit_code == 0, passing.output


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("sometimes", "'sometimes' is not a gate"),
        ("never,failed", "never cannot be combined"),
        ("correct<high", "is not a gate"),
    ],
)
def test_bad_fail_on_values_are_refused(tmp_path: Path, value: str, says: str) -> None:
    db = tmp_path / "r.db"
    result = _invoke("run", "-f", str(TOY), "--database", f"sqlite:///{db}", "--fail-on", value)
    assert result.exit_code == ExitCode.USAGE
    assert "Invalid value for '--fail-on'" in result.stderr
    assert says in result.stderr
    assert not db.exists()


def test_a_threshold_on_an_unknown_metric_names_the_option_and_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    result = _invoke(
        "run", "-f", str(TOY), "--database", f"sqlite:///{db}", "--fail-on", "accuracy<0.8"
    )
    assert result.exit_code == ExitCode.USAGE
    message = " ".join(result.stderr.split())
    assert (
        "--fail-on accuracy<0.8: BatchTest toy-answers has no metric 'accuracy' "
        "(its evaluators: correct, latency, tokens)" in message
    )
    assert "fix: name one of its evaluators, e.g. --fail-on 'correct<0.8'" in message
    assert not db.exists()  # refused before anything ran


def test_json_and_yaml_have_one_shape_for_one_or_two_batchtests(tmp_path: Path) -> None:
    one = _normalize_batch(tmp_path, matrix=["original"], baseline="original", cases=2)
    second = yaml.safe_load_all(Path(one).read_text())
    _, batch = list(second)
    batch["metadata"]["name"] = "gates-two"
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(batch))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    for output, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        single = load(_invoke("run", "-f", one, "--database", db, "-o", output).stdout)
        both = load(
            _invoke(
                "run", "-f", one, "-f", str(tmp_path / "two.yaml"), "--database", db, "-o", output
            ).stdout
        )
        assert [d["batchTest"] for d in single] == ["gates"]
        assert [d["batchTest"] for d in both] == ["gates", "gates-two"]
        stored = load(_invoke("results", "gates", "--database", db, "-o", output).stdout)
        assert [d["batchTest"] for d in stored] == ["gates"]


def test_validate(tmp_path: Path) -> None:
    result = _invoke("validate", "-f", str(TOY))
    assert result.exit_code == 0, result.output
    assert "ok  Workflow default/toy" in result.stdout
    assert "3 combinations x 20 cases x 2 repeats = 120 cells" in result.stdout
    assert not (tmp_path / ".wtb").exists()


def _slow_batch(tmp_path: Path, cases: int = 120) -> Path:
    manifest = {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "BatchTest",
        "metadata": {"name": "slow"},
        "spec": {
            "workflowRef": {"name": "toy"},
            "matrix": {"lookup": ["slow"]},
            "baseline": {"lookup": "slow"},
            "dataset": {
                "cases": [
                    {
                        "id": f"s{i}",
                        "inputs": {"question": f"q {i}"},
                        "expected": {"answer": f"q {i}"},
                    }
                    for i in range(cases)
                ]
            },
            "concurrency": 2,
            "evaluators": [{"name": "correct", "type": "exactMatch", "output": "answer"}],
            "primaryMetric": "correct",
        },
    }
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(manifest))
    wf = yaml.safe_load((TOY / "workflow.yaml").read_text())
    wf["spec"]["variants"]["lookup"] = [{"name": "slow", "path": "toyflow.graph:slow_lookup"}]
    (tmp_path / "toyflow").symlink_to(TOY / "toyflow")
    (tmp_path / "workflow.yaml").write_text(yaml.safe_dump(wf))
    return path


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("select count(*) from cells").fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def _interactive_signals() -> None:
    """In the child, before `wtb` starts: SIGINT as at a terminal. A suite started in the
    background (a CI job, `cmd &`) has SIGINT ignored, which children inherit, and Python
    then leaves it ignored: no Ctrl-C could reach the run."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(tmp_path: Path, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*WTB, "run", "-f", str(tmp_path), "--database", f"sqlite:///{db}", "-q"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WTB_FLUSH_EVERY": "5", "WTB_FLUSH_SECONDS": "0.1"},
        preexec_fn=_interactive_signals,  # noqa: PLW1509  (no threads touch it in the child)
    )


def _wait_for_cells(db: Path, proc: subprocess.Popen[str], at_least: int) -> None:
    def recorded() -> bool:
        assert proc.poll() is None, proc.communicate()
        return _count(db) >= at_least

    wait_until(recorded, f"{at_least} cells recorded", seconds=60)


CELLS = 300


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_killed_run_resumes_and_records_each_cell_once(tmp_path: Path, sig: signal.Signals) -> None:
    # Enough cells (about 7 s of work) that a loaded machine still signals a run in flight.
    _slow_batch(tmp_path, cases=CELLS)
    db = tmp_path / "kill.db"
    proc = _start(tmp_path, db)
    _wait_for_cells(db, proc, 10)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    partial = _count(db)
    assert 10 <= partial < CELLS
    if sig in (signal.SIGINT, signal.SIGTERM):
        # a clean stop: buffered results written, the run marked stopped, said so
        assert proc.returncode == 128 + sig
        said = "interrupted" if sig == signal.SIGINT else "terminated"
        assert f"{said}: " in err
        assert "run the same command again" in err
        with sqlite3.connect(db) as conn:
            status, error = conn.execute("select status, error from batch_runs").fetchone()
        assert status == "failed"
        assert error.startswith("stopped: ")
        assert ("SIGTERM" if sig == signal.SIGTERM else "interrupted") in error
    else:
        assert proc.returncode == -signal.SIGKILL

    again = _start(tmp_path, db)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*), count(distinct cell_key) from cells").fetchone() == (
            CELLS,
            CELLS,
        )
        succeeded = conn.execute(
            "select count(*), count(distinct cell_key) from attempts where status = 'succeeded'"
        ).fetchone()
        assert succeeded == (CELLS, CELLS)
        assert conn.execute("select status from batch_runs").fetchone() == ("succeeded",)
    assert f"{CELLS - partial} cells run" in err


def test_manifests_from_stdin_as_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOY))
    monkeypatch.chdir(tmp_path)
    workflow = yaml.safe_load((TOY / "workflow.yaml").read_text())
    batch = yaml.safe_load((TOY / "batchtest.yaml").read_text())
    batch["spec"]["dataset"] = {
        "cases": [
            {"inputs": {"question": "Hi"}, "expected": {"answer": "hi"}},
            {"inputs": {"question": "Yo!"}, "expected": {"answer": "YO!"}},
        ]
    }
    text = yaml.safe_dump_all([workflow, batch])
    result = CliRunner().invoke(
        cli,
        ["run", "-f", "-", "-o", "yaml", "--database", f"sqlite:///{tmp_path / 's.db'}"],
        input=text,
    )
    assert result.exit_code == 0, result.output
    (data,) = yaml.safe_load(result.stdout)  # one YAML document: the list of runs
    assert data["progress"]["total"] == 3 * 2 * 2
    assert {row["label"] for row in data["matrix"]["rows"]} == {
        "answer=original",
        "answer=reversed",
        "answer=async",
    }
    # Both cases lose every time: the deltas have no spread, so no t interval is faked;
    # the exact sign test over two cases cannot reach significance (p = 2 * 0.5**2).
    reversed_row = next(r for r in data["matrix"]["rows"] if r["label"] == "answer=reversed")
    assert reversed_row["verdict"] == "no significant difference"
    assert reversed_row["delta"]["mean"] == -1.0
    assert reversed_row["delta"]["pValue"] == pytest.approx(0.5)
    assert reversed_row["delta"]["low"] is None


def _without_timing(matrix: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for row in matrix["rows"]:
        kept = {k: v for k, v in row.items() if k != "latencyMs"}
        kept["metrics"] = {k: v for k, v in row["metrics"].items() if k != "latency"}
        kept["nodes"] = {
            node: {k: v for k, v in figures.items() if k != "msP50"}
            for node, figures in (row["nodes"] or {}).items()
        }
        rows.append(kept)
    return {**matrix, "rows": rows}


def test_same_results_on_every_backend(store_url: str, tmp_path: Path) -> None:
    """SQLite, PostgreSQL and PostgreSQL through PgBouncer give the same matrix."""
    reference = _invoke(
        "run", "-f", str(TOY), "--database", f"sqlite:///{tmp_path / 'ref.db'}", "-o", "json"
    )
    result = _invoke("run", "-f", str(TOY), "--database", store_url, "-o", "json")
    assert result.exit_code == 0, result.output
    data = _matrix(result.stdout)
    assert data["progress"] == {
        "total": 120,
        "done": 120,
        "succeeded": 120,
        "failed": 0,
        "interrupted": 0,
        "reused": 0,
    }
    assert _without_timing(data["matrix"]) == _without_timing(_matrix(reference.stdout)["matrix"])
    again = _invoke("results", "toy-answers", "--database", store_url, "-o", "json")
    assert _matrix(again.stdout)["matrix"] == data["matrix"]


def test_odd_text_is_recorded_on_every_backend(store_url: str, tmp_path: Path) -> None:
    """NUL characters and lone surrogates in outputs and errors do not block the store."""
    wf = yaml.safe_load((TOY / "workflow.yaml").read_text())
    wf["spec"]["variants"]["answer"].append(
        {"name": "odd", "path": "toyflow.graph:answer_odd_text"}
    )
    wf["spec"]["variants"]["normalize"].append(
        {"name": "odd", "path": "toyflow.graph:normalize_odd_error"}
    )
    batch = yaml.safe_load((TOY / "batchtest.yaml").read_text())
    batch["spec"]["matrix"] = {"answer": ["original", "odd"], "normalize": ["original", "odd"]}
    shutil.copy(TOY / "cases.jsonl", tmp_path)  # a data set beside the manifest
    (tmp_path / "toyflow").symlink_to(TOY / "toyflow")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all([wf, batch]))
    result = _invoke("run", "-f", str(tmp_path / "m.yaml"), "--database", store_url, "-o", "json")
    # Half the cells failed (by design here): the default gate fails the run.
    assert result.exit_code == ExitCode.CELLS_FAILED, result.output
    progress = _matrix(result.stdout)["progress"]
    assert progress == {
        "total": 160,
        "done": 160,
        "succeeded": 80,
        "failed": 80,
        "interrupted": 0,
        "reused": 0,
    }
