"""Bounded work per object: a matrix is counted arithmetically before it is expanded, and
one over the limits is refused naming spec.matrix, without its combinations in memory."""

from __future__ import annotations

import copy
import itertools
import random
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from wtb import variant_matrix
from wtb.api.batchtest import BatchTestSpec
from wtb.cli.main import cli
from wtb.errors import ManifestError
from wtb.plan import build_plan, check_cell_count
from wtb.settings import get_settings
from wtb.variant_matrix import (
    check_combination_count,
    count_combinations,
    expand_combinations,
)

TOY = Path(__file__).parent / "fixtures" / "toy"
WORKFLOW = yaml.safe_load((TOY / "workflow.yaml").read_text())
BATCH = yaml.safe_load((TOY / "batchtest.yaml").read_text())

WIDE = {f"node{i}": ["original", *(f"v{j}" for j in range(7))] for i in range(8)}
"""8 nodes x 8 variants: 16,777,216 combinations (the issue's 13 M ran out of memory)."""


def _spec(matrix: dict[str, list[str]], **more: Any) -> BatchTestSpec:
    return BatchTestSpec.model_validate(
        {
            "workflowRef": {"name": "wf"},
            "matrix": matrix,
            "dataset": {"cases": [{"inputs": {"q": 1}}]},
            "evaluators": [{"name": "t", "type": "tokens"}],
            "primaryMetric": "t",
            **more,
        }
    )


def _brute_force(spec: BatchTestSpec) -> int:
    nodes = sorted(spec.matrix)

    def matches(combo: dict[str, str], pattern: dict[str, str]) -> bool:
        return all(combo.get(n) == v for n, v in pattern.items())

    count = 0
    for values in itertools.product(*(spec.matrix[n] for n in nodes)):
        combo = dict(zip(nodes, values, strict=True))
        if spec.include and not any(matches(combo, p) for p in spec.include):
            continue
        if any(matches(combo, p) for p in spec.exclude):
            continue
        count += 1
    return count


def _random_patterns(rng: random.Random, matrix: dict[str, list[str]]) -> list[dict[str, str]]:
    patterns = []
    for _ in range(rng.randint(0, 4)):
        nodes = rng.sample(sorted(matrix), rng.randint(1, len(matrix)))
        patterns.append({n: rng.choice(matrix[n]) for n in nodes})
    return patterns


@pytest.mark.parametrize("seed", range(40))
def test_count_is_exact_without_include_and_never_below_the_expansion(seed: int) -> None:
    rng = random.Random(seed)
    matrix = {
        f"n{i}": ["original", *(f"v{j}" for j in range(rng.randint(0, 3)))]
        for i in range(rng.randint(1, 4))
    }
    include = _random_patterns(rng, matrix) if seed % 2 else []
    exclude = _random_patterns(rng, matrix)
    spec = _spec(matrix, include=include, exclude=exclude)
    exact = _brute_force(spec)
    assert len(expand_combinations(spec)) == exact
    if include:
        assert count_combinations(spec) >= exact
    else:
        assert count_combinations(spec) == exact


def test_expansion_keeps_product_order_with_include() -> None:
    matrix = {"a": ["original", "x", "y"], "b": ["original", "z"]}
    include = [{"b": "z"}, {"a": "original"}]
    spec = _spec(matrix, include=include)
    every = expand_combinations(_spec(matrix))
    assert expand_combinations(spec) == tuple(
        c for c in every if dict(c)["b"] == "z" or dict(c)["a"] == "original"
    )


@contextmanager
def _peak_growth() -> Iterator[list[int]]:
    """The peak of memory allocated inside the block, in bytes (tracemalloc)."""
    out: list[int] = []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        yield out
        _, peak = tracemalloc.get_traced_memory()
        out.append(peak - start)
    finally:
        tracemalloc.stop()


MIB = 1024 * 1024


def test_a_huge_matrix_is_refused_before_expansion() -> None:
    spec = _spec(WIDE)
    with _peak_growth() as peak, pytest.raises(ManifestError) as caught:
        build_plan(spec, [], where="BatchTest x/y: spec")
    assert peak[0] < 2 * MIB, f"{peak[0]} bytes to refuse a matrix"
    error = caught.value
    assert error.where == "BatchTest x/y: spec.matrix"
    assert "16,777,216 combinations" in error.message
    assert "limit of 10,000" in error.message
    assert "WTB_MAX_COMBINATIONS" in error.fix
    assert "include" in error.fix


