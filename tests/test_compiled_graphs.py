"""A graph the user compiled runs under WTB as it was compiled: its store is read through
a per-attempt overlay, its checkpointer is replaced by WTB's own, its name and interrupts
are kept, and what cannot be kept is refused before anything runs.

The application is tests/fixtures/compiled (real LangGraph, compiled at import as a user's
module does); batches go through the manifests, `prepare` and the inline runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from toybatch import prepare_documents
from wtb.domain import Cell, CellResult
from wtb.errors import ManifestError
from wtb.events import EventBus
from wtb.graphs import VariantGraphs
from wtb.pipeline.prepare import PreparedBatch
from wtb.runners import InlineRunner
from wtb.runners.base import Runner
from wtb.runtime.attempt import AttemptStore

APP = Path(__file__).parent / "fixtures" / "compiled"
QUESTIONS = ["alpha", "beta", "gamma"]


@pytest.fixture(autouse=True)
def _app_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(APP))


def _prepared(
    tmp_path: Path, graph: str, variant: str, resume: list[Any] | None = None
) -> PreparedBatch:
    """A batch over the app's compiled graph `graph` with node `remember` as `variant`,
    each question twice. `variant` is `original` (sync: the inline runner runs cells whole
    on worker threads), `async` (cells run on the loop, with `ainvoke`) or `both` (the
    two combinations, all on the loop: the sync one whole in the loop's pool). `resume`:
    every case's scripted answers."""
    workflow = {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "compiled"},
        "spec": {
            "graph": {"factory": f"compiledapp.graph:{graph}"},
            "variants": {
                "remember": [{"name": "async", "path": "compiledapp.graph:remember_async"}]
            },
        },
    }
    batch = {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "BatchTest",
        "metadata": {"name": "compiled"},
        "spec": {
            "workflowRef": {"name": "compiled"},
            "matrix": {"remember": ["original", "async"] if variant == "both" else [variant]},
            "baseline": {"remember": "original" if variant == "both" else variant},
            "dataset": {
                "cases": [
                    {
                        "id": q,
                        "inputs": {"question": q},
                        "expected": {"answer": "Paris"},
                        **({"resume": resume} if resume is not None else {}),
                    }
                    for q in QUESTIONS
                ]
            },
            "repeats": 2,
            "concurrency": 3,
            "evaluators": [
                {"name": "correct", "type": "exactMatch", "output": "answer", "expected": "answer"}
            ],
            "primaryMetric": "correct",
        },
    }
    return prepare_documents(tmp_path / "compiled.yaml", workflow, batch, python_path=(str(APP),))


def _run(prepared: PreparedBatch, runner: Runner | None = None) -> list[CellResult]:
    runner = runner or InlineRunner(backoff_scale=0)
    return list(runner.run(prepared.job, prepared.plan.iter_cells(), EventBus()))


def _outputs(results: list[CellResult], status: str = "succeeded") -> list[dict[str, Any]]:
    assert len(results) % (len(QUESTIONS) * 2) == 0
    outputs = []
    for r in results:
        assert r.status == status, (r.error_type, r.error_message)
        assert r.output is not None
        outputs.append(r.output)
    return outputs


def _store_items() -> dict[tuple[tuple[str, ...], str], dict[str, Any]]:
    from compiledapp.graph import STORE

    return {
        (item.namespace, item.key): item.value
        for namespace in STORE.list_namespaces()
        for item in STORE.search(namespace, limit=1000)
    }


@pytest.mark.parametrize("variant", ["original", "async", "both"])
def test_each_cell_reads_the_users_store_and_keeps_its_writes_to_itself(
    tmp_path: Path, variant: str
) -> None:
    before = _store_items()
    prepared = _prepared(tmp_path, "with_store", variant)
    # Sync-only with `original`: cells run whole on worker threads (`run_sync`); with the
    # async variant, on the loop (`ainvoke`, the sync `peek` in the loop's pool).
    if variant != "both":
        sync = VariantGraphs(prepared.job.workflow).get((("remember", variant),))[1]
        assert sync is (variant == "original")
    results = _run(prepared)
    assert len(results) == len(QUESTIONS) * 2 * (2 if variant == "both" else 1)
    for r, out in zip(results, _outputs(results), strict=True):
        question = r.cell.case_id
        assert out["answer"] == "Paris"  # seeded in the user's store
        assert out["peeked"] == "Paris"  # a parallel node, on a thread of its own
        # Its own note only: not the other cases', nor the other repeat's of its case.
        assert out["notes"] == [question]
        # Its delete hides the user's item, in a get and in a search.
        assert out["gone"] is True
        assert out["facts"] == ["capital"]
        assert r.metrics["correct"] == 1.0
    assert _store_items() == before
    assert ("facts",) in {ns for ns, _ in before}
    assert (("facts",), "obsolete") in before


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("graph", ["with_store", "checkpointed"])
def test_on_ray_actors_too(ray_cluster: object, tmp_path: Path, graph: str) -> None:
    from wtb.runners.ray_runner import RayRunner

    prepared = _prepared(tmp_path, graph, "async")
    results = _run(prepared, RayRunner(actors=1, backoff_scale=0))
    # The checkpointed graph stops before `finish`, as compiled: interrupted.
    status = "interrupted" if graph == "checkpointed" else "succeeded"
    for r, out in zip(results, _outputs(results, status), strict=True):
        assert out["answer"] == "Paris"
        assert out["notes"] == [r.cell.case_id]
        assert out["gone"] is True
        assert ("finished" not in out) is (graph == "checkpointed")


