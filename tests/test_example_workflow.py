"""The RAG example (examples/rag) runs on real LangGraph and earns the verdicts it claims.

The graphs are built the way WTB builds them: call the user's factory, then replace a node's
runnable with one made by `add_node` on a scratch graph of the same state schema. Scores,
the paired t-test and Holm's correction are computed here with scipy, independently of the
engine's own statistics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import itertools
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import yaml
from langchain_core.messages import AIMessage
from langgraph.graph import StateGraph
from scipy import stats  # type: ignore[import-untyped]

from wtb.api import BatchTest, Workflow
from wtb.usage import metering

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rag"
ORIGINAL = "original"
Combination = tuple[tuple[str, str], ...]

# What the example's README and batchtest.yaml claim, per combination changed from baseline.
CLAIMED: dict[Combination, str] = {
    (("generate", ORIGINAL), ("retrieve", "bm25")): "better",
    (("generate", "brief"), ("retrieve", ORIGINAL)): "no difference",
    (("generate", "lead"), ("retrieve", ORIGINAL)): "worse",
}
BASELINE: Combination = (("generate", ORIGINAL), ("retrieve", ORIGINAL))


@pytest.fixture(scope="module")
def example_on_path() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLE))
        yield


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"rag_example.{name}")


def _resource(filename: str) -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLE / filename).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def workflow() -> Workflow:
    return Workflow.model_validate(_resource("workflow.yaml"))


@pytest.fixture(scope="module")
def batch() -> BatchTest:
    return BatchTest.model_validate(_resource("batchtest.yaml"))


@pytest.fixture(scope="module")
def cases(batch: BatchTest) -> list[dict[str, Any]]:
    path = batch.spec.dataset.path
    assert path is not None
    lines = (EXAMPLE / path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _resolve(workflow: Workflow, node: str, variant: str) -> Callable[..., Any]:
    spec = workflow.spec.variant(node, variant)
    assert spec is not None, f"{node} has no variant {variant}"
    module, _, attr = spec.path.partition(":")
    target: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return target if spec.config is None else target(**spec.config)


def _compile(workflow: Workflow, combination: Combination) -> Any:
    factory = workflow.spec.graph.factory
    assert factory is not None
    module, _, attr = factory.partition(":")
    builder = getattr(importlib.import_module(module), attr)()
    for node, variant in combination:
        if variant == ORIGINAL:
            continue
        old = builder.nodes[node]
        scratch: StateGraph[Any] = StateGraph(builder.state_schema)
        scratch.add_node(node, _resolve(workflow, node, variant))
        builder.nodes[node] = dataclasses.replace(old, runnable=scratch.nodes[node].runnable)
    return builder.compile()


def _combinations(batch: BatchTest) -> list[Combination]:
    """The matrix's product narrowed by `include`, nodes sorted by name as WTB keys them."""
    nodes = sorted(batch.spec.matrix)
    combos = [
        tuple(zip(nodes, pick, strict=True))
        for pick in itertools.product(*(batch.spec.matrix[n] for n in nodes))
    ]
    return [
        c
        for c in combos
        if not batch.spec.include
        or any(all(dict(c)[k] == v for k, v in p.items()) for p in batch.spec.include)
    ]


def _correct(output: dict[str, Any], expected: dict[str, Any]) -> float:
    """The `contains` evaluator with ignoreCase, as batchtest.yaml declares it."""
    return float(str(expected["answer"]).lower() in str(output.get("answer", "")).lower())


async def _run_all(
    graph: Any, cases: list[dict[str, Any]], repeats: int
) -> list[list[dict[str, Any]]]:
    """Final states per case, one per repeat, run concurrently like a batch would."""
    runs = [graph.ainvoke(case["inputs"]) for case in cases for _ in range(repeats)]
    states = await asyncio.gather(*runs)
    return [states[i * repeats : (i + 1) * repeats] for i in range(len(cases))]


@pytest.fixture(scope="module")
def outputs(
    example_on_path: None, workflow: Workflow, batch: BatchTest, cases: list[dict[str, Any]]
) -> dict[Combination, list[list[dict[str, Any]]]]:
    async def run() -> dict[Combination, list[list[dict[str, Any]]]]:
        return {
            combo: await _run_all(_compile(workflow, combo), cases, batch.spec.repeats)
            for combo in _combinations(batch)
        }

    return asyncio.run(run())


def _holm(pvalues: dict[Combination, float]) -> dict[Combination, float]:
    """Holm-adjusted p-values (step-down, made monotone)."""
    ordered = sorted(pvalues, key=lambda c: pvalues[c])
    adjusted: dict[Combination, float] = {}
    running = 0.0
    for rank, combo in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * pvalues[combo]))
        adjusted[combo] = running
    return adjusted


def test_manifests_validate_and_the_dataset_is_well_formed(
    batch: BatchTest, cases: list[dict[str, Any]]
) -> None:
    assert batch.spec.workflow_ref.name == "rag"
    assert len(cases) >= 40
    ids = [c["id"] for c in cases]
    assert len(set(ids)) == len(ids)
    for case in cases:
        assert case["inputs"]["question"].strip()
        assert case["expected"]["answer"].strip()


def test_the_stemmer_joins_word_forms_that_retrieval_must_match(example_on_path: None) -> None:
    stem = _module("text").stem
    assert stem("founded") == stem("founding") == stem("founder") == stem("found")
    assert stem("mines") == stem("mined") == stem("mine")
    assert stem("knitted") == stem("knitting")
    assert stem("supplies") == stem("supply")
    assert stem("grass") == "grass"
    assert stem("lighthouse") != stem("light")


