"""Applications in the shapes of public LangGraph apps (tests/fixtures/apps/appshapes), run
through the public engine (manifests, `prepare`, a runner): what each cell really did,
not only that it succeeded.

- a ReAct agent, a module-level compiled graph: an async model node reading
  `Runtime[Context]`, a ToolNode, a loop back to the model until no tool calls;
- a router whose research node is a compiled subgraph fanning out with `Send`, with
  `research/search` swapped inside it;
- an enrichment agent with an output schema and a reflection loop, evaluated on a key the
  output schema hides (`$state.`);
- LangGraph's prebuilt `create_react_agent`, its `tools` and `agent` nodes swapped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from toybatch import prepare_documents
from wtb.domain import CellResult
from wtb.events import EventBus
from wtb.pipeline.prepare import PreparedBatch
from wtb.runners import InlineRunner
from wtb.runners.base import Runner

APPS = Path(__file__).parent / "fixtures" / "apps"
Json = dict[str, Any]


@pytest.fixture(autouse=True)
def _apps_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(APPS))


def _workflow(graph: str, variants: dict[str, list[Json]], **spec: Any) -> Json:
    return {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "app"},
        "spec": {"graph": {"factory": f"appshapes.{graph}"}, "variants": variants, **spec},
    }


def _batch(matrix: dict[str, list[str]], cases: list[Json], evaluators: list[Json]) -> Json:
    return {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "BatchTest",
        "metadata": {"name": "app"},
        "spec": {
            "workflowRef": {"name": "app"},
            "matrix": matrix,
            "dataset": {"cases": cases},
            "evaluators": evaluators,
            "primaryMetric": evaluators[0]["name"],
            "concurrency": 4,
        },
    }


def _prepared(tmp_path: Path, workflow: Json, batch: Json) -> PreparedBatch:
    return prepare_documents(tmp_path / "app.yaml", workflow, batch, python_path=(str(APPS),))


def _run(prepared: PreparedBatch, runner: Runner | None = None) -> list[CellResult]:
    runner = runner or InlineRunner(backoff_scale=0)
    return list(runner.run(prepared.job, prepared.plan.iter_cells(), EventBus()))


def _succeeded(results: list[CellResult], count: int) -> list[tuple[dict[str, str], Json]]:
    """(the cell's choices, its output) of each cell, every one succeeded."""
    assert len(results) == count
    cells = []
    for r in results:
        assert r.status == "succeeded", (dict(r.cell.combination), r.error_type, r.error_message)
        assert r.output is not None
        cells.append(({**dict(r.cell.combination), "case": r.cell.case_id}, r.output))
    return cells


def _kinds(output: Json) -> list[str]:
    return [m["type"] for m in output["messages"]]


# -- 1. a ReAct agent with a runtime context ----------------------------------------------

REACT_CASES = [
    {"id": "c0", "inputs": {"messages": [{"role": "user", "content": "weather"}]}},
    {
        "id": "c1",
        "inputs": {"messages": [{"role": "user", "content": "news"}]},
        "invoke": {"context": {"model": "large"}},
    },
]


def _react(tmp_path: Path, isolation: str = "shared") -> PreparedBatch:
    workflow = _workflow(
        "react:graph",
        {
            "tools": [{"name": "archive", "path": "appshapes.react:archive_tools"}],
            "call_model": [
                {
                    "name": "careful",
                    "path": "appshapes.react:careful_model",
                    "invoke": {"context": {"model": "large"}},
                }
            ],
        },
    )
    evaluators = [
        {"name": "answered", "type": "contains", "output": "messages.-1.content", "value": ":"},
        {"name": "tokens", "type": "tokens"},
    ]
    batch = _batch(
        {"tools": ["original", "archive"], "call_model": ["original", "careful"]},
        REACT_CASES,
        evaluators,
    )
    batch["spec"]["isolation"] = isolation
    return _prepared(tmp_path, workflow, batch)


def _assert_react(results: list[CellResult]) -> None:
    for choice, output in _succeeded(results, 4 * 2):
        question = {"c0": "weather", "c1": "news"}[choice["case"]]
        # The context: the schema's default, the variant's over it, the case's over both.
        careful = choice["call_model"] == "careful"
        model = "large" if careful or choice["case"] == "c1" else "small"
        node = "call_model" if choice["call_model"] == "original" else "careful_model"
        # The model ran twice, with the context's model: the loop ended after one tool call.
        assert output["calls"] == [f"{node}@{model}"] * 2
        assert _kinds(output) == ["human", "ai", "tool", "ai"]
        tool = output["messages"][2]
        result = (
            f"web[{question}]"
            if choice["tools"] == "original"
            else (f"archive[{question.upper()}]")
        )
        # The tool (the variant's, when chosen) really ran and the model answered with it.
        assert tool["content"] == result
        final = output["messages"][-1]
        assert final["tool_calls"] == []
        assert final["content"] == ("checked " if node == "careful_model" else "") + (
            f"{model}: {result}"
        )
    for r in results:
        # Two model calls of 5 tokens each; the nodes ran as often as the messages say.
        assert r.tokens == 10
        assert r.nodes is not None
        assert (r.nodes["call_model"]["calls"], r.nodes["tools"]["calls"]) == (2, 1)


@pytest.mark.parametrize("isolation", ["shared", "cell"])
def test_a_react_agent_with_a_runtime_context_loops_until_no_tool_calls(
    tmp_path: Path, isolation: str
) -> None:
    """One graph per combination serves every cell (`shared`), or one per attempt (`cell`;
    the module's node objects are the same in every build): the same answers either way."""
    _assert_react(_run(_react(tmp_path, isolation)))


@pytest.mark.ray
@pytest.mark.slow
def test_the_react_agent_on_ray(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("ray_cluster")
    from wtb.runners.ray_runner import RayRunner

    _assert_react(_run(_react(tmp_path), RayRunner(actors=1, backoff_scale=0)))


# -- 2. a router over a map-reduce research subgraph --------------------------------------


def test_a_router_over_a_send_fan_out_subgraph_with_a_child_swapped(tmp_path: Path) -> None:
    workflow = _workflow(
        "router:build",
        {"research/search": [{"name": "cached", "path": "appshapes.router:search_cached"}]},
    )
    cases = [
        {"id": "three", "inputs": {"question": "research: a, b, c"}},
        {"id": "two", "inputs": {"question": "research: x, y"}},
        {"id": "plain", "inputs": {"question": "hello"}},
    ]
    evaluators = [{"name": "answered", "type": "contains", "output": "answer", "value": ":"}]
    results = _run(
        _prepared(
            tmp_path,
            workflow,
            _batch({"research/search": ["original", "cached"]}, cases, evaluators),
        )
    )
    for choice, output in _succeeded(results, 2 * 3):
        prefix = "web" if choice["research/search"] == "original" else "cache"
        subs = {"three": ["a", "b", "c"], "two": ["x", "y"], "plain": []}[choice["case"]]
        if not subs:
            # The router sent it past the research subgraph (the list channel's default).
            assert output == {"question": "hello", "findings": [], "answer": "direct:hello"}
            continue
        # One search per sub-question (the Send fan-out), every one by the chosen child,
        # reduced into the list channel and combined.
        findings = [f"{prefix}:{s}" for s in subs]
        assert sorted(output["findings"]) == findings
        assert output["answer"] == " + ".join(findings)
    for r in results:
        sends = {"three": 3, "two": 2, "plain": 0}[r.cell.case_id]
        assert r.nodes is not None
        # The per-node figures count the fan-out: one `research/search` run per Send.
        assert r.nodes.get("research/search", {"calls": 0})["calls"] == sends
        assert ("research" in r.nodes) is (sends > 0)
    # The original cells return what the app returns run by itself.
    from appshapes.router import build

    app = build().compile()
    inputs = {c["id"]: c["inputs"] for c in cases}
    for r in results:
        if dict(r.cell.combination)["research/search"] == "original":
            assert r.output == app.invoke(inputs[r.cell.case_id]), r.cell.case_id


# -- 3. an enrichment agent with an output schema and a reflection loop -------------------


def test_an_output_schema_and_a_reflection_loop_evaluated_on_hidden_state(
    tmp_path: Path,
) -> None:
    workflow = _workflow(
        "enrich:build",
        {"gather": [{"name": "thorough", "path": "appshapes.enrich:gather_thorough"}]},
    )
    expected = {"attempts": 2, "none": []}
    cases: list[Json] = [{"id": co, "inputs": {"company": co}, "expected": expected} for co in "ab"]
    evaluators = [
        {"name": "reflected", "type": "exactMatch", "output": "$state.attempts"},
        {"name": "complete", "type": "exactMatch", "output": "$state.missing", "expected": "none"},
    ]
    batch = _batch({"gather": ["original", "thorough"]}, cases, evaluators)
    results = _run(_prepared(tmp_path, workflow, batch))
    _succeeded(results, 2 * 2)
    for r in results:
        co = r.cell.case_id
        thorough = dict(r.cell.combination)["gather"] == "thorough"
        # What is recorded is what callers get: the output schema's keys only.
        assert r.output == {
            "info": (
                {"founded": f"{co}-2001", "ceo": f"chief-of-{co}"}
                if thorough
                else {"founded": f"{co}-1999", "ceo": f"ceo-of-{co}"}
            )
        }
        # The hidden `attempts`: the original gathered twice (reflection sent it back once),
        # the thorough variant once; both ended with nothing missing.
        assert r.metrics["reflected"] == (0.0 if thorough else 1.0)
        assert r.metrics["complete"] == 1.0
        assert r.nodes is not None
        assert r.nodes["gather"]["calls"] == r.nodes["reflect"]["calls"] == (1 if thorough else 2)


# -- 4. the prebuilt ReAct agent ----------------------------------------------------------


# create_react_agent is deprecated in favour of langchain's create_agent (langchain is not
# installed here); LangGraph warns each time the graph is built.
@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_the_prebuilt_react_agent_with_its_tools_and_agent_swapped(tmp_path: Path) -> None:
    workflow = _workflow(
        "prebuilt:build",
        {
            "tools": [{"name": "archive", "path": "appshapes.prebuilt:archive_tools"}],
            "agent": [{"name": "other", "path": "appshapes.prebuilt:other_agent"}],
        },
    )
    cases = [
        {"id": q, "inputs": {"messages": [{"role": "user", "content": q}]}} for q in ("p", "q")
    ]
    evaluators = [
        {"name": "answered", "type": "contains", "output": "messages.-1.content", "value": ":"}
    ]
    batch = _batch(
        {"tools": ["original", "archive"], "agent": ["original", "other"]}, cases, evaluators
    )
    prepared = _prepared(tmp_path, workflow, batch)
    for choice, output in _succeeded(_run(prepared), 4 * 2):
        q = choice["case"]
        result = f"web[{q}]" if choice["tools"] == "original" else f"archive[{q.upper()}]"
        label = "prebuilt" if choice["agent"] == "original" else "other"
        assert _kinds(output) == ["human", "ai", "tool", "ai"]
        assert output["messages"][2]["content"] == result
        assert output["messages"][-1]["content"] == f"{label}: {result}"
