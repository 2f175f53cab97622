"""Failures told: the node an attempt failed in and its traceback are recorded per attempt,
failed cells are grouped per combination by (error type, node, first line), and `wtb run`
and `wtb results` show the groups (tests/fixtures/failing: nodes that raise, one inside a
subgraph, one that hangs)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from toybatch import prepare_documents
from wtb.cli.main import cli
from wtb.comparison.failures import FailureGroup, failure_groups, failure_summary
from wtb.domain import Attempt, Cell, CellResult
from wtb.kube.status import STATUS_MESSAGE, run_status
from wtb.pipeline.execute import run_batch
from wtb.pipeline.prepare import PreparedBatch
from wtb.runners import InlineRunner
from wtb.storage import ResultStore
from wtb.storage.records import RunInfo

MODES = {
    # every node sync: cells run whole on worker threads (a watchdog times them out)
    "threads": ("failflow.graph:build", "hangs"),
    # an async node: cells run on the event loop (timeouts cancel them)
    "loop": ("failflow.graph:build_async", "hangs_async"),
}
TYPE_ERROR = "_call_model() missing 1 required positional argument: 'config'"

FAILING = Path(__file__).parent / "fixtures" / "failing"

WORKFLOW: dict[str, Any] = {
    "apiVersion": "wtb.dev/v1alpha1",
    "kind": "Workflow",
    "metadata": {"name": "failing"},
    "spec": {
        "graph": {"factory": "failflow.graph:build"},
        "variants": {
            "answer": [
                {"name": "typeerror", "path": "failflow.graph:answer_typeerror"},
                {"name": "picky", "path": "failflow.graph:answer_picky"},
                {"name": "hangs", "path": "failflow.graph:answer_hangs"},
                {"name": "hangs_async", "path": "failflow.graph:answer_hangs_async"},
            ],
            "research/search": [{"name": "broken", "path": "failflow.graph:search_broken"}],
        },
    },
}


def _batch(cases: int, matrix: dict[str, list[str]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "BatchTest",
        "metadata": {"name": "failing"},
        "spec": {
            "workflowRef": {"name": "failing"},
            "matrix": matrix,
            "dataset": {
                "cases": [
                    {
                        "id": f"c{i}",
                        "inputs": {"question": f"q{i}"},
                        "expected": {"answer": f"q{i}"},
                    }
                    for i in range(cases)
                ]
            },
            "evaluators": [
                {"name": "correct", "type": "exactMatch", "output": "answer", "expected": "answer"}
            ],
            "primaryMetric": "correct",
            "concurrency": 2,
            **spec,
        },
    }


@pytest.fixture(autouse=True)
def _failing_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FAILING))


def _prepared(
    tmp_path: Path, batch: dict[str, Any], factory: str = "failflow.graph:build"
) -> PreparedBatch:
    workflow = copy.deepcopy(WORKFLOW)
    workflow["spec"]["graph"]["factory"] = factory
    return prepare_documents(
        tmp_path / "manifests.yaml", workflow, batch, python_path=(str(FAILING),)
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultStore]:
    with ResultStore.open(f"sqlite:///{tmp_path / 'wtb.db'}") as opened:
        yield opened


def _run(prepared: PreparedBatch, store: ResultStore) -> int:
    """Run the batch inline into `store`; the run's id."""
    outcome = run_batch(prepared, store, InlineRunner(None, backoff_scale=0))
    return outcome.run_id


def _cells(store: ResultStore, run_id: int) -> dict[tuple[str, str], Any]:
    """Recorded cells by (answer variant, search variant... as a label, case id)."""
    return {(",".join(v for _, v in c.combination), c.case_id): c for c in store.iter_cells(run_id)}