def test_every_declared_variant_resolves_to_a_node(
    example_on_path: None, workflow: Workflow
) -> None:
    declared = [(node, v.name) for node, vs in workflow.spec.variants.items() for v in vs]
    assert len(declared) >= 4
    builder = _compile(workflow, ())
    for node, variant in declared:
        assert node in builder.builder.nodes
        assert callable(_resolve(workflow, node, variant))


def test_matrix_is_the_baseline_and_three_one_node_changes(batch: BatchTest) -> None:
    combos = _combinations(batch)
    assert sorted(combos) == sorted([BASELINE, *CLAIMED])


def test_claimed_verdicts_hold_under_paired_t_tests_with_holm(
    batch: BatchTest,
    cases: list[dict[str, Any]],
    outputs: dict[Combination, list[list[dict[str, Any]]]],
) -> None:
    def per_case(combo: Combination) -> list[float]:
        return [
            sum(_correct(o, case["expected"]) for o in runs) / len(runs)
            for case, runs in zip(cases, outputs[combo], strict=True)
        ]

    base = per_case(BASELINE)
    scores = {combo: per_case(combo) for combo in CLAIMED}
    pvalues: dict[Combination, float] = {}
    for combo, s in scores.items():
        p = float(stats.ttest_rel(s, base).pvalue)
        pvalues[combo] = 1.0 if math.isnan(p) else p  # identical scores: no difference
    adjusted = _holm(pvalues)

    verdicts = {}
    for combo, s in scores.items():
        delta = sum(s) / len(s) - sum(base) / len(base)
        if adjusted[combo] >= batch.spec.alpha:
            verdicts[combo] = "no difference"
        else:
            verdicts[combo] = "better" if delta > 0 else "worse"
    assert verdicts == CLAIMED, {c: (verdicts[c], adjusted[c]) for c in CLAIMED}
    # The baseline is a fair opponent, neither broken nor perfect.
    assert 0.6 < sum(base) / len(base) < 0.95


def test_runs_are_deterministic_across_repeats(
    outputs: dict[Combination, list[list[dict[str, Any]]]],
) -> None:
    for runs_per_case in outputs.values():
        for runs in runs_per_case:
            assert len({r["answer"] for r in runs}) == 1


def test_some_cases_need_the_rewrite_and_it_happens_at_most_once(
    outputs: dict[Combination, list[list[dict[str, Any]]]],
) -> None:
    steps = [runs[0]["steps"] for runs in outputs[BASELINE]]
    rewritten = [s for s in steps if "rewrite" in s]
    assert len(rewritten) >= 5
    for s in rewritten:
        assert s.count("rewrite") == 1
        assert s == ["retrieve", "grade", "rewrite", "retrieve", "grade", "generate"]
    assert ["retrieve", "grade", "generate"] in steps


def test_generators_report_usage_on_an_ai_message(
    outputs: dict[Combination, list[list[dict[str, Any]]]],
) -> None:
    for runs_per_case in outputs.values():
        for runs in runs_per_case:
            message = runs[0]["messages"][-1]
            assert isinstance(message, AIMessage)
            usage = message.usage_metadata
            assert usage is not None
            assert usage["output_tokens"] > 0
            assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_brief_answers_use_fewer_output_tokens_than_the_original(
    outputs: dict[Combination, list[list[dict[str, Any]]]],
) -> None:
    def output_tokens(combo: Combination) -> int:
        return sum(
            runs[0]["messages"][-1].usage_metadata["output_tokens"] for runs in outputs[combo]
        )

    assert output_tokens((("generate", "brief"), ("retrieve", ORIGINAL))) < output_tokens(BASELINE)


def test_the_grader_reports_tokens_and_cost(
    example_on_path: None, workflow: Workflow, cases: list[dict[str, Any]]
) -> None:
    graph = _compile(workflow, BASELINE)

    async def run() -> tuple[int | None, float | None]:
        with metering() as meter:
            await graph.ainvoke(cases[0]["inputs"])
        return meter.tokens, meter.cost

    tokens, cost = asyncio.run(run())
    assert tokens is not None
    assert tokens > 0
    assert cost is not None
    assert cost > 0


def test_grounded_scores_lead_answers_lower_than_graded_ones(
    example_on_path: None, outputs: dict[Combination, list[list[dict[str, Any]]]]
) -> None:
    grounded = _module("evals").grounded

    def mean_grounded(combo: Combination) -> float:
        values = [grounded(SimpleNamespace(output=runs[0])) for runs in outputs[combo]]
        scored: list[float] = [float(v) for v in values if v is not None]
        assert all(0.0 <= v <= 1.0 for v in scored)
        return sum(scored) / len(scored)

    assert mean_grounded((("generate", "lead"), ("retrieve", ORIGINAL))) < mean_grounded(BASELINE)
    assert grounded(SimpleNamespace(output={"answer": ""})) is None


def test_the_users_factory_is_not_modified_by_swapping(
    example_on_path: None, workflow: Workflow
) -> None:
    graph_module = _module("graph")
    original = graph_module.build_graph().nodes["retrieve"].runnable
    _compile(workflow, (("retrieve", "bm25"),))
    again = graph_module.build_graph().nodes["retrieve"].runnable
    assert type(again) is type(original)
    assert again.afunc is original.afunc
