"""What a graph's invocation gets (wtb.cells.invocation): the `invoke` blocks of the Workflow,
the BatchTest, the combination's variants and settings and the case, merged; WTB's run name,
tags and metadata; the recursion limit. Real LangGraph graphs (tests/fixtures/invoke) report
what they were given, run through manifests, `prepare` and a runner as `wtb run` does."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from toybatch import prepare_documents
from wtb.api.invocation import InvocationSpec, merge_invocations
from wtb.domain import CellResult
from wtb.errors import ManifestError, ManifestErrors
from wtb.events import EventBus
from wtb.pipeline.prepare import PreparedBatch
from wtb.variant_matrix import combination_label

INVOKE = Path(__file__).parent / "fixtures" / "invoke"

WORKFLOW: dict[str, Any] = {
    "apiVersion": "wtb.dev/v1alpha1",
    "kind": "Workflow",
    "metadata": {"name": "invoke"},
    "spec": {
        "graph": {"factory": "invokeflow.graph:build"},
        "invoke": {
            "context": {"model": "wf-model", "persona": "wf"},
            "configurable": {"temperature": 0},
            "metadata": {"team": "wf"},
            "tags": ["wf"],
        },
        "variants": {
            "respond": [
                {
                    "name": "terse",
                    "path": "invokeflow.graph:respond_terse",
                    "invoke": {"context": {"persona": "variant"}},
                }
            ]
        },
        "settings": {
            "model": [
                {"name": "small", "invoke": {"context": {"model": "small"}}},
                {
                    "name": "large",
                    "invoke": {"context": {"model": "large"}, "configurable": {"temperature": 1}},
                },
            ]
        },
    },
}

BATCH: dict[str, Any] = {
    "apiVersion": "wtb.dev/v1alpha1",
    "kind": "BatchTest",
    "metadata": {"name": "invoked"},
    "spec": {
        "workflowRef": {"name": "invoke"},
        "matrix": {"respond": ["original", "terse"], "model": ["original", "small", "large"]},
        "invoke": {"context": {"persona": "batch"}, "metadata": {"team": "batch"}, "tags": ["bt"]},
        "dataset": {
            "cases": [
                {"id": "c0", "inputs": {"question": "a"}},
                {
                    "id": "c1",
                    "inputs": {"question": "b"},
                    "invoke": {
                        "context": {"persona": "case"},
                        "configurable": {"temperature": 9},
                    },
                },
            ]
        },
        "evaluators": [{"name": "answered", "type": "contains", "output": "answer", "value": "/"}],
        "primaryMetric": "answered",
        "concurrency": 2,
    },
}


def _prepared(
    tmp_path: Path, workflow: dict[str, Any] | None = None, batch: dict[str, Any] | None = None
) -> PreparedBatch:
    return prepare_documents(
        tmp_path / "manifests.yaml",
        workflow or WORKFLOW,
        batch or BATCH,
        python_path=(str(INVOKE),),
    )


def _edited(base: dict[str, Any], **spec: Any) -> dict[str, Any]:
    edited = copy.deepcopy(base)
    edited["spec"].update(spec)
    return edited


def _run_inline(prepared: PreparedBatch) -> list[CellResult]:
    from wtb.runners import InlineRunner

    runner = InlineRunner(backoff_scale=0)
    return list(runner.run(prepared.job, prepared.plan.iter_cells(), EventBus()))


def _expected_answer(respond: str, model: str, case: str) -> str:
    chosen_model = {"original": "wf-model", "small": "small", "large": "large"}[model]
    if case == "c1":
        persona, temperature = "case", 9
    else:
        persona = "variant" if respond == "terse" else "batch"
        temperature = 1 if model == "large" else 0
    return ("terse:" if respond == "terse" else "") + f"{chosen_model}/{persona}/{temperature}"


@pytest.fixture(
    params=[
        "threads",
        "loop",
        pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow]),
    ]
)
def run(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """(mode, a function running a prepared batch to its results): sync graphs on worker
    threads, the async graph on the loop, or the async graph on a Ray actor."""
    monkeypatch.syspath_prepend(str(INVOKE))
    if request.param != "ray":
        return request.param, _run_inline
    request.getfixturevalue("ray_cluster")
    from wtb.runners.ray_runner import RayRunner

    def on_ray(prepared: PreparedBatch) -> list[CellResult]:
        runner = RayRunner(actors=1, backoff_scale=0)
        return list(runner.run(prepared.job, prepared.plan.iter_cells(), EventBus()))

    return "loop", on_ray


def test_every_level_reaches_the_graph_the_most_specific_winning(
    tmp_path: Path, run: tuple[str, Any]
) -> None:
    mode, run_batch = run
    workflow = WORKFLOW
    if mode == "loop":
        workflow = copy.deepcopy(WORKFLOW)
        workflow["spec"]["graph"]["factory"] = "invokeflow.graph:build_async"
    prepared = _prepared(tmp_path, workflow)
    results = run_batch(prepared)
    assert len(results) == 2 * 3 * 2
    for r in results:
        chosen = dict(r.cell.combination)
        assert r.status == "succeeded", r
        assert r.output is not None
        # Context (context_schema), configurable, per Workflow < BatchTest < variant or
        # setting < case; the setting axis `model` changes the output per combination.
        assert r.output["answer"] == _expected_answer(
            chosen["respond"], chosen["model"], r.cell.case_id
        )
        seen = r.output["seen"]
        assert seen["tags"] == ["wtb", "wf", "bt"]
        assert seen["metadata"] == {
            "team": "batch",
            "wtb_run": prepared.job.run_key,
            "wtb_cell": r.cell.key,
            "wtb_case": r.cell.case_id,
            "wtb_repeat": 0,
            "wtb_attempt": 1,
            "wtb_combination": combination_label(r.cell.combination),
        }
        # Per-node figures and the root run id come back from wherever the cell ran (a Ray
        # actor sends its results to the driver).
        assert r.nodes is not None
        assert r.nodes["respond"]["calls"] == 1
        assert r.attempts[-1].root_run_id is not None
    assert prepared.job.run_key.startswith("default/invoked:")


def test_a_tracer_sees_run_name_tags_and_metadata_of_each_invocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(INVOKE))
    from invokeflow import graph

    # The handler attaches as LangSmith's tracer does: langchain-core's configure hook,
    # switched on by an environment variable; nothing is passed to the graph by hand.
    monkeypatch.setenv("INVOKEFLOW_RECORD", "1")
    graph.ROOT_RUNS.clear()
    prepared = _prepared(tmp_path)
    results = _run_inline(prepared)
    by_cell = {run["metadata"]["wtb_cell"]: run for run in graph.ROOT_RUNS}
    assert sorted(by_cell) == sorted(r.cell.key for r in results)
    for r in results:
        run = by_cell[r.cell.key]
        label = combination_label(r.cell.combination)
        assert run["name"] == f"wtb:invoked:{label}"
        assert run["tags"] == ["wtb", "wf", "bt"]
        assert run["metadata"]["wtb_combination"] == label
        assert run["metadata"]["wtb_case"] == r.cell.case_id
        assert run["metadata"]["team"] == "batch"
        # The attempt's record holds the root run's id: the cell's trace is found from it.
        assert [a.root_run_id for a in r.attempts] == [run["run_id"]]


def test_a_looping_graph_stops_at_its_recursion_limit_and_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(INVOKE))
    workflow = {
        **WORKFLOW,
        "metadata": {"name": "invoke"},
        "spec": {"graph": {"factory": "invokeflow.graph:LOOP_LIMITED"}},
    }
    batch = _edited(
        BATCH,
        matrix={"spin": ["original"]},
        dataset={
            "cases": [
                {"id": "limited", "inputs": {"question": "a"}, "invoke": {"recursionLimit": 7}},
                {"id": "default", "inputs": {"question": "b"}},
            ]
        },
        # Even a user who calls RuntimeError transient gets no retry of a recursion limit.
        retry={"maxAttempts": 3, "transientErrors": ["RuntimeError"]},
    )
    del batch["spec"]["invoke"]
    results = {r.cell.case_id: r for r in _run_inline(_prepared(tmp_path, workflow, batch))}
    # Without a recursionLimit the graph's own limit holds (its with_config), as in production.
    for case, limit in (("limited", 7), ("default", 12)):
        r = results[case]
        assert (r.status, r.error_type) == ("failed", "GraphRecursionError")
        assert f"Recursion limit of {limit} reached" in (r.error_message or "")
        assert [(a.number, a.status) for a in r.attempts] == [(1, "failed")]


# --- refused before any cell runs ---------------------------------------------------------


def _refusal(tmp_path: Path, workflow: dict[str, Any], batch: dict[str, Any]) -> str:
    with pytest.raises((ManifestError, ManifestErrors)) as info:
        _prepared(tmp_path, workflow, batch)
    return str(info.value)


def test_a_context_the_schema_refuses_is_a_manifest_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(INVOKE))
    # No `model` at any level: the Context dataclass requires it.
    workflow = copy.deepcopy(WORKFLOW)
    del workflow["spec"]["invoke"]
    message = _refusal(tmp_path, workflow, _edited(BATCH, matrix={"respond": ["original"]}))
    assert "context_schema Context" in message
    assert "combination respond=original" in message
    assert "invoke.context" in message  # the fix
    # A case's own context is checked too, and named.
    cases = [{"id": "odd", "inputs": {"question": "a"}, "invoke": {"context": {"modle": "x"}}}]
    message = _refusal(tmp_path, WORKFLOW, _edited(BATCH, dataset={"cases": cases}))
    assert "case 'odd'" in message
    assert "modle" in message


def test_setting_mistakes_are_manifest_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(INVOKE))
    unknown = _edited(BATCH, matrix={"respond": ["original"], "model": ["original", "huge"]})
    message = _refusal(tmp_path, WORKFLOW, unknown)
    assert "setting 'model' has no choice 'huge'" in message
    assert "small, large" in message
    # A setting named like a node of the graph would make the matrix ambiguous.
    clash = copy.deepcopy(WORKFLOW)
    clash["spec"]["variants"] = {}
    clash["spec"]["settings"] = {"respond": WORKFLOW["spec"]["settings"]["model"]}
    batch = _edited(BATCH, matrix={"respond": ["original"]})
    assert "setting 'respond' has the name of a node" in _refusal(tmp_path, clash, batch)
    with_variants = copy.deepcopy(clash)
    with_variants["spec"]["variants"] = WORKFLOW["spec"]["variants"]
    assert "names a node with variants" in _refusal(tmp_path, with_variants, batch)


@pytest.mark.parametrize(
    ("invoke", "complaint"),
    [
        ({"metadata": {"wtb_run": "mine"}}, "WTB's own"),
        ({"recursionLimit": 0}, "recursionLimit"),
        ({"recursionLimit": 10_001}, "recursionLimit"),
        ({"context": ["not", "a", "mapping"]}, "context"),
        ({"tags": [""]}, "tags"),
    ],
)
def test_invoke_blocks_are_validated_at_every_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, invoke: dict[str, Any], complaint: str
) -> None:
    monkeypatch.syspath_prepend(str(INVOKE))
    on_batch = _edited(BATCH, invoke=invoke)
    assert complaint in _refusal(tmp_path, WORKFLOW, on_batch)
    # In a data set file, the row is named.
    rows = [
        {"id": "ok", "inputs": {"question": "a"}},
        {"id": "bad", "inputs": {"question": "b"}, "invoke": invoke},
    ]
    (tmp_path / "cases.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    in_file = _edited(BATCH, dataset={"path": "cases.jsonl"})
    message = _refusal(tmp_path, WORKFLOW, in_file)
    assert "cases.jsonl, line 2" in message
    assert complaint in message


def test_merging_most_specific_last() -> None:
    merged = merge_invocations(
        [
            InvocationSpec(context={"a": 1, "b": 1}, tags=["x", "y"], recursion_limit=50),
            None,
            InvocationSpec(context={"b": 2}, configurable={"m": "s"}, tags=["y", "z"]),
            InvocationSpec(metadata={"k": "v"}, recursion_limit=10),
        ]
    )
    assert merged.context == {"a": 1, "b": 2}
    assert merged.configurable == {"m": "s"}
    assert merged.tags == ["x", "y", "z"]
    assert merged.metadata == {"k": "v"}
    assert merged.recursion_limit == 10
    assert merge_invocations([None, None]) == InvocationSpec()


def test_specs_without_invoke_keep_their_digest(tmp_path: Path) -> None:
    """Runs recorded before `invoke`, `settings` and `retryTimeouts` existed keep their key:
    the new fields are left out of the record when not given."""
    from toybatch import TOY, toy_prepared

    sys.path.insert(0, str(TOY))
    try:
        record = toy_prepared(tmp_path, "plain", "lookup_sync", 2).job.to_record()
    finally:
        sys.path.remove(str(TOY))
    assert "invoke" not in record["workflow"]
    assert "settings" not in record["workflow"]
    assert "invoke" not in record["batchTest"]
    assert "retryTimeouts" not in record["batchTest"]["retry"]
    assert all("invoke" not in case for case in record["cases"])


def test_cell_keys_of_node_only_matrices_did_not_change() -> None:
    """Settings are axes beside nodes in the same (axis, choice) pairs: the keys of
    node-only matrices, in stores written before settings existed, stay as they were."""
    from wtb.plan import cell_key
    from wtb.variant_matrix import as_combination, combo_key

    combination = as_combination({"generate": "short", "retrieve": "bm25"})
    assert cell_key(combination, "case-1", 3) == "29f5d8c7525e9fc4943fa0f26bcc863e"
    assert combo_key(combination) == "117b0384975d4424"