@pytest.mark.parametrize("mode", MODES)
def test_each_attempt_records_its_node_and_traceback(
    tmp_path: Path, store: ResultStore, mode: str
) -> None:
    factory, _ = MODES[mode]
    matrix = {"answer": ["original", "typeerror"], "research/search": ["original", "broken"]}
    run_id = _run(_prepared(tmp_path, _batch(2, matrix), factory), store)
    cells = _cells(store, run_id)
    assert len(cells) == 8

    ok = cells["original,original", "c0"]
    assert (ok.status, ok.error_node) == ("succeeded", None)
    (attempt,) = store.attempts(run_id, ok.cell_key)
    assert (attempt.node, attempt.traceback) == (None, None)

    typed = cells["typeerror,original", "c1"]
    assert (typed.status, typed.error_type, typed.error_node) == ("failed", "TypeError", "answer")
    (attempt,) = store.attempts(run_id, typed.cell_key)
    assert attempt.node == "answer"
    assert attempt.error_message == TYPE_ERROR
    assert attempt.traceback is not None
    lines = attempt.traceback.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    # the user's frame is kept whole; LangGraph's and WTB's own are folded into one line
    assert any("in answer_typeerror" in line for line in lines)
    assert any(line.startswith("  [") and "langgraph" in line for line in lines)
    assert not any("langgraph/pregel" in line for line in lines)
    assert f"TypeError: {TYPE_ERROR}" in lines

    # a subgraph's node is named by its path, and wins over the node the subgraph is in
    for variant in ("original,broken", "typeerror,broken"):
        sub = cells[variant, "c0"]
        assert (sub.error_type, sub.error_node) == ("ValueError", "research/search")
        (attempt,) = store.attempts(run_id, sub.cell_key)
        assert attempt.node == "research/search"
        assert attempt.traceback is not None
        assert "in search_broken" in attempt.traceback


@pytest.mark.parametrize("mode", MODES)
def test_a_timed_out_attempt_records_the_node_it_hung_in(
    tmp_path: Path, store: ResultStore, mode: str
) -> None:
    factory, hangs = MODES[mode]
    batch = _batch(1, {"answer": ["original", hangs]}, timeoutSeconds=0.3)
    run_id = _run(_prepared(tmp_path, batch, factory), store)
    cell = _cells(store, run_id)[hangs, "c0"]
    assert (cell.status, cell.error_type, cell.error_node) == ("failed", "Timeout", "answer")
    (attempt,) = store.attempts(run_id, cell.cell_key)
    assert (attempt.status, attempt.node, attempt.traceback) == ("timeout", "answer", None)


def test_retried_attempts_each_keep_their_node(tmp_path: Path, store: ResultStore) -> None:
    batch = _batch(
        1,
        {"answer": ["original", "typeerror"]},
        retry={"maxAttempts": 3, "transientErrors": ["TypeError"]},
    )
    run_id = _run(_prepared(tmp_path, batch), store)
    cell = _cells(store, run_id)["typeerror", "c0"]
    attempts = store.attempts(run_id, cell.cell_key)
    assert [a.status for a in attempts] == ["transient", "transient", "transient"]
    assert [a.node for a in attempts] == ["answer"] * 3
    assert all(a.traceback and TYPE_ERROR in a.traceback for a in attempts)


def test_failure_groups_count_per_combination(tmp_path: Path, store: ResultStore) -> None:
    # picky: q0 -> KeyError, q1 -> RuntimeError, others succeed; search broken: every case
    matrix = {"answer": ["original", "picky"], "research/search": ["original", "broken"]}
    run_id = _run(_prepared(tmp_path, _batch(4, matrix, repeats=2)), store)
    groups = failure_groups(store, run_id)
    by_label: dict[str, list[FailureGroup]] = {}
    for g in groups:
        by_label.setdefault(g.label, []).append(g)
    assert list(by_label) == sorted(by_label)  # combinations by label
    assert "answer=original, research/search=original" not in by_label  # no failure there

    picky = by_label["answer=picky, research/search=original"]
    assert [(g.error_type, g.node, g.message, g.count) for g in picky] == [
        ("KeyError", "answer", "'missing'", 2),
        ("RuntimeError", "answer", "picky", 2),
    ]
    key_error = picky[0]
    assert key_error.example_case == "c0"
    assert key_error.example_traceback is not None
    assert "in answer_picky" in key_error.example_traceback
    cells = {c.cell_key: c for c in store.iter_cells(run_id)}
    example = cells[key_error.example_cell]
    assert (example.case_id, example.error_type) == ("c0", "KeyError")

    # the message's first line groups; the example keeps the whole message
    broken = by_label["answer=original, research/search=broken"]
    assert [(g.message, g.count, g.node) for g in broken] == [
        (f"no index for q{i}", 2, "research/search") for i in range(4)
    ]
    assert broken[0].example_message == "no index for q0\nsecond line of the message"
    assert sum(g.count for g in groups) == 2 * 8 + 4  # two broken combinations, picky

    bounded = failure_summary(store, run_id, per_combination=1)
    assert len(bounded.groups) == 3  # one per failing combination
    assert {(o.label, o.groups, o.cells) for o in bounded.left_out} == {
        ("answer=original, research/search=broken", 3, 6),
        ("answer=picky, research/search=broken", 3, 6),
        ("answer=picky, research/search=original", 1, 2),
    }


