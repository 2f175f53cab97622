"""The Ray runner's own behaviour on a real Ray head: parity with the inline runner, overlap,
back-pressure, cells that block their actors, and workers lost under their cells. What
every runner promises is in test_runner_conformance."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.ray_head import RayHead, cell_actor_pids, start_ray_node
from services.support import wait_until
from toybatch import TOY, toy_job
from wtb import events
from wtb.comparison.stored import matrix_for_run
from wtb.domain import WORKER_LOST, WORKER_STOPPED, Cell, CellResult
from wtb.errors import ClusterError
from wtb.events import EventBus
from wtb.manifests import load_manifests
from wtb.pipeline.execute import run_batch
from wtb.pipeline.prepare import prepare
from wtb.plan import build_plan
from wtb.runners import InlineRunner, Runner
from wtb.runners.ray_runner import MAX_WORKER_LOSSES, RayRunner
from wtb.runs.spec import RunSpec
from wtb.storage import ResultStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _toy_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOY))


def _job(matrix: dict[str, list[str]], questions: list[str], **spec: Any) -> RunSpec:
    """A toy run with short backoffs (the driver waits them out itself)."""
    return toy_job(
        matrix, questions, **{"retry": {"backoffSeconds": 0.05, "maxBackoffSeconds": 0.2}, **spec}
    )


def _run(job: RunSpec, bus: EventBus | None = None, **runner: Any) -> list[CellResult]:
    plan = build_plan(job.batch, job.cases)
    return list(RayRunner(**runner).run(job, plan.iter_cells(), bus or EventBus()))


def _comparable(matrix: Any) -> dict[str, Any]:
    """The matrix without what timing decides (latencies, node times)."""
    rows = {}
    for row in matrix.model_dump(mode="json")["rows"]:
        row.pop("latency_ms")
        row["metrics"].pop("latency", None)
        row["nodes"] = {
            node: {k: v for k, v in figures.items() if k != "ms_p50"}
            for node, figures in sorted((row.get("nodes") or {}).items())
        }
        rows[row["label"]] = row
    return rows


def test_parity_with_the_inline_runner(ray_cluster: RayHead, tmp_path: Path) -> None:
    """The seed's ParityChecker: the same batch, inline and on Ray, gives the same cells,
    the same outputs (the toy graph is deterministic) and the same matrix."""
    manifests = load_manifests([str(TOY)])
    ((batch, source),) = manifests.batchtests
    workflow, _ = manifests.workflow_for(batch, source)
    prepared = prepare(
        batch,
        workflow,
        base_dir=source.base_dir,
        where="toy",
        workflow_where="toy",
        python_path=(str(TOY),),
    )
    outcomes = {}
    runners: list[tuple[str, Runner]] = [("inline", InlineRunner()), ("ray", RayRunner())]
    for name, runner in runners:
        with ResultStore.open(f"sqlite:///{tmp_path / name}.db") as store:
            outcome = run_batch(prepared, store, runner, flush_every=50)
            cells = {
                c.cell_key: (
                    c.status,
                    c.output,
                    {k: v for k, v in c.metrics.items() if k != "latency"},
                    c.tokens,
                    c.cost,
                )
                for c in store.iter_cells(outcome.run_id)
            }
            matrix = matrix_for_run(store, outcome.run_id, batch.spec, prepared.plan.baseline)
            outcomes[name] = (cells, _comparable(matrix))
    inline_cells, inline_matrix = outcomes["inline"]
    ray_cells, ray_matrix = outcomes["ray"]
    assert len(inline_cells) == prepared.plan.total
    assert ray_cells == inline_cells
    assert ray_matrix == inline_matrix


def _peak_overlap(results: list[CellResult]) -> int:
    edges: list[tuple[float, int]] = []
    for r in results:
        assert r.output is not None
        stamp = next(t for t in r.output["trail"] if t.startswith("stamped:"))
        _, start, end = stamp.split(":")
        edges += [(float(start), 1), (float(end), -1)]
    active = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        active += step
        peak = max(peak, active)
    return peak


def test_async_nodes_overlap_up_to_the_concurrency_limit(ray_cluster: RayHead) -> None:
    job = _job({"lookup": ["stamped"]}, [f"q{i}" for i in range(96)], concurrency=16)
    results = _run(job, actors=2)
    assert len(results) == 96
    assert all(r.status == "succeeded" for r in results)
    peak = _peak_overlap(results)
    # 16 slots over 2 actors: waits overlap across both processes, never beyond the limit.
    assert 9 <= peak <= 16


def test_cells_are_pulled_as_chunks_come_back(ray_cluster: RayHead) -> None:
    """Back-pressure: the plan is read only as results return. With 50 ms cells and 3 slots
    per actor, a chunk holds about 3 cells, and each actor has at most 2 chunks out."""
    job = _job({"lookup": ["stamped"]}, [f"q{i}" for i in range(150)], concurrency=6)
    plan = build_plan(job.batch, job.cases)
    pulled = 0

    def source() -> Iterator[Cell]:
        nonlocal pulled
        for cell in plan.iter_cells():
            pulled += 1
            yield cell

    yielded = 0
    ahead = 0
    for _ in RayRunner(actors=2).run(job, source(), EventBus()):
        yielded += 1
        ahead = max(ahead, pulled - yielded)
    assert yielded == pulled == 150
    # 2 actors x 2 chunks x about 3 cells (a few more when a chunk's cells ran quick).
    assert ahead <= 24


@pytest.mark.parametrize("position", ["first", "last"])
def test_a_cell_blocking_its_actor_has_the_actor_stopped(
    ray_cluster: RayHead, position: str
) -> None:
    """An async node that blocks the event loop defeats the actor's own timeout: the
    driver asks the actor which cell holds the loop, records that cell as timed out and
    stops the actor; the cells that shared it run again, at no cost to their budgets."""
    others = [f"q{i}" for i in range(5)]
    questions = ["stuck", *others] if position == "first" else [*others, "stuck"]
    job = _job(
        {"lookup": ["loop_blocking"]},
        questions,
        timeoutSeconds=1,
        retry={"maxAttempts": 1},
        concurrency=6,
    )
    by_question = {
        job.case_index()[r.cell.case_id].inputs["question"].split()[-1]: r
        for r in _run(job, actors=1)
    }
    stuck = by_question.pop("stuck")
    assert stuck.status == "failed"
    assert [a.error_type for a in stuck.attempts] == ["Timeout"]
    assert "worker was stopped" in (stuck.error_message or "")
    assert all(r.status == "succeeded" for r in by_question.values())
    stopped = [r for r in by_question.values() if len(r.attempts) > 1]
    assert stopped, "the other cells shared the stopped actor"
    for r in stopped:
        assert [a.error_type for a in r.attempts] == [WORKER_STOPPED, None]


def test_cells_blocking_two_actors_at_once(ray_cluster: RayHead) -> None:
    job = _job(
        {"lookup": ["loop_blocking"]},
        ["stuck a", "stuck b", *[f"q{i}" for i in range(4)]],
        timeoutSeconds=1,
        retry={"maxAttempts": 1},
        concurrency=2,
    )
    results = _run(job, actors=2)
    assert len(results) == 6
    by_question = {job.case_index()[r.cell.case_id].inputs["question"]: r for r in results}
    stuck = [r for q, r in by_question.items() if "stuck" in q]
    assert [r.error_type for r in stuck] == ["Timeout", "Timeout"]
    assert all(r.status == "succeeded" for q, r in by_question.items() if "stuck" not in q)


def test_a_killed_worker_costs_a_retry_not_a_result(ray_cluster: RayHead) -> None:
    job = _job({"lookup": ["stamped"]}, [f"q{i}" for i in range(120)], concurrency=8)
    plan = build_plan(job.batch, job.cases)
    bus = EventBus()
    seen: list[events.Event] = []
    bus.subscribe(seen.append)
    results: list[CellResult] = []
    for result in RayRunner(actors=2).run(job, plan.iter_cells(), bus):
        results.append(result)
        if len(results) == 10:
            pids = cell_actor_pids(ray_cluster)
            assert len(pids) == 2
            os.kill(pids[0], signal.SIGKILL)
    assert sorted(r.cell.key for r in results) == sorted(c.key for c in plan.iter_cells())
    assert all(r.status == "succeeded" for r in results)
    retried = [r for r in results if len(r.attempts) > 1]
    assert retried, "the killed actor had cells in flight"
    for r in retried:
        *lost, last = r.attempts
        assert all(a.status == "transient" and a.error_type == WORKER_LOST for a in lost)
        assert "ActorDiedError" in (lost[0].error_message or "")
        assert last.status == "succeeded"
        assert [a.number for a in r.attempts] == list(range(1, len(r.attempts) + 1))
    lost_events = [
        e for e in seen if e.kind == events.CELL_ATTEMPT_FAILED and e.data["error"] == WORKER_LOST
    ]
    assert {e.subject for e in lost_events} == {r.cell.key for r in retried}


def _alive_nodes() -> list[str]:
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return [n["NodeID"] for n in nodes if n["Alive"]]


def test_a_lost_node_costs_retries_and_the_run_goes_on(ray_cluster: RayHead) -> None:
    """A second node joins; 4 actors of 1 CPU each must use both nodes. The node is killed
    mid-batch: its cells run again on the head's actors, and the run finishes without it
    (its replacements find no room, and need none)."""
    from ray.util.state import list_actors

    before = set(_alive_nodes())
    scratch = Path(tempfile.mkdtemp(prefix="wtbn"))  # Ray's socket paths must stay short
    node = start_ray_node(ray_cluster, scratch, num_cpus=2)
    node_id = ""
    try:
        wait_until(lambda: len(_alive_nodes()) == len(before) + 1, "the second node", 90)
        (node_id,) = set(_alive_nodes()) - before
        job = _job({"lookup": ["stamped"]}, [f"q{i}" for i in range(300)], concurrency=8)
        plan = build_plan(job.batch, job.cases)
        results: list[CellResult] = []
        for result in RayRunner(actors=4).run(job, plan.iter_cells(), EventBus()):
            results.append(result)
            if len(results) == 20:
                actors = list_actors(
                    address=ray_cluster.dashboard_url,
                    filters=[("class_name", "=", "CellActor"), ("state", "=", "ALIVE")],
                )
                assert sum(1 for a in actors if a.node_id == node_id) == 2
                node.kill()
    finally:
        node.kill()
        # Later tests size their actors by the cluster's CPUs: wait until it has forgotten
        # the lost node's.
        wait_until(lambda: node_id not in _alive_nodes(), "the lost node to be noticed", 90)
        shutil.rmtree(scratch, ignore_errors=True)
    assert sorted(r.cell.key for r in results) == sorted(c.key for c in plan.iter_cells())
    assert all(r.status == "succeeded" for r in results)
    lost = [r for r in results if any(a.error_type == WORKER_LOST for a in r.attempts)]
    assert lost, "the lost node's actors had cells in flight"


def test_a_cell_that_keeps_killing_its_worker_fails_in_the_end(ray_cluster: RayHead) -> None:
    job = _job(
        {"normalize": ["crash"]},
        ["crash", "a", "b", "c"],
        retry={"maxAttempts": 1, "backoffSeconds": 0},
        concurrency=2,
    )
    by_case = {r.cell.case_id: r for r in _run(job, actors=2, backoff_scale=0)}
    crash = by_case.pop("q0")
    assert crash.status == "failed"
    assert crash.error_type == WORKER_LOST
    assert all(a.error_type == WORKER_LOST for a in crash.attempts)
    # It ran alone after its first loss; MAX_WORKER_LOSSES losses alone fail it.
    assert MAX_WORKER_LOSSES <= len(crash.attempts) <= MAX_WORKER_LOSSES + 1
    assert crash.metrics["correct"] == 0.0
    # Neighbours lost their worker with it but never count it against themselves, and
    # maxAttempts 1 does not apply to lost workers: they all finished.
    assert all(r.status == "succeeded" for r in by_case.values())


def test_actors_that_cannot_import_the_workflow_are_a_clear_error(ray_cluster: RayHead) -> None:
    job = _job({"lookup": ["stamped"]}, ["a"], python_path=())
    started = time.monotonic()
    with pytest.raises(
        ClusterError, match=r"cannot run the batch.*cannot import .toyflow\.graph:build"
    ):
        _run(job)
    assert time.monotonic() - started < 120
