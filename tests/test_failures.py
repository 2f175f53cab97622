"""Failures told: the node an attempt failed in and its traceback are recorded per attempt,
failed cells are grouped per combination by (error type, node, first line), and `wtb run`
and `wtb results` show the groups (tests/fixtures/failing: nodes that raise, one inside a
subgraph, one that hangs)."""

from __future__ import annotations

import copy
import json
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
    assert ok.status == "succeeded" and ok.error_node is None
    (attempt,) = store.attempts(run_id, ok.cell_key)
    assert attempt.node is None and attempt.traceback is None

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
        assert attempt.traceback is not None and "in search_broken" in attempt.traceback


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
