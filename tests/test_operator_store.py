"""What the operator keeps in the result store, on every backend: the run it records without
a data set, the plan a batch driver adds to it once, and the status it reads back (bounded,
however big the batch)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from services.kube import ControlPlane
from toybatch import TOY, stored_batchtest
from wtb.api._base import GROUP, VERSION, Condition
from wtb.api.batchtest import BatchTest, BatchTestStatus
from wtb.api.workflow import Workflow
from wtb.comparison.stored import matrix_for_run
from wtb.domain import Attempt, Cell, CellResult
from wtb.errors import ManifestError
from wtb.kube import conditions as cond
from wtb.kube.status import run_status
from wtb.pipeline.prepare import plan_recorded_run
from wtb.plan import Plan, build_plan
from wtb.runs.keys import generation_run_key
from wtb.runs.record import is_planned, record_unplanned_run
from wtb.runs.spec import RunSpec
from wtb.storage import ResultStore
from wtb.storage.records import RunRecord
from wtb.variant_matrix import baseline_of

UID = "0a1b2c3d-1111-2222-3333-444455556666"
STATUS_LIMIT = 64 * 1024
T0 = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
EVALUATORS = [
    {"name": "correct", "type": "exactMatch", "output": "answer", "expected": "answer"},
    {"name": "latency", "type": "latency"},
    {"name": "tokens", "type": "tokens"},
]


def _workflow(variants: dict[str, list[str]] | None = None) -> Workflow:
    """The toy workflow; `variants` adds, per node, variants named as given (all the same
    code: these tests never run a cell)."""
    body = yaml.safe_load((TOY / "workflow.yaml").read_text())
    body["metadata"]["namespace"] = "team"
    paths = {"answer": "toyflow.graph:answer_reversed", "normalize": "toyflow.graph:normalize"}
    for node, names in (variants or {}).items():
        body["spec"]["variants"][node] = [{"name": n, "path": paths[node]} for n in names]
    return Workflow.model_validate(body, by_alias=True)


# The stored toy BatchTest (tests/toybatch.py) with this module's uid and evaluators.
_batchtest = partial(stored_batchtest, uid=UID, evaluators=EVALUATORS)


def _key(generation: int = 1) -> str:
    return generation_run_key("team", "demo", UID, generation)


def _write_cases(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": f"c{i}", "inputs": {"question": f"q{i}"}, "expected": {"answer": "x"}})
        for i in range(count)
    ]
    (directory / "cases.jsonl").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture
def store(store_url: str) -> Iterator[ResultStore]:
    with ResultStore.open(store_url) as opened:
        yield opened


@pytest.fixture
def toy_on_path(monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """The toy workflow importable, as the workflow's image has it."""
    monkeypatch.syspath_prepend(str(TOY))
    return (str(TOY),)


def _plan(store: ResultStore, run: RunRecord, base_dir: Path, path: tuple[str, ...]) -> RunRecord:
    return plan_recorded_run(store, run, base_dir=base_dir, python_path=path)


# --- recording and planning -------------------------------------------------------------


def test_an_unplanned_run_is_recorded_once_per_run_key(store: ResultStore) -> None:
    batch, workflow = _batchtest(), _workflow()
    first = record_unplanned_run(store, batch, workflow, run_key=_key())
    again = record_unplanned_run(store, batch, workflow, run_key=_key())
    assert first.created
    assert not again.created
    assert again.id == first.id
    assert (again.status, again.total_cells) == ("pending", 0)
    assert (again.namespace, again.name, again.uid, again.generation) == ("team", "demo", UID, 1)
    assert not is_planned(again)
    assert set(again.spec) == {"workflow", "batchTest"}
    assert again.spec["batchTest"]["dataset"]["path"] == "cases.jsonl"
    edited = record_unplanned_run(
        store, _batchtest(generation=2, repeats=2), workflow, run_key=_key(2)
    )
    assert edited.created
    assert edited.id != first.id
    assert edited.spec["batchTest"]["repeats"] == 2
    assert [r.run_key for r in store.find_runs("team", "demo")] == [_key(2), _key()]


def test_status_of_an_unplanned_run_has_no_total(store: ResultStore) -> None:
    run = record_unplanned_run(store, _batchtest(), _workflow(), run_key=_key())
    status = run_status(store, run, max_rows=10)
    assert status.progress == "0/?"
    assert (status.total, status.completed, status.failed) == (None, 0, 0)
    assert status.best is None
    assert status.score is None
    assert status.matrix is None


