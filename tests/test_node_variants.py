"""Variants of every kind LangGraph takes as a node, on a real application (tests/fixtures/agent:
a research subgraph, a tool-calling agent with a ToolNode), run through the public engine:
prepare (what `wtb validate` does), then run_batch with the inline runner into a store.

The app's answer spells out which search, which research graph, which tool and which answer
node ran, so each cell's recorded output shows what that cell really did.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import pytest
import yaml

from wtb.api.comparison import ComparisonMatrix
from wtb.errors import ManifestError, ManifestErrors
from wtb.graphs import VariantGraphs, is_sync_graph, load_builder, node_paths, swap_nodes
from wtb.manifests import load_manifests
from wtb.pipeline.execute import run_batch
from wtb.pipeline.prepare import PreparedBatch, prepare
from wtb.runners import InlineRunner
from wtb.storage import ResultStore
from wtb.storage.records import StoredCell

AGENT = Path(__file__).parent / "fixtures" / "agent"
QUESTIONS = ["why", "how"]
Json = dict[str, Any]


@pytest.fixture(autouse=True)
def _agent_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(AGENT))


def expected_answer(choice: Mapping[str, str], question: str) -> str:
    """What the app answers with these variants: research notes -> tool query -> answer."""
    first = {
        "original": f"search:{question}",
        "web": f"web:{question}",
        "bing": f"bing:{question}",
    }[choice.get("research/search", "original")]
    if choice.get("research", "original") == "deep":
        notes = [first, "more", "summary(2)"]
    else:
        notes = [first, "summary(1)"]
    query = " | ".join(notes)
    found = (
        f"found[{query}]"
        if choice.get("tools", "original") == "original"
        else f"FOUND[{query.upper()}]"
    )
    return {
        "original": found,
        "shouted": found.upper() + "!",
        "with_config": f"{found}@answer",
        "with_runtime": f"{found}#Runtime",
    }[choice.get("answer", "original")]


def _manifests(
    tmp_path: Path,
    name: str,
    variants: Mapping[str, list[Json]] | None,
    spec: Json,
    factory: str | None = None,
) -> Path:
    workflow = yaml.safe_load((AGENT / "workflow.yaml").read_text())
    if factory is not None:  # another graph of the app: only the variants of its nodes
        workflow["spec"]["graph"]["factory"] = factory
        workflow["spec"]["variants"] = {
            "research/search": workflow["spec"]["variants"]["research/search"]
        }
    for node, more in (variants or {}).items():
        workflow["spec"]["variants"].setdefault(node, []).extend(more)
    batch = {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "BatchTest",
        "metadata": {"name": name},
        "spec": {
            "workflowRef": {"name": "agent"},
            "dataset": {
                "cases": [
                    {
                        "id": q,
                        "inputs": {"question": q},
                        "expected": {"answer": expected_answer({}, q)},
                    }
                    for q in QUESTIONS
                ]
            },
            "evaluators": [
                {"name": "correct", "type": "exactMatch", "output": "answer", "expected": "answer"}
            ],
            "primaryMetric": "correct",
            "concurrency": 4,
            **spec,
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all([workflow, batch]))
    return path


def _prepared(
    tmp_path: Path,
    name: str,
    variants: Mapping[str, list[Json]] | None = None,
    factory: str | None = None,
    **spec: Any,
) -> PreparedBatch:
    """The agent Workflow (plus `variants`; with `factory`, another graph of the app) and a
    BatchTest `name` with `spec`, through the manifests as a user writes them, prepared as
    `wtb validate` and `wtb run` do."""
    path = _manifests(tmp_path, name, variants, spec, factory)
    manifests = load_manifests([str(path)])
    bt, source = manifests.batchtests[0]
    wf, _ = manifests.workflow_for(bt, source)
    return prepare(bt, wf, base_dir=tmp_path, where=path.name, workflow_where=path.name)


def _run(tmp_path: Path, prepared: PreparedBatch) -> tuple[list[StoredCell], ComparisonMatrix]:
    """Every recorded cell of the batch, and its comparison matrix."""
    from wtb.comparison.stored import matrix_for_run

    with ResultStore.open(f"sqlite:///{tmp_path / 'wtb.db'}") as store:
        outcome = run_batch(prepared, store, InlineRunner(backoff_scale=0))
        cells = list(store.iter_cells(outcome.run_id))
        matrix = matrix_for_run(store, outcome.run_id, prepared.job.batch, prepared.plan.baseline)
    return cells, matrix


def _assert_cells_did_what_their_variants_say(
    cells: list[StoredCell], combinations: int, fixed: Mapping[str, str] | None = None
) -> None:
    assert len(cells) == combinations * len(QUESTIONS)
    assert len({c.combination for c in cells}) == combinations
    for cell in cells:
        assert cell.status == "succeeded", (cell.combination, cell.error_message)
        assert cell.output is not None
        choice = {**dict(cell.combination), **(fixed or {})}
        assert cell.output["answer"] == expected_answer(choice, cell.case_id), cell.combination
        # The agent really called its tool through the tools node, once.
        kinds = [m["type"] for m in cell.output["messages"]]
        assert kinds == ["human", "ai", "tool", "ai"]


def test_functions_runnables_toolnodes_and_subgraphs_as_variants(tmp_path: Path) -> None:
    """A compiled subgraph (research=deep), a ToolNode (tools=loud), a RunnableLambda
    (answer=shouted), a function taking LangGraph's config (answer=with_config) and an async
    one taking its runtime (answer=with_runtime), in one matrix; the app's answer shows
    that each cell ran exactly its variants."""
    prepared = _prepared(
        tmp_path,
        "kinds",
        matrix={
            "research": ["original", "deep"],
            "tools": ["original", "loud"],
            "answer": ["original", "shouted", "with_config", "with_runtime"],
        },
    )
    cells, matrix = _run(tmp_path, prepared)
    _assert_cells_did_what_their_variants_say(cells, combinations=16)
    assert matrix.combinations == 16
    assert matrix.fixed is None
    best = matrix.rows[0]
    assert best.label == "answer=original, research=original, tools=original"
    assert best.metrics["correct"].value == 1.0


def test_a_node_inside_a_subgraph_is_swapped(tmp_path: Path) -> None:
    """`research/search` names the node `search` inside the subgraph node `research`; with
    research=deep it is swapped inside the variant subgraph."""
    prepared = _prepared(
        tmp_path,
        "inner",
        matrix={"research": ["original", "deep"], "research/search": ["original", "web", "bing"]},
    )
    cells, _ = _run(tmp_path, prepared)
    _assert_cells_did_what_their_variants_say(cells, combinations=6)
    seen = {
        (dict(c.combination)["research/search"], c.output["notes"][0])
        for c in cells
        if c.case_id == "why" and c.output is not None
    }
    assert seen == {("original", "search:why"), ("web", "web:why"), ("bing", "bing:why")}


def test_the_rebuilt_subgraph_keeps_its_compile_arguments_and_the_users_is_untouched(
    tmp_path: Path,
) -> None:
    from agentflow import app

    prepared = _prepared(tmp_path, "keep", matrix={"research/search": ["original", "web"]})
    graph, _ = VariantGraphs(prepared.job.workflow).get((("research/search", "web"),))
    rebuilt = graph.builder.nodes["research"].runnable
    assert rebuilt is not app.research
    assert rebuilt.name == "research"
    assert rebuilt.invoke({"question": "q"})["notes"] == ["web:q", "summary(1)"]
    # The application's own subgraph and graph still run the original search.
    assert app.research.invoke({"question": "q"})["notes"] == ["search:q", "summary(1)"]
    assert (
        app.build().compile().invoke({"question": "q"})["answer"] == "found[search:q | summary(1)]"
    )


def test_fixed_nodes_are_in_every_cell_and_in_no_label(tmp_path: Path) -> None:
    """`fixed` replaces tools in every cell (with a factory taking no arguments); the
    labels and the recorded combinations show only the node that varies."""
    prepared = _prepared(
        tmp_path,
        "fixed",
        matrix={"research/search": ["original", "web"]},
        fixed={"tools": "loud_factory"},
    )
    assert [c for c in prepared.plan.combinations] == [
        (("research/search", "original"),),
        (("research/search", "web"),),
    ]
    cells, matrix = _run(tmp_path, prepared)
    _assert_cells_did_what_their_variants_say(
        cells, combinations=2, fixed={"tools": "loud_factory"}
    )
    assert all(c.output is not None and "FOUND[" in c.output["answer"] for c in cells)
    assert {row.label for row in matrix.rows} == {
        "research/search=original",
        "research/search=web",
    }
    assert matrix.baseline == "research/search=original"
    assert matrix.fixed == {"tools": "loud_factory"}


BAD_VARIANTS = [
    pytest.param(
        {"name": "bad", "path": "agentflow.app:not_a_node"},
        "spec.variants.answer[3].path",
        ["cannot be called as a node, with the state as LangGraph calls it"],
        "set `factory: true`",
        id="zero-argument function not marked as a factory",
    ),
    pytest.param(
        {"name": "bad", "path": "agentflow.app:answer_with_untyped_config"},
        "spec.variants.answer[3].path",
        ["cannot be called as a node", "'config'"],
        "annotate `config`",
        id="config parameter LangGraph would not fill",
    ),
    pytest.param(
        {"name": "bad", "path": "agentflow.app:returns_a_string", "factory": True},
        "spec.variants.answer[3].factory",
        ["what factory 'agentflow.app:returns_a_string' returned", "is a str"],
        "make the factory return the node",
        id="factory returning no node",
    ),
    pytest.param(
        {"name": "bad", "path": "agentflow.app:tools_builder", "factory": True},
        "spec.variants.answer[3].factory",
        ["uncompiled StateGraph"],
        "compile it",
        id="factory returning an uncompiled graph",
    ),
    pytest.param(
        {"name": "bad", "path": "agentflow.app:not_callable"},
        "spec.variants.answer[3].path",
        ["is a int, which LangGraph cannot run as a node"],
        "a ToolNode, a compiled graph",
        id="not callable",
    ),
    pytest.param(
        {"name": "bad", "path": "agentflow.app:make_search", "factory": True, "config": {"k": 1}},
        "spec.variants.answer[3].config",
        ["cannot be called with config {'k': 1}", "'k'"],
        "keyword arguments",
        id="factory config it does not take",
    ),
]


# LangGraph warns of the mistyped `config` too, as it builds the node WTB then refuses.
@pytest.mark.filterwarnings("ignore:The 'config' parameter should be typed:UserWarning")
@pytest.mark.parametrize(("variant", "where", "says", "fix"), BAD_VARIANTS)
def test_a_variant_that_cannot_run_as_a_node_is_refused_before_any_cell(
    tmp_path: Path, variant: Json, where: str, says: list[str], fix: str
) -> None:
    with pytest.raises(ManifestError) as err:
        _prepared(
            tmp_path,
            "bad",
            variants={"answer": [variant]},
            matrix={"answer": ["original", "bad"]},
        )
    assert err.value.where.endswith(where), err.value.where
    for part in says:
        assert part in str(err.value), str(err.value)
    assert err.value.fix is not None
    assert fix in err.value.fix, err.value.fix


@pytest.mark.parametrize(
    ("matrix", "where", "says", "fix"),
    [
        (
            {"research/serch": ["original"]},
            "spec.matrix.research/serch",
            "matrix names node 'research/serch', which workflow 'agent' does not have",
            "did you mean 'research/search'",
        ),
        (
            {"agent/model": ["original"]},
            "spec.matrix.agent/model",
            "'agent' is not a compiled StateGraph added with add_node",
            "research/summarize",
        ),
    ],
)
def test_an_unknown_node_path_is_refused_with_the_closest(
    tmp_path: Path, matrix: dict[str, list[str]], where: str, says: str, fix: str
) -> None:
    with pytest.raises(ManifestError) as err:
        _prepared(tmp_path, "paths", matrix=matrix)
    assert err.value.where.endswith(where)
    assert says in str(err.value)
    assert err.value.fix is not None
    assert fix in err.value.fix


def test_config_without_factory_is_refused_naming_the_fix(tmp_path: Path) -> None:
    variant = {"name": "p", "path": "agentflow.app:make_search", "config": {"engine": "x"}}
    path = _manifests(
        tmp_path, "cfg", {"research/search": [variant]}, {"matrix": {"research/search": ["p"]}}
    )
    with pytest.raises(ManifestErrors) as err:
        load_manifests([str(path)])
    message = str(err.value)
    assert "spec.variants.research/search[2]" in message
    assert "add `factory: true`" in message


def test_a_fixed_node_is_checked_like_a_matrix_node(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as err:
        _prepared(tmp_path, "fx", matrix={"answer": ["original"]}, fixed={"tool": "loud"})
    assert err.value.where.endswith("spec.fixed.tool")
    assert err.value.fix is not None
    assert "did you mean 'tools'" in err.value.fix
    with pytest.raises(ManifestError, match="has no variant 'quiet'"):
        _prepared(tmp_path, "fx2", matrix={"answer": ["original"]}, fixed={"tools": "quiet"})


def test_node_paths_reach_into_subgraph_nodes_only(tmp_path: Path) -> None:
    prepared = _prepared(tmp_path, "np", matrix={"answer": ["original"]})
    builder = load_builder(prepared.job.workflow)
    assert node_paths(builder) == [
        "research",
        "research/search",
        "research/summarize",
        "agent",
        "tools",
        "answer",
    ]


# --- sync or async --------------------------------------------------------------------------


class _S(TypedDict, total=False):
    x: int


def _inc(state: _S) -> dict[str, Any]:
    return {"x": state.get("x", 0) + 1}


async def _ainc(state: _S) -> dict[str, Any]:
    return {"x": state.get("x", 0) + 1}


def _chain(*nodes: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    g: StateGraph[_S] = StateGraph(_S)
    previous = START
    for i, node in enumerate(nodes):
        g.add_node(f"n{i}", node)
        g.add_edge(previous, f"n{i}")
        previous = f"n{i}"
    g.add_edge(previous, END)
    return g


def test_is_sync_graph_sees_into_subgraphs_and_refuses_other_runnables() -> None:
    from langchain_core.runnables import RunnableLambda
    from langgraph.prebuilt import ToolNode

    sync_sub = _chain(_inc, _inc).compile()
    async_sub = _chain(_inc, _ainc).compile()
    assert is_sync_graph(_chain(_inc, sync_sub))
    assert not is_sync_graph(_chain(_inc, async_sub))
    assert not is_sync_graph(_chain(_inc, RunnableLambda(_inc)))
    assert not is_sync_graph(_chain(_inc, ToolNode([])))
    # A sync graph with a sync subgraph runs whole with invoke.
    assert _chain(_inc, sync_sub).compile().invoke({"x": 0}) == {"x": 3}


def test_a_sync_app_with_a_subgraph_runs_on_threads_unless_a_swap_makes_it_async(
    tmp_path: Path,
) -> None:
    """research/search swapped in a graph of sync functions: the rebuilt subgraph is still
    sync, so cells run whole on worker threads; an async search makes the graph async."""
    prepared = _prepared(
        tmp_path,
        "sync",
        {"research/search": [{"name": "async", "path": "agentflow.app:search_async"}]},
        factory="agentflow.app:build_sync",
        matrix={"research/search": ["original", "web", "async"]},
    )
    graphs = VariantGraphs(prepared.job.workflow)
    assert graphs.get((("research/search", "original"),))[1] is True
    web, sync = graphs.get((("research/search", "web"),))
    assert sync is True
    assert web.invoke({"question": "q"})["answer"] == "web:q | summary(1)"  # no event loop
    assert graphs.get((("research/search", "async"),))[1] is False
    cells, _ = _run(tmp_path, prepared)
    answers = {
        (dict(c.combination)["research/search"], c.case_id): c.output and c.output["answer"]
        for c in cells
    }
    assert answers == {
        (search, q): f"{prefix}:{q} | summary(1)"
        for search, prefix in [("original", "search"), ("web", "web"), ("async", "async")]
        for q in QUESTIONS
    }


def test_wtb_run_shows_the_fixed_choice_once_and_validate_refuses_a_bad_variant(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from wtb.cli.main import cli

    path = _manifests(
        tmp_path,
        "cli",
        None,
        {"matrix": {"research/search": ["original", "web"]}, "fixed": {"tools": "loud"}},
    )
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    result = CliRunner().invoke(cli, ["run", "-f", str(path), "--database", db, "-o", "table"])
    assert result.exit_code == 0, result.output
    assert "in every cell: tools=loud" in result.output
    assert "in every combination: tools=loud" in " ".join(result.output.split())
    assert "tools=loud," not in result.output  # not in any combination's label

    result = CliRunner().invoke(cli, ["validate", "-f", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 combinations x 2 cases x 1 repeats = 4 cells; in every cell: tools=loud" in (
        result.output
    )

    bad = _manifests(
        tmp_path,
        "cli-bad",
        {"answer": [{"name": "bad", "path": "agentflow.app:not_a_node"}]},
        {"matrix": {"answer": ["original", "bad"]}},
    )
    result = CliRunner().invoke(cli, ["validate", "-f", str(bad)])
    assert result.exit_code == 2, result.output
    assert "spec.variants.answer[3].path" in result.output
    assert "factory: true" in result.output


def _dbl(state: _S) -> dict[str, Any]:
    return {"x": state.get("x", 0) * 2}


def _boom(state: _S) -> dict[str, Any]:
    raise ValueError("boom")


def _handler(state: _S) -> dict[str, Any]:
    return {"x": -1}


def test_a_swapped_subgraph_is_compiled_as_the_user_compiled_it() -> None:
    """Name, interrupts, `with_config` settings and a default error handler (which LangGraph
    adds to the builder as a node when compiling) survive the rebuild."""
    from langgraph.graph import StateGraph

    def inner() -> StateGraph[_S]:
        graph: StateGraph[_S] = _chain(_inc)
        return graph.set_node_defaults(error_handler=_handler)

    sub = inner().compile(name="inner", interrupt_after="*").with_config(tags=["kept"])
    outer = _chain(sub)
    assert node_paths(outer) == ["n0", "n0/n0"]

    swapped = _copy_of(outer)
    swap_nodes(swapped, {"n0/n0": _dbl})
    rebuilt = swapped.nodes["n0"].runnable
    assert (rebuilt.name, rebuilt.interrupt_after_nodes) == ("inner", "*")
    assert rebuilt.config["tags"] == ["kept"]
    assert rebuilt.with_config(tags=[]).builder.nodes["n0"].runnable.func is _dbl

    failing = _copy_of(_chain(inner().compile(name="inner")))
    swap_nodes(failing, {"n0/n0": _boom})
    assert failing.compile().invoke({"x": 3}) == {"x": -1}  # the handler caught it
    assert sub.builder.nodes["n0"].runnable.func is _inc  # the user's subgraph is untouched


def _copy_of(builder: Any) -> Any:
    import copy

    copied = copy.copy(builder)
    copied.nodes = dict(builder.nodes)
    return copied
