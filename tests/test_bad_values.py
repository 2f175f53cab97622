"""One bad value is one failed cell: a value the store cannot keep never fails the other
cells of its write batch, never stops the run, never shows up again on the rerun, and no
SQL parameter (user data) reaches the terminal. On SQLite and on PostgreSQL (through
PgBouncer too)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError

from test_storage import _info, _result
from toybatch import TOY, toy_batchtest
from wtb.errors import ExitCode
from wtb.events import CELL_ATTEMPT_FAILED, Event
from wtb.storage import ResultStore
from wtb.storage.schema import cells
from wtb.storage.values import (
    RESULT_REFUSED,
    TRUNCATED,
    VALUE_OUT_OF_RANGE,
    fit_for_store,
    is_truncated,
    output_size,
)

WTB = [sys.executable, "-m", "wtb"]
TOO_MANY = 2**70


def _postgres(url: str) -> bool:
    return url.startswith("postgresql")


def test_a_write_the_database_refuses_is_narrowed_to_its_cell(store_url: str) -> None:
    """Results that bypass every check (made elsewhere): the store itself narrows a refused
    batch down to the bad cells, records them failed with the reason, the rest as they are."""
    with ResultStore.open(store_url, retry_seconds=5) as store:
        run = store.begin_run(_info(total=6))
        good = [_result(0, case, 0) for case in range(4)]
        too_many = replace(_result(1, 0, 0), tokens=TOO_MANY)
        nul = replace(_result(1, 1, 0), output={"answer": "a\x00b"})  # PostgreSQL refuses it
        batch = [good[0], too_many, good[1], nul, good[2], good[3]]
        event = Event(CELL_ATTEMPT_FAILED, too_many.cell.key, {"message": "x\x00y"})
        assert store.record(run.id, batch, [event]) == 6
        stored = {c.cell_key: c for c in store.iter_cells(run.id)}
        for result in good:
            assert stored[result.cell.key].status == "succeeded"
            assert stored[result.cell.key].output == result.output
        refused = stored[too_many.cell.key]
        assert refused.status == "failed"
        assert refused.error_type == RESULT_REFUSED
        assert "the database refused this cell's result (" in (refused.error_message or "")
        assert str(TOO_MANY) not in (refused.error_message or "")  # no parameter in it
        assert refused.tokens is None
        assert store.attempts(run.id, too_many.cell.key)  # its attempts kept
        odd = stored[nul.cell.key]
        if _postgres(store_url):
            assert odd.status == "failed"
            assert odd.error_type == RESULT_REFUSED
            assert "a\x00b" not in (odd.error_message or "")
        else:  # SQLite keeps it
            assert odd.status == "succeeded"
        assert [e.kind for e in store.audit(run.id)] == [CELL_ATTEMPT_FAILED]  # kept, or noted
        # Delivered again: nothing is recorded twice.
        assert store.record(run.id, batch, []) == 0
        assert store.progress(run.id).done == 6


def test_sql_errors_never_show_their_parameters(store_url: str) -> None:
    secret = "the user's private answer"
    with (
        ResultStore.open(store_url, retry_seconds=0) as store,
        pytest.raises(DBAPIError) as raised,
        store.engine.begin() as conn,
    ):
        conn.execute(  # no such run: a foreign key refuses the row
            insert(cells).values(
                run_id=424242,
                cell_key=secret,
                combo_key="c",
                combination={},
                case_id=secret,
                repeat=0,
                status="succeeded",
                output={"answer": secret},
                metrics={},
                evaluator_errors={},
                latency_ms=1.0,
                attempts=1,
                finished_at=_result(0, 0, 0).finished_at,
            )
        )
    assert secret not in str(raised.value)
    assert "hide_parameters" in str(raised.value)


def test_results_are_fitted_before_they_are_buffered() -> None:
    big = replace(_result(0, 0, 0), output={"answer": "é" * 600_000})
    fitted = fit_for_store(big, 64 * 1024)
    assert is_truncated(fitted.output)
    assert fitted.output is not None
    assert fitted.output[TRUNCATED]["bytes"] == output_size(big.output)
    assert output_size(fitted.output) <= 64 * 1024
    assert fitted.output["preview"].startswith('{"answer":"ééé')
    assert fitted.status == "succeeded"  # a recorded truncation, not a failure
    too_many = fit_for_store(replace(_result(0, 1, 0), tokens=TOO_MANY), 64 * 1024)
    assert (too_many.status, too_many.error_type, too_many.tokens) == (
        "failed",
        VALUE_OUT_OF_RANGE,
        None,
    )
    assert str(TOO_MANY) in (too_many.error_message or "")  # the value, said, not changed
    small = _result(0, 2, 0)
    assert fit_for_store(small, 64 * 1024) == small


@pytest.fixture(
    params=["sqlite", pytest.param("pgbouncer", marks=pytest.mark.postgres)],
)
def run_store(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.mark.slow
def test_a_run_with_values_the_store_cannot_keep_records_every_other_cell(
    tmp_path: Path, run_store: str
) -> None:
    """A node returning a 2 MiB output, reporting 2^70 tokens, answering with a NUL: the run
    completes (exit 4 for the failed cell), the output is recorded truncated, the rerun
    does not fail the same way, and stderr holds no SQL parameters."""
    workflow = yaml.safe_load((TOY / "workflow.yaml").read_text())
    workflow["spec"]["variants"]["answer"].append(
        {"name": "hostile", "path": "toyflow.graph:answer_hostile"}
    )
    batch = toy_batchtest("hostile", 0, matrix={"answer": ["original", "hostile"]})
    batch["spec"]["dataset"] = {
        "cases": [
            {"id": q, "inputs": {"question": q}, "expected": {"answer": q}}
            for q in ("huge", "many", "nul", "fine")
        ]
    }
    (tmp_path / "toyflow").symlink_to(TOY / "toyflow")
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump_all([workflow, batch]))
    command = [*WTB, "run", "-f", str(path), "--database", run_store, "-q"]
    env = {**os.environ, "WTB_FLUSH_EVERY": "100"}  # every cell in one write batch

    def run() -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            command, check=False, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=180
        )
        assert done.returncode == ExitCode.CELLS_FAILED, done.stderr
        assert "Traceback" not in done.stderr
        assert "parameters" not in done.stderr
        assert "xxxxxxxx" not in done.stderr + done.stdout
        return done

    first = run()
    assert "1 failed" in first.stderr
    with ResultStore.open(run_store) as store:
        (recorded,) = store.find_runs(name="hostile")
        stored = {(c.combination, c.case_id): c for c in store.iter_cells(recorded.id)}
        assert len(stored) == 8
        hostile = {
            case: c for (combo, case), c in stored.items() if dict(combo)["answer"] == "hostile"
        }
        assert hostile["huge"].status == "succeeded"
        assert is_truncated(hostile["huge"].output)
        assert output_size(hostile["huge"].output) <= 1024 * 1024
        assert hostile["many"].status == "failed"
        assert hostile["many"].error_type == VALUE_OUT_OF_RANGE
        assert str(TOO_MANY)[:18] in (hostile["many"].error_message or "")  # 2^70 and a few
        assert hostile["many"].metrics["correct"] == 0.0  # scored as the failure it is
        assert hostile["nul"].status == "succeeded"
        assert hostile["fine"].status == "succeeded"
        assert sum(c.status == "succeeded" for c in stored.values()) == 7

    again = run()
    assert "0 cells run" in again.stderr
    with ResultStore.open(run_store) as store:
        (recorded,) = store.find_runs(name="hostile")
        assert store.progress(recorded.id).done == 8
