"""Reruns are honest and cheap: code fingerprints, reuse of results across runs of one
BatchTest, re-scoring with changed evaluators, `--rerun`, smoke runs, and the driver's
refusal to resume a run with other code. Real LangGraph, real SQLite (and PostgreSQL, with
PgBouncer, for the store's part); the fixture workflow (tests/fixtures/reruns) is copied
so that each test can edit its code, and counts its node calls in a file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy import select

from wtb.cli.main import cli
from wtb.pipeline.drive import CodeChangedError, _same_code, drive
from wtb.runs.spec import RunSpec
from wtb.storage import ResultStore
from wtb.storage.schema import attempts, batch_runs, cells

FIXTURE = Path(__file__).parent / "fixtures" / "reruns"
PACKAGE = "rerunflow"


def _forget_modules() -> None:
    """Drop the fixture's modules, so the next run imports the code as edited."""
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def _workflow(**variants: str) -> dict[str, Any]:
    return {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "echo"},
        "spec": {
            "graph": {"factory": "rerunflow.graph:build"},
            "variants": {
                "answer": [
                    {"name": name, "path": path}
                    for name, path in (
                        variants
                        or {
                            "shout": "rerunflow.variants.shout:answer",
                            "echo": "rerunflow.variants.echo:answer",
                        }
                    ).items()
                ]
            },
        },
    }


def _batch(
    cases: int = 3, variants: tuple[str, ...] = ("original", "shout", "echo"), **spec: Any
) -> dict[str, Any]:
    namespace = spec.pop("namespace", None)
    return {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "BatchTest",
        "metadata": {"name": "bench", **({"namespace": namespace} if namespace else {})},
        "spec": {
            "workflowRef": {"name": "echo"},
            "matrix": {"answer": list(variants)},
            "dataset": {
                "cases": [
                    {
                        "id": f"c{i}",
                        "inputs": {"question": f" Q{i} "},
                        "expected": {"answer": f"q{i}"},
                    }
                    for i in range(cases)
                ]
            },
            "concurrency": 2,
            "evaluators": [
                {"name": "correct", "type": "exactMatch", "output": "answer", "expected": "answer"}
            ],
            "primaryMetric": "correct",
            **spec,
        },
    }


class Bench:
    """A copy of the fixture project, its manifests, and `wtb run` on it."""

    def __init__(self, root: Path, database: str) -> None:
        self.root = root
        self.database = database
        shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("__pycache__"))
        self.manifest = root / "bench.yaml"
        self.write(_workflow(), _batch())

    def write(self, workflow: dict[str, Any], *batches: dict[str, Any]) -> None:
        self.manifest.write_text(yaml.safe_dump_all([workflow, *batches]))

    def edit(self, relative: str, old: str, new: str) -> None:
        path = self.root / PACKAGE / relative
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    def run(self, *args: str, output: str = "json", code: int = 0) -> Result:
        """`wtb run` of the fixture; `code` is the exit code expected (4: cells failed)."""
        _forget_modules()
        result = CliRunner().invoke(
            cli,
            ["run", "-f", str(self.manifest), "--database", self.database, "-o", output, *args],
            catch_exceptions=False,
        )
        assert result.exit_code == code, result.output
        return result

    def data(self, *args: str, code: int = 0) -> dict[str, Any]:
        """The JSON document of the run (one BatchTest)."""
        (document,) = json.loads(self.run(*args, code=code).stdout)
        assert isinstance(document, dict)
        return document

    def calls(self) -> list[str]:
        """The node calls since the last look, sorted."""
        log = self.root / "calls.log"
        if not log.exists():
            return []
        lines = sorted(log.read_text().splitlines())
        log.unlink()
        return lines


@pytest.fixture
def fresh_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Edited files must be read again: no bytecode cache to go stale within a second.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    _forget_modules()
    yield
    _forget_modules()


@pytest.fixture
def bench(tmp_path: Path, fresh_modules: None) -> Bench:
    return Bench(tmp_path / "project", f"sqlite:///{tmp_path / 'wtb.db'}")


