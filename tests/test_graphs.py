"""Variant swapping on real LangGraph graphs, without touching the user's factory."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from wtb.api.workflow import WorkflowSpec
from wtb.errors import ManifestError
from wtb.graphs import VariantGraphs, load_builder, resolve_variant

TOY = Path(__file__).parent / "fixtures" / "toy"


@pytest.fixture(autouse=True)
def _toy_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOY))


def _spec(
    factory: str = "toyflow.graph:build", variants: Mapping[str, Any] | None = None
) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"graph": {"factory": factory}, "variants": variants or {}})


VARIANTS: dict[str, list[dict[str, object]]] = {
    "answer": [
        {"name": "reversed", "path": "toyflow.graph:answer_reversed"},
        {
            "name": "prefixed",
            "path": "toyflow.graph:make_answer_prefixed",
            "factory": True,
            "config": {"prefix": "> "},
        },
        {"name": "async", "path": "toyflow.graph:answer_async"},
    ]
}


def test_original_graph_keeps_reducers_and_conditional_edges() -> None:
    graphs = VariantGraphs(_spec(variants=VARIANTS))
    graph, sync = graphs.get((("answer", "original"),))
    assert sync is False  # lookup is async
    out = asyncio.run(graph.ainvoke({"question": " Hi There "}))
    assert out["answer"] == "hi there"
    assert out["trail"] == ["normalize", "lookup", "answer"]
    out = asyncio.run(graph.ainvoke({"question": "stop!"}))
    assert out["trail"] == ["normalize", "shout", "answer"]
    assert out["answer"] == "STOP!"


@pytest.mark.parametrize(
    ("variant", "answer", "last"),
    [
        ("reversed", "ereht ih", "answer_reversed"),
        ("prefixed", "> hi there", "answer_prefixed:> "),
        ("async", "hi there", "answer_async"),
    ],
)
def test_variant_replaces_one_node(variant: str, answer: str, last: str) -> None:
    graph, _ = VariantGraphs(_spec(variants=VARIANTS)).get((("answer", variant),))
    out = asyncio.run(graph.ainvoke({"question": "hi there"}))
    assert out["answer"] == answer
    assert out["trail"] == ["normalize", "lookup", last]


def test_user_factory_and_compiled_graph_are_not_modified() -> None:
    from toyflow import graph as toy

    graphs = VariantGraphs(_spec("toyflow.graph:compiled", VARIANTS))
    swapped, _ = graphs.get((("answer", "reversed"),))
    assert asyncio.run(swapped.ainvoke({"question": "ab"}))["answer"] == "ba"
    # The module's own compiled graph and a fresh factory build still run the original node.
    assert asyncio.run(toy.compiled.ainvoke({"question": "ab"}))["answer"] == "ab"
    assert asyncio.run(toy.build().compile().ainvoke({"question": "ab"}))["answer"] == "ab"


def test_sync_only_graph_is_detected() -> None:
    spec = _spec(variants=VARIANTS)
    builder = load_builder(spec)
    assert set(builder.nodes) >= {"normalize", "lookup", "shout", "answer"}
    spec_sync = WorkflowSpec.model_validate(
        {
            "graph": {
                "state": "toyflow.graph:State",
                "nodes": [
                    {"name": "normalize", "path": "toyflow.graph:normalize"},
                    {"name": "answer", "path": "toyflow.graph:answer"},
                ],
                "edges": [
                    {"from": "__start__", "to": ["normalize"]},
                    {"from": "normalize", "to": ["answer"]},
                    {"from": "answer", "to": ["__end__"]},
                ],
            }
        }
    )
    graph, sync = VariantGraphs(spec_sync).get(())
    assert sync is True
    assert graph.invoke({"question": " X "})["answer"] == "x"


def test_declared_graph_with_router() -> None:
    spec = WorkflowSpec.model_validate(
        {
            "graph": {
                "state": "toyflow.graph:State",
                "nodes": [
                    {"name": "normalize", "path": "toyflow.graph:normalize"},
                    {"name": "lookup", "path": "toyflow.graph:lookup"},
                    {"name": "shout", "path": "toyflow.graph:shout"},
                    {"name": "answer", "path": "toyflow.graph:answer"},
                ],
                "edges": [
                    {"from": "__start__", "to": ["normalize"]},
                    {
                        "from": "normalize",
                        "to": ["lookup", "shout"],
                        "router": "toyflow.graph:route",
                    },
                    {"from": "lookup", "to": ["answer"]},
                    {"from": "shout", "to": ["answer"]},
                    {"from": "answer", "to": ["__end__"]},
                ],
            },
            "variants": VARIANTS,
        }
    )
    graph, _ = VariantGraphs(spec).get((("answer", "reversed"),))
    out = asyncio.run(graph.ainvoke({"question": "yes!"}))
    assert out["answer"] == "!SEY"
    assert out["trail"] == ["normalize", "shout", "answer_reversed"]


def test_unimportable_paths_name_the_field() -> None:
    with pytest.raises(ManifestError, match=r"no module named 'toyflow\.nope'") as err:
        load_builder(_spec("toyflow.nope:build"))
    assert err.value.where == "spec.graph.factory"
    with pytest.raises(ManifestError, match="has no attribute 'nothing'"):
        load_builder(_spec("toyflow.graph:nothing"))
    spec = _spec(variants={"answer": [{"name": "bad", "path": "toyflow.graph:missing_fn"}]})
    with pytest.raises(ManifestError, match="missing_fn") as err:
        resolve_variant(spec, "answer", "bad", where="matrix.answer[0]")
    assert err.value.where == "Workflow: spec.variants.answer[0].path"


def test_variant_config_not_accepted_by_factory() -> None:
    spec = _spec(
        variants={
            "answer": [
                {
                    "name": "p",
                    "path": "toyflow.graph:make_answer_prefixed",
                    "factory": True,
                    "config": {"suffix": "!"},
                }
            ]
        }
    )
    with pytest.raises(ManifestError, match="config") as err:
        resolve_variant(spec, "answer", "p", where="x")
    assert err.value.where.endswith("config")


def test_factory_returning_something_else() -> None:
    with pytest.raises(ManifestError, match="not a LangGraph graph"):
        load_builder(_spec("toyflow.graph:concurrency"))


def test_async_router_makes_the_graph_async() -> None:
    graph, sync = VariantGraphs(_spec("toyflow.graph:build_with_async_router")).get(())
    assert sync is False
    out = asyncio.run(graph.ainvoke({"question": "Go!"}))
    assert out["trail"] == ["normalize", "shout", "answer"]