def test_include_narrows_a_huge_matrix_without_walking_the_product() -> None:
    """10**20 combinations, of which include keeps 3 x 100: generated from the patterns."""
    matrix = {f"n{i:02}": ["original", *(f"v{j}" for j in range(9))] for i in range(20)}
    rest = {f"n{i:02}": "original" for i in range(2, 20)}
    include = [{**rest, "n02": v} for v in ("original", "v0", "v1")]
    spec = _spec(matrix, include=include, baseline={**rest, "n00": "original", "n01": "original"})
    assert count_combinations(spec) == 300
    with _peak_growth() as peak:
        plan = build_plan(spec, [])
    assert len(plan.combinations) == 300
    assert peak[0] < 8 * MIB
    # Include that keeps too much is refused, counted exactly (overlapping patterns too).
    keeps_much = [{f"n{i:02}": "original" for i in range(15)}] * 2
    with pytest.raises(ManifestError, match=r"has 100,000 combinations"):
        check_combination_count(_spec(matrix, include=keeps_much))


def test_a_count_too_costly_to_make_exact_is_an_upper_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    matrix = {f"n{i}": ["original", "x", "y"] for i in range(10)}  # 59,049
    include = [{"n0": "x"}, {"n1": "x"}]  # 2 x 19,683 (overlapping: 32,805 exactly)
    spec = _spec(matrix, include=include)
    assert count_combinations(spec) == 32_805
    monkeypatch.setattr(variant_matrix, "COUNT_STEPS", 3)
    assert count_combinations(spec) == 39_366
    with pytest.raises(ManifestError, match=r"has up to 39,366 combinations"):
        check_combination_count(spec)
    assert count_combinations(_spec(matrix, exclude=include)) == 59_049


def test_exclude_counts_exactly_so_a_narrowed_matrix_fits() -> None:
    """120 x 120 = 14,400 combinations minus 119 x 120 excluded: 120 remain."""
    variants = ["original", *(f"v{j}" for j in range(119))]
    spec = _spec({"a": variants, "b": variants}, exclude=[{"a": v} for v in variants[1:]])
    assert count_combinations(spec) == 120
    assert len(build_plan(spec, []).combinations) == 120


def test_the_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec({"a": ["original", "x", "y"], "b": ["original", "z"]})
    monkeypatch.setenv("WTB_MAX_COMBINATIONS", "5")
    monkeypatch.setenv("WTB_MAX_CELLS", "11")
    get_settings.cache_clear()
    try:
        with pytest.raises(ManifestError, match=r"6 combinations .* limit of 5"):
            build_plan(spec, [])
        monkeypatch.setenv("WTB_MAX_COMBINATIONS", "6")
        get_settings.cache_clear()
        assert build_plan(spec, []).total == 0  # cases unknown: cells not checked
        with pytest.raises(ManifestError) as caught:
            build_plan(spec.model_copy(update={"repeats": 2}), [])  # 6 x 1 inline case x 2
        assert "12 cells" in caught.value.message
        assert "limit of 11" in caught.value.message
        assert caught.value.where == "spec.matrix"
        assert "WTB_MAX_CELLS" in caught.value.fix
    finally:
        get_settings.cache_clear()


def test_cell_count_checks_cases_times_repeats() -> None:
    spec = _spec({"a": ["original"]}, repeats=10)
    check_cell_count(spec, 1000, 100, limit=1_000_000)
    with pytest.raises(ManifestError, match="1,010,000 cells"):
        check_cell_count(spec, 1000, 101, limit=1_000_000)


def _project(root: Path, matrix: dict[str, list[str]]) -> None:
    batch = copy.deepcopy(BATCH)
    batch["spec"]["matrix"] = matrix
    (root / "cases.jsonl").write_text((TOY / "cases.jsonl").read_text())
    (root / "toyflow").symlink_to(TOY / "toyflow")
    (root / "workflow.yaml").write_text(yaml.safe_dump(WORKFLOW))
    (root / "batchtest.yaml").write_text(yaml.safe_dump(batch))


@pytest.mark.parametrize("command", ["validate", "run"])
def test_wtb_refuses_a_matrix_of_millions(command: str, tmp_path: Path) -> None:
    _project(tmp_path, {"answer": ["original", "reversed", "async"], **WIDE})
    db = tmp_path / "store" / "wtb.db"
    args = [command, "-f", str(tmp_path)]
    if command == "run":
        args += ["--database", f"sqlite:///{db}"]
    with _peak_growth() as peak:
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "spec.matrix" in result.stderr
    assert "50,331,648 combinations" in result.stderr
    assert "WTB_MAX_COMBINATIONS" in result.stderr
    assert "Traceback" not in result.stderr
    assert peak[0] < 32 * MIB, f"{peak[0]} bytes"
    assert not db.parent.exists()


def test_the_operator_passes_raised_limits_on_to_the_driver() -> None:
    """The driver plans what the operator admitted: limits that differ from the defaults go
    into the Ray job's environment."""
    from wtb.settings import Settings

    assert Settings().limits_env() == {}
    raised = Settings(max_combinations=50_000, max_cells=2_000_000)
    assert raised.limits_env() == {"WTB_MAX_COMBINATIONS": "50000", "WTB_MAX_CELLS": "2000000"}