# -- the store, on every backend ---------------------------------------------------------

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _failed(
    combo: int,
    case: int,
    *,
    error_type: str = "TypeError",
    message: str = "boom",
    node: str | None = "answer",
    status: str = "failed",
    tracebacks: tuple[str | None, ...] = ("tb",),
) -> CellResult:
    """A recorded result of combination `combo` on case `case`; its attempts' tracebacks."""
    cell = Cell(
        key=f"cell-{combo}-{case}",
        combo_key=f"combo-{combo}",
        combination=(("answer", f"v{combo}"),),
        case_id=f"case-{case}",
        repeat=0,
    )
    attempts = tuple(
        Attempt(
            number=n,
            status="transient" if n < len(tracebacks) else "failed",
            started_at=T0,
            duration_ms=1.0,
            error_type=error_type,
            error_message=message,
            node=node,
            traceback=tb,
        )
        for n, tb in enumerate(tracebacks, start=1)
    )
    return CellResult(
        cell=cell,
        status=status,  # type: ignore[arg-type]
        latency_ms=1.0,
        finished_at=T0,
        metrics={"correct": 0.0},
        error_type=error_type,
        error_message=message,
        attempts=attempts,
        error_node=node if status == "failed" else None,
    )


def _ok(combo: int, case: int) -> CellResult:
    cell = Cell(f"ok-{combo}-{case}", f"combo-{combo}", (("answer", f"v{combo}"),), f"c{case}", 0)
    attempt = Attempt(1, "succeeded", T0, 1.0)
    return CellResult(cell, "succeeded", 1.0, T0, metrics={"correct": 1.0}, attempts=(attempt,))


def test_failure_groups_in_the_database(store_url: str) -> None:
    with ResultStore.open(store_url) as store:
        run = store.begin_run(RunInfo("default/f:1", "default", "f", "d", {}, 20))
        long_tb = "x" * 20_000 + "END"
        results = [
            *(_failed(1, case, message=f"missing config\ncase {case}") for case in range(5)),
            _failed(1, 5, message="missing config", node=None),  # outside every node
            _failed(1, 6, error_type="ValueError", message="bad", node="research/search"),
            _failed(1, 7, tracebacks=("first", long_tb)),  # the last attempt's traceback
            _failed(1, 8, error_type="Interrupted", message="waiting", status="interrupted"),
            _ok(1, 9),
            *(_failed(2, case, error_type=f"E{case}", message="m") for case in range(4)),
        ]
        store.record(run.id, results)
        stored = store.get_run_by_id(run.id)
        assert stored is not None
        groups = failure_groups(store, run.id)

        first = [g for g in groups if g.label == "answer=v1"]
        assert [(g.error_type, g.node, g.message, g.count) for g in first] == [
            ("TypeError", "answer", "missing config", 5),
            ("TypeError", "answer", "boom", 1),
            ("TypeError", None, "missing config", 1),
            ("ValueError", "research/search", "bad", 1),
        ]  # the interrupted cell is no failure, the succeeded one neither
        assert first[0].example_message.startswith("missing config\ncase ")
        assert first[0].example_traceback == "tb"
        assert first[1].example_cell == "cell-1-7"
        # the store bounds tracebacks too, keeping their end
        assert first[1].example_traceback is not None
        assert first[1].example_traceback.endswith("END")
        assert len(first[1].example_traceback) == 8000

        bounded = failure_summary(store, run.id, per_combination=2)
        assert [(g.label, g.count) for g in bounded.groups] == [
            ("answer=v1", 5),
            ("answer=v1", 1),
            ("answer=v2", 1),
            ("answer=v2", 1),
        ]
        assert [(o.label, o.groups, o.cells) for o in bounded.left_out] == [
            ("answer=v1", 2, 2),
            ("answer=v2", 2, 2),
        ]
        (cell,) = [c for c in store.iter_cells(run.id) if c.cell_key == "cell-1-6"]
        assert cell.error_node == "research/search"
        attempts = store.attempts(run.id, "cell-1-7")
        assert (attempts[0].node, attempts[0].traceback) == ("answer", "first")


def test_no_failures_no_groups(store: ResultStore) -> None:
    run = store.begin_run(RunInfo("default/f:2", "default", "f", "d", {}, 1))
    store.record(run.id, [_ok(1, 0)])
    assert failure_groups(store, run.id) == []
    with pytest.raises(ValueError, match="at least 1"):
        failure_groups(store, run.id, per_combination=0)