def _cells(database: str, run_key: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(variant, case) -> the cell's row, for the run."""
    with ResultStore.open(database) as store, store.engine.connect() as conn:
        run_id = conn.execute(
            select(batch_runs.c.id).where(batch_runs.c.run_key == run_key)
        ).scalar_one()
        rows = conn.execute(select(cells).where(cells.c.run_id == run_id)).mappings()
        return {(r["combination"]["answer"], r["case_id"]): dict(r) for r in rows}


def _run_id(database: str, run_key: str) -> int:
    with ResultStore.open(database) as store:
        found = store.get_run(run_key)
        assert found is not None
        return found.id


def test_a_changed_variant_reruns_only_its_cells(
    tmp_path: Path, store_url: str, fresh_modules: None
) -> None:
    bench = Bench(tmp_path / "project", store_url)
    first = bench.data()
    assert first["progress"]["done"] == 9
    assert len(bench.calls()) == 9

    bench.edit("variants/shout.py", ".upper()}", ".upper() + '!'}")
    second = bench.data()
    assert second["run"] != first["run"]
    assert bench.calls() == ["shout q0", "shout q1", "shout q2"]
    assert first["progress"]["reused"] == 0
    assert second["progress"] == {**first["progress"], "succeeded": 9, "reused": 6}
    rows = _cells(store_url, second["run"])
    first_id = _run_id(store_url, first["run"])
    assert {k for k, r in rows.items() if r["reused_from"] is None} == {
        ("shout", f"c{i}") for i in range(3)
    }
    assert {r["reused_from"] for k, r in rows.items() if k[0] != "shout"} == {first_id}
    assert rows[("shout", "c0")]["output"]["answer"] == "Q0!"

    # A third version: the unchanged results are reused from the run that first recorded
    # them (transitively), and their attempts are found there.
    bench.edit("variants/shout.py", "+ '!'}", "+ '?'}")
    third = bench.data()
    assert bench.calls() == ["shout q0", "shout q1", "shout q2"]
    rows = _cells(store_url, third["run"])
    assert {r["reused_from"] for k, r in rows.items() if k[0] != "shout"} == {first_id}
    with ResultStore.open(store_url) as store:
        third_id = _run_id(store_url, third["run"])
        [attempt] = store.attempts(third_id, rows[("echo", "c1")]["cell_key"])
        assert attempt.number == 1
        span = store.reused_span(third_id)
        assert span.cells == 6
        assert span.first is not None
        assert span.first.tzinfo is not None
        assert span.first == span.last  # all first recorded in the first run
        roots = store.root_run_ids(third_id)
        assert len(roots) == 9
        assert all(len(r) == 1 for r in roots.values())
        # Exactly once: filling the run again copies nothing.
        assert (
            store.copy_cells(third_id, [r["id"] for r in _cells(store_url, first["run"]).values()])
            == []
        )


def test_a_changed_helper_of_the_graph_reruns_every_cell(bench: Bench) -> None:
    bench.data()
    bench.calls()
    bench.edit("helpers.py", ".lower()", ".lower().replace('  ', ' ')")
    bench.data()
    assert len(bench.calls()) == 9


def test_a_new_variant_or_case_runs_only_the_new_cells(bench: Bench) -> None:
    bench.write(_workflow(), _batch(cases=2, variants=("original", "shout")))
    bench.data()
    assert len(bench.calls()) == 4
    bench.write(_workflow(), _batch(cases=3))
    data = bench.data()
    assert data["progress"]["done"] == 9
    assert bench.calls() == ["answer q2", "echo q0", "echo q1", "echo q2", "shout q2"]


def test_changed_limits_rerun_nothing(bench: Bench) -> None:
    first = bench.data()
    bench.calls()
    bench.write(
        _workflow(),
        _batch(timeoutSeconds=12.5, concurrency=3, retry={"maxAttempts": 4}),
    )
    again = bench.data()
    assert again["run"] == first["run"]
    assert bench.calls() == []


def test_a_changed_evaluator_rescores_without_running_the_graph(bench: Bench) -> None:
    first = bench.data()
    bench.calls()
    rows = {r["label"]: r for r in first["matrix"]["rows"]}
    assert rows["answer=shout"]["metrics"]["correct"]["value"] == 0.0
    relaxed = [
        {
            "name": "correct",
            "type": "exactMatch",
            "output": "answer",
            "expected": "answer",
            "ignoreCase": True,
        }
    ]
    bench.write(_workflow(), _batch(evaluators=relaxed))
    second = bench.data()
    assert second["run"] != first["run"]
    assert bench.calls() == []
    rows = {r["label"]: r for r in second["matrix"]["rows"]}
    assert rows["answer=shout"]["metrics"]["correct"]["value"] == 1.0
    assert all(r["reused_from"] is not None for r in _cells(bench.database, second["run"]).values())

    # A changed `expected` is re-scored too: it is not part of a cell's identity.
    changed = _batch(evaluators=relaxed)
    changed["spec"]["dataset"]["cases"][0]["expected"] = {"answer": "nope"}
    bench.write(_workflow(), changed)
    third = bench.data()
    assert bench.calls() == []
    rows = {r["label"]: r for r in third["matrix"]["rows"]}
    assert rows["answer=original"]["metrics"]["correct"]["value"] == pytest.approx(2 / 3)

    # An evaluator of the final state cannot be scored from the stored output: it runs.
    state = [
        {"name": "correct", "type": "exactMatch", "output": "$state.text", "expected": "answer"}
    ]
    bench.write(_workflow(), _batch(evaluators=state))
    bench.data()
    assert len(bench.calls()) == 9


def test_rerun_failed_keeps_the_attempt_history(bench: Bench) -> None:
    flaky = bench.root / PACKAGE / "variants" / "echo.py"
    flaky.write_text(
        flaky.read_text()
        .replace(
            '    called("echo", state["text"])\n',
            '    called("echo", state["text"])\n'
            "    if (LOG.parent / 'fail.flag').exists():\n"
            "        raise RuntimeError('flag set')\n",
        )
        .replace("from rerunflow.calls import called", "from rerunflow.calls import LOG, called")
    )
    (bench.root / "fail.flag").write_text("")
    first = bench.data(code=4)
    assert first["progress"]["failed"] == 3
    bench.calls()
    (bench.root / "fail.flag").unlink()
    # Failed cells are not run again by themselves: the run is the same, and complete.
    assert bench.data(code=4)["progress"]["failed"] == 3
    assert bench.calls() == []

    table = bench.run("--rerun", "failed", output="table")
    assert "--rerun failed: 3 cells" in table.stderr
    assert "3 cells run" in table.stderr
    assert bench.calls() == ["echo q0", "echo q1", "echo q2"]
    rows = _cells(bench.database, first["run"])
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    assert rows[("echo", "c0")]["attempts"] == 2
    with ResultStore.open(bench.database) as store:
        run_id = _run_id(bench.database, first["run"])
        history = store.attempts(run_id, rows[("echo", "c0")]["cell_key"])
        assert [(a.number, a.status) for a in history] == [(1, "failed"), (2, "succeeded")]
        assert store.attempts(run_id, rows[("shout", "c0")]["cell_key"])[0].number == 1

    bench.run("--rerun", "all")
    assert len(bench.calls()) == 9
    with ResultStore.open(bench.database) as store, store.engine.connect() as conn:
        numbers = conn.execute(
            select(attempts.c.number)
            .where(attempts.c.cell_key == rows[("echo", "c0")]["cell_key"])
            .order_by(attempts.c.number)
        ).scalars()
        assert list(numbers) == [1, 2, 3]


def test_the_summary_says_what_was_reused_and_from_when(bench: Bench) -> None:
    bench.run()
    bench.edit("variants/echo.py", '"answer": state["text"]}', '"answer": state["text"] + ""}')
    table = bench.run(output="table")
    assert "3 cells run in " in table.stderr
    assert "6 reused from runs of 20" in table.stderr
    assert "0 failed" in table.stderr


def test_smoke_runs_are_runs_of_their_own(bench: Bench) -> None:
    smoke = bench.data("--limit", "1")
    assert smoke["run"].endswith("-smoke")
    assert smoke["progress"]["total"] == 3
    assert bench.calls() == ["answer q0", "echo q0", "shout q0"]
    picked = bench.data("--cases", "c2,c1")
    assert picked["run"].endswith("-smoke")
    assert picked["run"] != smoke["run"]
    assert picked["progress"]["total"] == 6
    assert len(bench.calls()) == 6
    full = bench.data()
    assert not full["run"].endswith("-smoke")
    assert full["progress"]["done"] == 9
    assert bench.calls() == []  # every cell was run by a smoke run already
    table = CliRunner().invoke(
        cli, ["run", "-f", str(bench.manifest), "--database", bench.database, "--cases", "zz"]
    )
    assert table.exit_code == 2
    assert "no case 'zz'" in table.output


def test_namespaces_never_share_results(
    tmp_path: Path, store_url: str, fresh_modules: None
) -> None:
    bench = Bench(tmp_path / "project", store_url)
    for namespace in ("team-a", "team-b"):
        workflow = _workflow()
        workflow["metadata"]["namespace"] = namespace
        bench.write(workflow, _batch(namespace=namespace))
        if namespace == "team-a":
            bench.data()
            assert len(bench.calls()) == 9
    other = bench.data()
    assert len(bench.calls()) == 9
    assert all(r["reused_from"] is None for r in _cells(store_url, other["run"]).values())


def test_the_driver_refuses_a_run_planned_with_other_code(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = bench.data()["run"]
    monkeypatch.chdir(bench.root)
    monkeypatch.syspath_prepend(str(bench.root))
    with ResultStore.open(bench.database) as store:
        run = store.get_run(key)
        assert run is not None
        assert run.code_fingerprint is not None
        job = RunSpec.from_record(run.spec)
        _forget_modules()
        assert _same_code(store, run, job).code == run.code_fingerprint
        store.forget_cells(run.id, None)  # begun, not finished

    bench.edit("variants/echo.py", '"answer": state["text"]}', '"answer": state["text"] + ""}')
    _forget_modules()
    with pytest.raises(CodeChangedError, match="planned with other code") as refused:
        drive(key, database_url=bench.database, ray_address=None)
    assert not refused.value.retryable
    with ResultStore.open(bench.database) as store:
        stopped = store.get_run(key)
        assert stopped is not None
        assert stopped.status == "failed"
        assert "planned with other code" in (stopped.error or "")


def test_a_driver_records_the_code_it_plans_an_operator_run_with(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wtb.api.batchtest import BatchTest
    from wtb.api.workflow import Workflow
    from wtb.pipeline.prepare import plan_recorded_run
    from wtb.runs.keys import generation_run_key
    from wtb.runs.record import record_unplanned_run

    documents = list(yaml.safe_load_all(bench.manifest.read_text()))
    workflow = Workflow.model_validate(documents[0])
    body = documents[1]
    body["metadata"].update(uid="0123456789abcdef", generation=1)
    batch = BatchTest.model_validate(body)
    monkeypatch.syspath_prepend(str(bench.root))
    key = generation_run_key("default", "bench", "0123456789abcdef", 1)
    with ResultStore.open(bench.database) as store:
        run = record_unplanned_run(store, batch, workflow, run_key=key)
        assert run.code_fingerprint is None
        planned = plan_recorded_run(store, run, base_dir=bench.root, python_path=())
        assert planned.code_fingerprint is not None
        job = RunSpec.from_record(planned.spec)
        assert _same_code(store, planned, job).code == planned.code_fingerprint


def test_fingerprints_are_the_same_in_another_process(bench: Bench) -> None:
    code = (
        "import sys, yaml; sys.path.insert(0, sys.argv[1]);"
        "from wtb.manifests import load_manifests;"
        "from wtb.pipeline.prepare import prepare;"
        "m = load_manifests([sys.argv[2]]); bt, src = m.batchtests[0];"
        "wf, _ = m.workflow_for(bt, src);"
        "p = prepare(bt, wf, base_dir=src.base_dir, where='b', workflow_where='w');"
        "print(p.fingerprinter.code, p.run_info.run_key)"
    )
    moved = bench.root.parent / "elsewhere"
    shutil.copytree(bench.root, moved)
    prints = {
        subprocess.run(
            [sys.executable, "-c", code, str(root), str(root / "bench.yaml")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for root in (bench.root, moved)
    }
    assert len(prints) == 1
    fingerprint, key = prints.pop().split()
    data = bench.data()
    assert data["run"] == key
    assert len(fingerprint) == 64
