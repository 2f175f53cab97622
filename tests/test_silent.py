"""Nothing silent: what a naive batch runner would count as a success is not one here.

Real LangGraph graphs (tests/fixtures/silent), run through manifests, `prepare` and a
runner as `wtb run` does: a graph stopped at `interrupt()` is `interrupted` unless the case
scripts the answers (`resume`); an evaluator that raises is counted per metric in the
matrix; evaluators read keys an output schema hides (`$state.`, `ctx.state`); input keys
the graph's input schema lacks are refused before any cell runs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from toybatch import prepare_documents
from wtb.cli.main import cli
from wtb.domain import CellResult
from wtb.errors import ExitCode, ManifestError, ManifestErrors
from wtb.events import CELL_ATTEMPT_SUCCEEDED, Event, EventBus
from wtb.pipeline.prepare import PreparedBatch

SILENT = Path(__file__).parent / "fixtures" / "silent"


def _workflow(factory: str, node: str, variant: str) -> dict[str, Any]:
    return {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "silent"},
        "spec": {
            "graph": {"factory": f"silentflow.graph:{factory}"},
            "variants": {node: [{"name": "terse", "path": f"silentflow.graph:{variant}"}]},
        },
    }


def _batch(
    node: str, cases: list[dict[str, Any]], evaluators: list[dict[str, Any]], primary: str
) -> dict[str, Any]:
    return {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "BatchTest",
        "metadata": {"name": "silent"},
        "spec": {
            "workflowRef": {"name": "silent"},
            "matrix": {node: ["original", "terse"]},
            "dataset": {"cases": cases},
            "evaluators": evaluators,
            "primaryMetric": primary,
            "concurrency": 2,
        },
    }


REVIEW_EVALUATORS = [{"name": "approved", "type": "exactMatch", "output": "approved"}]


def _review(factory: str, cases: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        _workflow(factory, "draft", "draft_terse"),
        _batch("draft", cases, REVIEW_EVALUATORS, "approved"),
    )


def _prepared(tmp_path: Path, workflow: dict[str, Any], batch: dict[str, Any]) -> PreparedBatch:
    return prepare_documents(
        tmp_path / "manifests.yaml", workflow, batch, python_path=(str(SILENT),)
    )


def _run_inline(prepared: PreparedBatch, bus: EventBus | None = None) -> list[CellResult]:
    from wtb.runners import InlineRunner

    runner = InlineRunner(backoff_scale=0)
    return list(runner.run(prepared.job, prepared.plan.iter_cells(), bus or EventBus()))


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SILENT))


# -- interrupt() --------------------------------------------------------------------------


@pytest.mark.parametrize("factory", ["build_review", "build_review_async"])
def test_a_graph_stopped_at_an_interrupt_is_interrupted_not_succeeded(
    tmp_path: Path, factory: str
) -> None:
    cases = [{"id": "c0", "inputs": {"question": "q0"}, "expected": {"approved": "yes"}}]
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append, frozenset({CELL_ATTEMPT_SUCCEEDED}))
    results = _run_inline(_prepared(tmp_path, *_review(factory, cases)), bus)
    assert len(results) == 2
    # The attempt returned (it is not retried), and its event says it stopped.
    assert [e.data for e in seen] == [{"attempt": 1, "interrupted": True}] * 2
    for r in results:
        assert r.status == "interrupted", r
        assert r.error_type == "Interrupted"
        assert r.error_message is not None
        assert "approve?" in r.error_message
        # The state it reached is kept; an interrupted cell scores as a failure.
        assert r.output is not None
        assert r.output["draft"].endswith("q0")
        assert r.metrics == {"approved": 0.0}


@pytest.mark.parametrize("factory", ["build_review", "build_review_async"])
def test_scripted_answers_resume_the_graph_to_its_end(tmp_path: Path, factory: str) -> None:
    cases: list[dict[str, Any]] = [
        {
            "id": "done",
            "inputs": {"question": "q0"},
            "expected": {"approved": "yes"},
            "resume": ["yes", {"note": "ship it"}],
        },
        # One answer for two questions: stopped at the second.
        {"id": "short", "inputs": {"question": "q1"}, "resume": ["yes"]},
        # Three answers for two questions: a mistake in the data set, said so.
        {"id": "long", "inputs": {"question": "q2"}, "resume": ["yes", "n", "extra"]},
    ]
    results = {
        (r.cell.case_id, dict(r.cell.combination)["draft"]): r
        for r in _run_inline(_prepared(tmp_path, *_review(factory, cases)))
    }
    assert len(results) == 6
    for variant in ("original", "terse"):
        done = results["done", variant]
        assert done.status == "succeeded", done
        assert done.output is not None
        assert done.output["approved"] == "yes"
        assert done.output["note"] == {"note": "ship it"}
        assert done.metrics == {"approved": 1.0}
        short = results["short", variant]
        assert short.status == "interrupted", short
        assert short.error_message is not None
        assert "note?" in short.error_message
        long = results["long", variant]
        assert long.status == "failed", long
        assert long.error_type == "UnusedResumeError"
        assert long.error_message is not None
        assert "1 never reached" in long.error_message
        assert len(long.attempts) == 1  # a data set mistake is not retried


@pytest.mark.parametrize("resume", [[], "yes", list(range(101)), ["yes", None]])
def test_resume_is_validated(tmp_path: Path, resume: Any) -> None:
    cases = [{"id": "c0", "inputs": {"question": "q0"}, "resume": resume}]
    with pytest.raises((ManifestError, ManifestErrors)) as caught:
        _prepared(tmp_path, *_review("build_review", cases))
    assert "resume" in str(caught.value)


def test_resume_from_a_data_set_file(tmp_path: Path) -> None:
    rows = [
        {"id": "f0", "inputs": {"question": "q"}, "resume": ["yes", "n"]},
        {"id": "f1", "inputs": {"question": "q"}, "resume": {"not": "a list"}},
    ]
    (tmp_path / "cases.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    workflow, batch = _review("build_review", [])
    batch["spec"]["dataset"] = {"path": "cases.jsonl"}
    with pytest.raises(ManifestError, match=r"cases\.jsonl, line 2.*`resume` is a dict"):
        _prepared(tmp_path, workflow, batch)
    (tmp_path / "cases.jsonl").write_text(json.dumps(rows[0]) + "\n")
    prepared = _prepared(tmp_path, workflow, batch)
    assert prepared.job.cases[0].resume == ("yes", "n")
    assert {r.status for r in _run_inline(prepared)} == {"succeeded"}


@pytest.mark.ray
@pytest.mark.slow
def test_scripted_answers_on_ray(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("ray_cluster")
    from wtb.runners.ray_runner import RayRunner

    cases = [
        {"id": "done", "inputs": {"question": "q0"}, "resume": ["yes", "n"]},
        {"id": "open", "inputs": {"question": "q1"}},
    ]
    prepared = _prepared(tmp_path, *_review("build_review_async", cases))
    runner = RayRunner(actors=1, backoff_scale=0)
    results = list(runner.run(prepared.job, prepared.plan.iter_cells(), EventBus()))
    statuses = {(r.cell.case_id, r.status) for r in results}
    assert statuses == {("done", "succeeded"), ("open", "interrupted")}
    assert all(
        r.output and r.output["approved"] == "yes" for r in results if r.status != "interrupted"
    )


# -- the full state, evaluator errors, through the store and the CLI ---------------------


def _hidden(cases: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    evaluators = [
        {
            "name": "reasoned",
            "type": "exactMatch",
            "output": "$state.reasoning",
            "expected": "reasoning",
        },
        {"name": "state_seen", "type": "python", "path": "silentflow.graph:reads_state"},
        {"name": "judge", "type": "python", "path": "silentflow.graph:flaky_score"},
        {"name": "tokens", "type": "tokens"},
    ]
    return _workflow("build_hidden", "think", "think_terse"), _batch(
        "think", cases, evaluators, "judge"
    )


QUESTIONS = {"c0": "a", "c1": "b", "c2": "please raise", "c3": "c"}
HIDDEN_CASES = [
    {"id": i, "inputs": {"question": q}, "expected": {"reasoning": f"because {q}"}}
    for i, q in QUESTIONS.items()
]


def test_evaluators_read_keys_an_output_schema_hides(tmp_path: Path) -> None:
    results = _run_inline(_prepared(tmp_path, *_hidden(HIDDEN_CASES)))
    assert len(results) == 8
    for r in results:
        assert r.status == "succeeded", r
        question = QUESTIONS[r.cell.case_id]
        terse = dict(r.cell.combination)["think"] == "terse"
        # What is recorded is what the graph returns: its output schema's keys.
        assert r.output == {"answer": question if terse else question.upper()}
        assert r.metrics["reasoned"] == 1.0
        assert r.metrics["state_seen"] == 1.0
        # Tokens are counted from the full state's messages (the original node has one).
        assert r.tokens == (None if terse else 7)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _write_manifests(tmp_path: Path, workflow: dict[str, Any], batch: dict[str, Any]) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump_all([workflow, batch]))
    (tmp_path / "silentflow").symlink_to(SILENT / "silentflow")
    return path


def test_evaluator_errors_are_counted_per_metric_in_the_matrix(tmp_path: Path) -> None:
    path = _write_manifests(tmp_path, *_hidden(HIDDEN_CASES))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = _cli("run", "-f", str(path), "--database", db, "-o", "json")
    assert result.exit_code == 0, result.output
    (document,) = json.loads(result.stdout)
    rows = document["matrix"]["rows"]
    assert len(rows) == 2
    for row in rows:
        # One case of four raised in the judge: its value is missing, and said so.
        assert row["evaluatorErrors"] == {"reasoned": 0, "state_seen": 0, "judge": 1, "tokens": 0}
        assert row["metrics"]["judge"]["n"] == 3
        assert row["metrics"]["reasoned"]["n"] == 4
        assert row["runs"] == row["succeeded"] == 4
    table = _cli("results", "silent", "--database", db)
    assert table.exit_code == 0, table.output
    assert "(n=3, 1 error)" in table.stdout


def test_interrupted_cells_through_the_store_and_the_cli(tmp_path: Path) -> None:
    cases = [
        {
            "id": "done",
            "inputs": {"question": "q0"},
            "expected": {"approved": "y"},
            "resume": ["y", "n"],
        },
        {"id": "open", "inputs": {"question": "q1"}, "expected": {"approved": "y"}},
    ]
    path = _write_manifests(tmp_path, *_review("build_review", cases))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = _cli("run", "-f", str(path), "--database", db, "-o", "json")
    # Interrupted cells are not successes: like failed cells, they fail the default gate.
    assert result.exit_code == ExitCode.CELLS_FAILED, result.output
    assert "2 interrupted (stopped at interrupt() waiting for a human)" in result.stderr
    (data,) = json.loads(result.stdout)
    assert data["progress"] == {
        "total": 4,
        "done": 4,
        "succeeded": 2,
        "failed": 0,
        "interrupted": 2,
        "reused": 0,
    }
    for row in data["matrix"]["rows"]:
        assert (row["runs"], row["succeeded"], row["interrupted"]) == (2, 1, 1)
        assert row["successRate"]["value"] == 0.5
    table = _cli("results", "silent", "--database", db)
    assert table.exit_code == 0, table.output
    assert "1 interrupted" in table.stdout
    assert "2 interrupted" in table.stderr


# -- input keys ---------------------------------------------------------------------------


def test_unknown_input_keys_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    cases = [
        {"id": "ok", "inputs": {"question": "a"}},
        {"id": "typo", "inputs": {"questoin": "b"}},
    ]
    workflow, batch = _hidden(cases)
    with pytest.raises(ManifestError) as caught:
        _prepared(tmp_path, workflow, batch)
    message = str(caught.value)
    assert "case 'typo'" in message
    assert "'questoin'" in message
    assert "did you mean 'question'?" in message
    assert "spec.dataset.cases[1]" in message
    # Keys of the state that the input schema leaves out are refused too: LangGraph
    # would drop them.
    hidden = copy.deepcopy(batch)
    hidden["spec"]["dataset"]["cases"] = [
        {"id": "r", "inputs": {"question": "a", "reasoning": "x"}}
    ]
    with pytest.raises(ManifestError, match="'reasoning' is not a key of the graph's input"):
        _prepared(tmp_path, workflow, hidden)


def test_input_keys_of_a_big_data_set_are_checked_once_per_key_set(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "inputs": {"question": str(i)}} for i in range(5000)]
    rows.append({"id": "last", "inputs": {"question": "x", "extra": 1}})
    (tmp_path / "cases.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    workflow, batch = _hidden([])
    batch["spec"]["dataset"] = {"path": "cases.jsonl"}
    with pytest.raises(ManifestError, match=r"cases\.jsonl, line 5001: case 'last'"):
        _prepared(tmp_path, workflow, batch)