# -- the faces: wtb run, wtb results, the BatchTest's status -----------------------------


def _manifests(tmp_path: Path, cases: int = 3) -> str:
    """Workflow and BatchTest manifests as a user writes them: `answer` original against
    typeerror (every cell fails in node answer)."""
    batch = _batch(cases, {"answer": ["original", "typeerror"]})
    batch["metadata"]["name"] = "failing-cli"
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all([WORKFLOW, batch]))
    return str(path)


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_wtb_run_tells_why_cells_failed(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    manifests = _manifests(tmp_path)
    table = _invoke("run", "-f", manifests, "--database", db, "-q")
    assert "3 failed" in table.stderr
    assert "failures: 3 failed cells" in table.stderr
    assert "answer=typeerror" in table.stderr
    assert "TypeError" in table.stderr
    assert "missing 1 required positional argument" in table.stderr
    assert re.search(r"│ c[012] +│", table.stderr)  # the example case (the first recorded)
    assert "failures" not in table.stdout  # stdout holds the matrix alone

    ran = _invoke("run", "-f", manifests, "--database", db, "-o", "json")
    assert ran.exit_code == 4  # cells failed
    (data,) = json.loads(ran.stdout)
    (group,) = data["failures"]["groups"]
    assert group["combination"] == "answer=typeerror"
    assert (group["errorType"], group["node"], group["count"]) == ("TypeError", "answer", 3)
    assert group["message"] == TYPE_ERROR
    assert group["example"]["case"] in {"c0", "c1", "c2"}
    assert "in answer_typeerror" in group["example"]["traceback"]
    assert data["failures"]["leftOut"] == []


def test_wtb_results_failures_and_the_list_of_runs(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    _invoke("run", "-f", _manifests(tmp_path), "--database", db, "-q")

    shown = _invoke("results", "failing-cli", "--failures", "--database", db)
    assert shown.exit_code == 0, shown.output
    assert "6/6 cells, 3 failed" in shown.stderr
    assert "TypeError in node answer (3 cells of answer=typeerror)" in shown.stdout
    assert "Traceback (most recent call last):" in shown.stdout
    assert f"TypeError: {TYPE_ERROR}" in shown.stdout

    (data,) = yaml.safe_load(
        _invoke("results", "failing-cli", "--failures", "--database", db, "-o", "yaml").stdout
    )
    assert data["progress"]["failed"] == 3
    assert [g["count"] for g in data["failures"]["groups"]] == [3]

    listing = _invoke("results", "--database", db)
    assert listing.exit_code == 0
    (line,) = listing.stdout.splitlines()
    assert "complete" in line
    assert "6 cells: 3 ok, 3 failed" in line
    assert "succeeded" not in line


def test_the_batchtests_status_holds_bounded_failure_groups(
    tmp_path: Path, store: ResultStore
) -> None:
    matrix = {"answer": ["original", "picky"], "research/search": ["original", "broken"]}
    run_id = _run(_prepared(tmp_path, _batch(7, matrix)), store)
    run = store.get_run_by_id(run_id)
    assert run is not None
    status = run_status(store, run, max_rows=10)
    assert status.failures is not None
    assert status.failed == 7 + 7 + 2
    per_combination: dict[str, int] = {}
    for group in status.failures:
        per_combination[group.combination] = per_combination.get(group.combination, 0) + 1
        assert len(group.message) <= STATUS_MESSAGE
    # seven groups (one per case's message) in each broken combination: five kept of each
    assert per_combination == {
        "answer=original, research/search=broken": 5,
        "answer=picky, research/search=broken": 5,
        "answer=picky, research/search=original": 2,
    }
    assert status.failure_groups_left_out == 4
    dumped = status.failures[0].model_dump(mode="json", by_alias=True)
    assert set(dumped) == {"combination", "errorType", "node", "message", "count", "exampleCase"}


def test_status_messages_are_cut(store: ResultStore) -> None:
    run = store.begin_run(RunInfo("default/f:3", "default", "f", "d", {}, 1))
    store.record(run.id, [_failed(1, 0, message="y" * 5000)])
    from wtb.kube.status import status_failures

    groups, left_out = status_failures(store, run.id)
    assert groups is not None
    assert left_out is None
    assert len(groups[0].message) == STATUS_MESSAGE
    assert groups[0].message.endswith("...")