def test_the_graph_keeps_its_name_and_store_and_gets_wtbs_own_saver(tmp_path: Path) -> None:
    from compiledapp.graph import SAVER, checkpointed
    from langgraph.checkpoint.memory import InMemorySaver

    prepared = _prepared(tmp_path, "checkpointed", "original")
    graphs = VariantGraphs(prepared.job.workflow)
    combination = (("remember", "async"),)
    graph, _ = graphs.get(combination)
    assert graph.name == "checkpointed"
    assert graph.interrupt_before_nodes == ["finish"]
    assert graph.interrupt_before_nodes is not checkpointed.interrupt_before_nodes
    assert isinstance(graph.store, AttemptStore)
    assert isinstance(graph.checkpointer, InMemorySaver)
    assert graph.checkpointer is not SAVER
    assert graphs.runtime(combination).needs_thread


@pytest.mark.parametrize("variant", ["original", "async"])
def test_interrupts_are_kept_and_the_users_saver_gets_no_checkpoint(
    tmp_path: Path, variant: str
) -> None:
    from compiledapp.graph import SAVER

    before = _store_items()
    results = _run(_prepared(tmp_path, "checkpointed", variant))
    # Stopped before `finish`, as compiled: interrupted, not a success.
    for r, out in zip(results, _outputs(results, "interrupted"), strict=True):
        assert out["answer"] == "Paris"
        assert out["notes"] == [r.cell.case_id]
        assert "finished" not in out
        assert r.error_message is not None
        assert "stopped before finish" in r.error_message
    # A scripted answer takes the graph past the static interrupt, to its end.
    resumed = _run(_prepared(tmp_path, "checkpointed", variant, resume=["go on"]))
    for out in _outputs(resumed):
        assert "finished" in out
    assert not SAVER.storage
    assert not SAVER.writes
    assert _store_items() == before


def test_each_attempt_has_its_own_thread_deleted_after_it(tmp_path: Path) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    from wtb.cells.invocation import Invocations

    prepared = _prepared(tmp_path, "checkpointed", "original")
    graphs = VariantGraphs(prepared.job.workflow)
    combination = (("remember", "original"),)
    graph, _ = graphs.get(combination)
    runtime = graphs.runtime(combination)
    saver = graph.checkpointer
    assert isinstance(saver, InMemorySaver)
    cells = list(prepared.plan.iter_cells())
    job = prepared.job
    cases = job.case_index()
    invocations = Invocations(job)

    def config(cell: Cell, attempt: int) -> Any:
        return invocations.build(cell, cases[cell.case_id], attempt, needs_thread=True).config

    first, second, other = config(cells[0], 1), config(cells[0], 2), config(cells[1], 1)
    threads = {c["configurable"]["thread_id"] for c in (first, second, other)}
    assert len(threads) == 3
    with runtime.attempt(first):
        graph.invoke({"question": "alpha"}, first)
        assert set(saver.storage) == {first["configurable"]["thread_id"]}
    assert not saver.storage
    assert not saver.writes


def test_a_compile_argument_that_cannot_be_kept_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    with pytest.raises(ManifestError, match="checkpointer=True") as caught:
        _prepared(tmp_path, "borrowing", "original")
    assert "spec.graph.factory" in caught.value.where
    assert caught.value.fix


def test_the_cache_serves_an_attempt_only_and_the_users_cache_is_not_written(
    tmp_path: Path,
) -> None:
    from compiledapp.graph import CACHE, CALLS

    CALLS.clear()
    results = _run(_prepared(tmp_path, "cached", "original"))
    _outputs(results)
    # Both repeats of each question really ran: no cell was served another's result.
    assert sorted(CALLS) == sorted(QUESTIONS * 2)
    assert not CACHE._cache

    prepared = _prepared(tmp_path, "cached", "original")
    graphs = VariantGraphs(prepared.job.workflow)
    graph, _ = graphs.get((("remember", "original"),))
    CALLS.clear()
    # Within one attempt the cache works as compiled: a second call with the same input
    # is served from it.
    with graphs.runtime((("remember", "original"),)).attempt({}):
        graph.invoke({"question": "alpha"})
        graph.invoke({"question": "alpha"})
    assert CALLS == ["alpha"]


def _settings_of(graph: Any) -> Any:
    from compiledapp.graph import build

    from wtb.runtime.compiled import compile_settings

    return compile_settings(graph, build().compile(), where="spec.graph.factory")


def test_settings_made_after_compile_are_kept() -> None:
    from compiledapp.graph import build

    user = build().compile(name="tuned", debug=True).with_config(recursion_limit=7, tags=["prod"])
    user.step_timeout = 30.0
    graph, runtime = _settings_of(user).compile(build())
    assert graph.name == "tuned"
    assert graph.debug is True
    assert graph.config["recursion_limit"] == 7
    assert graph.config["tags"] == ["prod"]
    assert graph.step_timeout == 30.0
    assert graph.store is None
    assert graph.checkpointer is None
    assert not runtime.needs_thread


def test_what_wtb_does_not_know_how_to_keep_is_refused_by_name() -> None:
    from compiledapp.graph import build

    user = build().compile()
    user.a_newer_setting = "on"  # as a newer LangGraph's compile() might set
    with pytest.raises(ManifestError, match="a_newer_setting"):
        _settings_of(user)
    grown = build().compile()
    grown.nodes["extra"] = grown.nodes["finish"]
    with pytest.raises(ManifestError, match=r"nodes its builder does not \(extra\)"):
        _settings_of(grown)