def test_the_first_planner_wins(
    store: ResultStore, tmp_path: Path, toy_on_path: tuple[str, ...]
) -> None:
    run = record_unplanned_run(store, _batchtest(), _workflow(), run_key=_key())
    first = _plan(store, run, _write_cases(tmp_path / "image-a", 3), toy_on_path)
    assert is_planned(first)
    assert first.id == run.id
    assert first.total_cells == 2 * 3
    assert [c["id"] for c in first.spec["cases"]] == ["c0", "c1", "c2"]
    # A second driver with another data set (another image) gets the first one's plan.
    second = _plan(store, run, _write_cases(tmp_path / "image-b", 5), toy_on_path)
    assert second.total_cells == 6
    assert second.spec == first.spec
    stored = store.get_run(_key())
    assert stored is not None
    assert (stored.total_cells, stored.spec) == (6, first.spec)
    # Recording the run again (an operator restart) keeps the plan.
    assert is_planned(record_unplanned_run(store, _batchtest(), _workflow(), run_key=_key()))


def test_plan_run_needs_a_recorded_run_and_cells(store: ResultStore) -> None:
    assert store.plan_run("team/nobody:g1-00000000", {"cases": []}, 1) is None
    run = record_unplanned_run(store, _batchtest(), _workflow(), run_key=_key())
    with pytest.raises(ValueError, match="at least one cell"):
        store.plan_run(run.run_key, {"cases": []}, 0)
    stored = store.get_run(run.run_key)
    assert stored is not None
    assert not is_planned(stored)


def test_a_data_set_missing_from_the_image_leaves_the_run_unplanned(
    store: ResultStore, tmp_path: Path, toy_on_path: tuple[str, ...]
) -> None:
    run = record_unplanned_run(store, _batchtest(), _workflow(), run_key=_key())
    with pytest.raises(ManifestError) as refused:
        _plan(store, run, tmp_path / "empty", toy_on_path)
    assert "BatchTest team/demo: spec.dataset" in str(refused.value)
    stored = store.get_run(_key())
    assert stored is not None
    assert not is_planned(stored)
    assert stored.total_cells == 0


def test_status_of_a_planned_run_counts_from_the_store(
    store: ResultStore, tmp_path: Path, toy_on_path: tuple[str, ...]
) -> None:
    run = record_unplanned_run(store, _batchtest(), _workflow(), run_key=_key())
    planned = _plan(store, run, _write_cases(tmp_path, 3), toy_on_path)
    before = run_status(store, planned, max_rows=10)
    assert (before.progress, before.total, before.matrix) == ("0/6", 6, None)
    cells = list(_plan_of(planned).iter_cells())
    store.record(planned.id, [_result(c, correct=1.0) for c in cells[:4]])
    now = run_status(store, planned, max_rows=10)
    assert (now.progress, now.total, now.completed, now.failed) == ("4/6", 6, 4, 0)
    assert now.matrix is not None
    assert now.matrix.combinations == 2
    assert now.best in {"answer=original", "answer=reversed"}
    assert now.score is not None
    assert now.score.startswith("1")


# --- a bounded status for a big batch ---------------------------------------------------


def _plan_of(run: RunRecord) -> Plan:
    job = RunSpec.from_record(run.spec)
    return build_plan(job.batch, list(job.cases))


def _result(
    cell: Cell, *, correct: float, latency: float = 12.5, failed: bool = False
) -> CellResult:
    return CellResult(
        cell=cell,
        status="failed" if failed else "succeeded",
        latency_ms=latency,
        finished_at=T0 + timedelta(milliseconds=cell.repeat),
        output=None if failed else {"answer": "x"},
        metrics={} if failed else {"correct": correct, "latency": latency, "tokens": 7.0},
        tokens=None if failed else 7,
        cost=None if failed else 0.001,
        error_type="ValueError" if failed else None,
        error_message="boom" if failed else None,
        attempts=(
            Attempt(
                number=1,
                status="failed" if failed else "succeeded",
                started_at=T0,
                duration_ms=latency,
                error_type="ValueError" if failed else None,
                error_message="boom" if failed else None,
            ),
        ),
    )


