"""The batch driver on a run the operator recorded without a data set: it plans the run in
the workflow's image (data set relative to its working directory), then runs it; a mistake
found while planning fails the run with the message, and the driver exits 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.ray_head import RayHead, ray_environment
from toybatch import TOY, stored_batchtest
from wtb.api.batchtest import BatchTest
from wtb.api.workflow import Workflow
from wtb.errors import ExitCode
from wtb.kube.status import run_status
from wtb.runs.keys import generation_run_key
from wtb.runs.record import is_planned, record_unplanned_run
from wtb.storage import ResultStore
from wtb.storage.records import RunRecord

pytestmark = [pytest.mark.ray, pytest.mark.postgres, pytest.mark.slow]

DRIVER_SECONDS = 180.0
UID = "9f8e7d6c-0000-1111-2222-333344445555"


def _workflow(variants: list[dict[str, str]]) -> Workflow:
    body = yaml.safe_load((TOY / "workflow.yaml").read_text())
    body["spec"]["variants"] = {"answer": variants}
    return Workflow.model_validate(body, by_alias=True)


def _batchtest(variants: list[str]) -> BatchTest:
    """As the API server stores it: the CRD's defaults filled in (ignoreCase, strip)."""
    defaults: dict[str, Any] = {"ignoreCase": False, "strip": False}
    return stored_batchtest(
        name="toy-answers",
        namespace=None,
        uid=UID,
        matrix={"answer": ["original", *variants]},
        concurrency=4,
        evaluators=[
            {
                "name": "correct",
                "type": "exactMatch",
                "output": "answer",
                "expected": "answer",
                **defaults,
            },
            {"name": "latency", "type": "latency", **defaults},
        ],
    )


def _record(url: str, batch: BatchTest, workflow: Workflow) -> RunRecord:
    key = generation_run_key("default", batch.metadata.name, UID, 1)
    with ResultStore.open(url) as store:
        run = record_unplanned_run(store, batch, workflow, run_key=key)
    assert not is_planned(run)
    return run


def _image_dir(tmp_path: Path) -> Path:
    """The working directory of the workflow's image: the data set beside the code."""
    image = tmp_path / "image"
    image.mkdir()
    shutil.copy(TOY / "cases.jsonl", image / "cases.jsonl")
    return image


def _drive(head: RayHead, url: str, run: RunRecord, cwd: Path) -> tuple[int, str]:
    env = ray_environment(
        {"WTB_DATABASE_URL": url, "PYTHONPATH": str(TOY), "WTB_FLUSH_SECONDS": "0.2"}
    )
    done = subprocess.run(
        [sys.executable, "-m", "wtb.driver", "--run", run.run_key, "--ray-address", head.address],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=DRIVER_SECONDS,
        check=False,
    )
    return done.returncode, done.stdout


def test_the_driver_plans_an_unplanned_run_then_completes_it(
    ray_head: RayHead, pgbouncer_url: str, tmp_path: Path
) -> None:
    workflow = _workflow([{"name": "reversed", "path": "toyflow.graph:answer_reversed"}])
    run = _record(pgbouncer_url, _batchtest(["reversed"]), workflow)
    code, out = _drive(ray_head, pgbouncer_url, run, _image_dir(tmp_path))
    assert code == 0, out
    assert "planned, 40 cells" in out
    assert "40/40 recorded, 0 failed" in out
    with ResultStore.open(pgbouncer_url, migrate=False) as store:
        done = store.get_run(run.run_key)
        assert done is not None
        assert (done.id, done.status, done.total_cells) == (run.id, "succeeded", 40)
        assert is_planned(done)
        cells = list(store.iter_cells(run.id))
        assert len({c.cell_key for c in cells}) == len(cells) == 40
        assert {c.case_id for c in cells} == {f"q{i:02d}" for i in range(20)}
        status = run_status(store, done, max_rows=10)
    assert status.progress == "40/40"
    assert status.matrix is not None
    assert status.matrix.combinations == 2
    assert [sorted(r.metrics) for r in status.matrix.rows] == [["correct", "latency"]] * 2


def test_a_variant_that_does_not_import_fails_the_run_with_the_field(
    ray_head: RayHead, pgbouncer_url: str, tmp_path: Path
) -> None:
    workflow = _workflow([{"name": "ghost", "path": "toyflow.missing:answer"}])
    run = _record(pgbouncer_url, _batchtest(["ghost"]), workflow)
    code, out = _drive(ray_head, pgbouncer_url, run, _image_dir(tmp_path))
    assert code == ExitCode.USAGE, out
    assert "spec.variants.answer[0].path" in out
    with ResultStore.open(pgbouncer_url, migrate=False) as store:
        failed = store.get_run(run.run_key)
        assert failed is not None
        assert failed.status == "failed"
        assert failed.error is not None
        assert "spec.variants.answer[0].path" in failed.error
        assert "no module named 'toyflow.missing'" in failed.error
        assert not is_planned(failed)
        assert list(store.iter_cells(run.id)) == []
