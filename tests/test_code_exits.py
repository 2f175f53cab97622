"""The workflow's code ending its process (sys.exit(), KeyboardInterrupt, another
BaseException) costs one cell, never the run: in `wtb run` end to end, and on an event loop
where LangGraph runs parallel nodes in tasks of their own. Every runner's handling of it
is in the runner conformance suite."""

from __future__ import annotations

import asyncio
import json
import operator
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
import yaml
from click.testing import CliRunner
from langgraph.graph import END, START, StateGraph

from toybatch import TOY, toy_batchtest
from wtb.cells.attempts import describe
from wtb.cells.exits import CodeExit, guard_loop
from wtb.cli.main import cli
from wtb.errors import ExitCode

WTB = [sys.executable, "-m", "wtb"]


class _State(TypedDict, total=False):
    seen: Annotated[list[str], operator.add]


async def _exits(state: _State) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    raise SystemExit(3)


async def _works(state: _State) -> dict[str, Any]:
    await asyncio.sleep(0.05)
    return {"seen": ["works"]}


def _parallel_graph() -> Any:
    graph = StateGraph(_State)
    graph.add_node("exits", _exits)
    graph.add_node("works", _works)
    graph.add_edge(START, "exits")
    graph.add_edge(START, "works")
    graph.add_edge("exits", END)
    graph.add_edge("works", END)
    return graph.compile()


def test_sys_exit_in_a_parallel_node_task_fails_the_call_not_the_loop() -> None:
    compiled = _parallel_graph()

    async def main() -> tuple[BaseException | None, str]:
        guard_loop(asyncio.get_running_loop())
        other = asyncio.create_task(asyncio.sleep(0.2, "other cell done"))
        try:
            await compiled.ainvoke({})
        except BaseException as exc:
            return exc, await other
        return None, await other

    raised, other = asyncio.run(asyncio.wait_for(main(), 30))
    assert other == "other cell done"  # the loop went on
    assert isinstance(raised, CodeExit)
    assert describe(raised)[0] == "SystemExit"
    assert "exit code 3" in describe(raised)[1]


def _exiting_batch(tmp_path: Path) -> Path:
    """The toy workflow, lookup `original` against `exiting` (ends "the process" as each
    question says), five cases."""
    workflow = yaml.safe_load((TOY / "workflow.yaml").read_text())
    workflow["spec"]["variants"]["lookup"] = [
        {"name": "exiting", "path": "toyflow.graph:exiting_lookup"}
    ]
    questions = ["exit0", "exit3", "ctrlc", "halt", "fine"]
    batch = toy_batchtest("exits", 0, matrix={"lookup": ["original", "exiting"]})
    batch["spec"]["dataset"] = {
        "cases": [
            {"id": q, "inputs": {"question": q}, "expected": {"answer": q}} for q in questions
        ]
    }
    (tmp_path / "toyflow").symlink_to(TOY / "toyflow")
    path = tmp_path / "exits.yaml"
    path.write_text(yaml.safe_dump_all([workflow, batch]))
    return path


@pytest.mark.slow
def test_wtb_run_records_code_exits_as_failed_cells_and_exits_4(tmp_path: Path) -> None:
    path = _exiting_batch(tmp_path)
    db = tmp_path / "exits.db"
    command = [*WTB, "run", "-f", str(path), "--database", f"sqlite:///{db}", "-o", "json"]
    env = {**os.environ, "WTB_RETRY_BACKOFF_SCALE": "0"}
    first = subprocess.run(
        command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env
    )
    assert first.returncode == ExitCode.CELLS_FAILED, first.stderr
    (document,) = json.loads(first.stdout)
    assert document["progress"]["total"] == 10
    assert document["progress"]["failed"] == 4
    with sqlite3.connect(db) as conn:
        failed = dict(conn.execute("select case_id, error_type from cells where status = 'failed'"))
        attempts = conn.execute("select count(*) from attempts where status = 'failed'").fetchone()[
            0
        ]
    assert failed == {
        "exit0": "SystemExit",
        "exit3": "SystemExit",
        "ctrlc": "KeyboardInterrupt",
        "halt": "Halt",
    }
    assert attempts == 4  # not retried

    again = subprocess.run(
        command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env
    )
    assert again.returncode == ExitCode.CELLS_FAILED, again.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*), count(distinct cell_key) from cells").fetchone() == (
            10,
            10,
        )
        assert conn.execute("select count(*) from attempts").fetchone()[0] == 10


def test_sys_exit_while_the_workflow_is_imported_is_an_error_not_success(
    tmp_path: Path,
) -> None:
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    workflow = yaml.safe_load((TOY / "workflow.yaml").read_text())
    workflow["spec"]["graph"] = {"factory": "exits_on_import:build"}
    workflow["spec"]["pythonPath"] = ["."]
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump_all([workflow, toy_batchtest("imports", 2)]))
    result = CliRunner().invoke(
        cli, ["run", "-f", str(path), "--database", f"sqlite:///{tmp_path / 'x.db'}"]
    )
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "called sys.exit(0)" in result.stderr
    assert "fix:" in result.stderr