@pytest.fixture(params=["sqlite", pytest.param("pgbouncer", marks=pytest.mark.postgres)])
def big_store(request: pytest.FixtureRequest) -> Iterator[ResultStore]:
    """SQLite and PostgreSQL through PgBouncer (the operator's path): the size does not
    depend on the backend, the aggregation queries do."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    with ResultStore.open(url) as opened:
        yield opened


def _operator_status(run: RunRecord, store: ResultStore) -> BatchTestStatus:
    """The status the operator writes for a finished run (see wtb_operator.batchtest)."""
    now = run_status(store, run, max_rows=10)
    conditions: list[Condition] = []
    done: list[tuple[str, cond.Reason]] = [
        (cond.VALIDATED, "Valid"),
        (cond.CLUSTER_READY, "ClusterReady"),
        (cond.JOB_SUBMITTED, "Submitted"),
        (cond.COMPLETE, "Succeeded"),
    ]
    for type_, reason in done:
        conditions = cond.set_condition(conditions, type_, "True", reason, "x" * 200, generation=1)
    conditions = cond.set_condition(conditions, cond.FAILED, "False", "Succeeded", generation=1)
    return BatchTestStatus(
        phase="Succeeded",
        observed_generation=1,
        run_id=run.run_key,
        ray_cluster="demo-ray",
        submission_id="wtb-0a1b2c3d-g1-1",
        job_attempts=1,
        message=f"{now.completed} cells recorded",
        total=now.total,
        completed=now.completed,
        failed=now.failed,
        progress=now.progress,
        best=now.best,
        score=now.score,
        started_at=cond.now_rfc3339(),
        finished_at=cond.now_rfc3339(),
        matrix=now.matrix,
        conditions=conditions,
    )


def _big_run(
    store: ResultStore, path: tuple[str, ...], tmp_path: Path
) -> tuple[RunRecord, BatchTest]:
    """A finished run of 200 combinations x 50 cases, whose baseline ranks near the bottom."""
    answer = ["original", *(f"answer_{i:02d}" for i in range(1, 20))]
    normalize = ["original", *(f"normalize_{i}" for i in range(1, 10))]
    batch = _batchtest(
        matrix={"answer": answer, "normalize": normalize},
        dataset={
            "cases": [
                {
                    "id": f"case-{i:02d}",
                    "inputs": {"question": f"q{i}"},
                    "expected": {"answer": "x"},
                }
                for i in range(50)
            ]
        },
    )
    workflow = _workflow({"answer": answer[1:], "normalize": normalize[1:]})
    run = record_unplanned_run(store, batch, workflow, run_key=_key())
    run = _plan(store, run, tmp_path, path)
    assert run.total_cells == 200 * 50
    plan = _plan_of(run)
    # Each combination has its own success chance; the baseline (all original) is among
    # the worst, so only the bound keeps it in status.
    rng = random.Random(11)
    chance = {c: 0.3 + 0.6 * rng.random() for c in plan.combinations}
    chance[plan.baseline] = 0.2
    results = [
        _result(
            cell,
            correct=float(rng.random() < chance[cell.combination]),
            latency=round(rng.uniform(5, 400), 2),
            failed=rng.random() < 0.02,
        )
        for cell in plan.iter_cells()
    ]
    for start in range(0, len(results), 1000):
        store.record(run.id, results[start : start + 1000])
    return run, batch


def test_status_of_200_combinations_by_50_cases_stays_under_64_kib(
    big_store: ResultStore, toy_on_path: tuple[str, ...], tmp_path: Path
) -> None:
    run, batch = _big_run(big_store, toy_on_path, tmp_path)
    status = _operator_status(run, big_store)
    body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    size = len(json.dumps(body).encode())
    assert size < STATUS_LIMIT, f"status is {size} bytes"
    matrix = status.matrix
    assert matrix is not None
    assert matrix.combinations == 200
    assert len(matrix.rows) == 10
    baselines = [row for row in matrix.rows if row.baseline]
    assert [row.label for row in baselines] == [matrix.baseline]
    assert matrix.rows[-1].baseline, "the baseline is kept in place of the tenth best"
    assert status.progress == "10000/10000"
    assert status.best == matrix.rows[0].label
    assert status.failed is not None
    assert 0 < status.failed < 1000
    # Without the bound, the matrix alone would not fit: the test measures something.
    full = matrix_for_run(big_store, run.id, batch.spec, baseline_of(batch.spec))
    assert len(full.rows) == 200
    assert len(full.model_dump_json(by_alias=True, exclude_none=True)) > STATUS_LIMIT


@pytest.mark.kube
def test_the_bounded_status_is_stored_and_served_by_the_api_server(
    kube: ControlPlane,
    kube_namespace: str,
    sqlite_url: str,
    toy_on_path: tuple[str, ...],
    tmp_path: Path,
) -> None:
    """Written through the status subresource of a real BatchTest and read back whole."""
    with ResultStore.open(sqlite_url) as store:
        run, batch = _big_run(store, toy_on_path, tmp_path)
        status = _operator_status(run, store)
    body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    manifest = batch.model_dump(mode="json", by_alias=True, exclude_none=True)
    manifest["metadata"] = {"name": "big"}
    with kube.api_client() as api:
        objects = client.CustomObjectsApi(api)
        objects.create_namespaced_custom_object(
            GROUP, VERSION, kube_namespace, "batchtests", manifest
        )
        objects.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            kube_namespace,
            "batchtests",
            "big",
            {"status": body},
            _content_type="application/merge-patch+json",
        )
        stored: dict[str, Any] = objects.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, kube_namespace, "batchtests", "big"
        )
    assert stored["status"] == body, "the API server pruned or changed part of the status"
    assert len(json.dumps(stored).encode()) < STATUS_LIMIT
