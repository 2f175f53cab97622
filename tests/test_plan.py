"""Cells: the matrix expansion, include/exclude, the baseline, deterministic keys, streaming."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tracemalloc

import pytest

from wtb.api.batchtest import BatchTestSpec
from wtb.domain import Case
from wtb.errors import ManifestError
from wtb.plan import build_plan, cell_key
from wtb.variant_matrix import as_combination, expand_combinations


def _spec(**over: object) -> BatchTestSpec:
    base: dict[str, object] = {
        "workflowRef": {"name": "wf"},
        "matrix": {"retrieve": ["original", "bm25"], "generate": ["original", "short", "long"]},
        "dataset": {"cases": [{"inputs": {"q": "x"}}]},
        "evaluators": [{"name": "ok", "type": "latency"}],
        "primaryMetric": "ok",
    }
    base.update(over)
    return BatchTestSpec.model_validate(base)


CASES = [Case(id=f"c{i}", inputs={"q": i}) for i in range(3)]


def test_cartesian_product_in_node_order() -> None:
    combos = expand_combinations(_spec())
    assert len(combos) == 6
    assert combos[0] == (("generate", "original"), ("retrieve", "original"))
    assert len(set(combos)) == 6


def test_include_and_exclude_narrow_the_matrix() -> None:
    spec = _spec(
        include=[{"retrieve": "bm25"}, {"generate": "original"}], exclude=[{"generate": "long"}]
    )
    combos = {dict(c)["retrieve"] + "/" + dict(c)["generate"] for c in expand_combinations(spec)}
    assert combos == {"bm25/original", "bm25/short", "original/original"}


def test_plan_counts_and_cell_order() -> None:
    plan = build_plan(_spec(repeats=2), CASES)
    cells = list(plan.iter_cells())
    assert plan.total == len(cells) == 6 * 3 * 2
    assert len({c.key for c in cells}) == len(cells)
    # Case by case, repeat by repeat: the first six cells are every combination of c0, repeat 0.
    assert {(c.case_id, c.repeat) for c in cells[:6]} == {("c0", 0)}
    assert plan.baseline == (("generate", "original"), ("retrieve", "original"))


def test_expansion_streams() -> None:
    spec = _spec(repeats=1000)
    cases = [Case(id=f"c{i}", inputs={"i": i}) for i in range(17)]
    plan = build_plan(spec, cases)
    assert plan.total == 6 * 17 * 1000
    assert inspect.isgenerator(plan.iter_cells())
    tracemalloc.start()
    count = sum(1 for _ in plan.iter_cells())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == plan.total
    assert peak < 2_000_000, f"expanding {count} cells held {peak} bytes"


def test_cell_key_is_stable_across_processes() -> None:
    combo = as_combination({"retrieve": "bm25", "generate": "short"})
    here = cell_key(combo, "case-1", 3)
    code = (
        "from wtb.plan import cell_key; from wtb.variant_matrix import as_combination;"
        "print(cell_key(as_combination({'generate': 'short', 'retrieve': 'bm25'}), 'case-1', 3))"
    )
    env_seed = {"PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env_seed
    ).stdout.strip()
    assert out == here
    assert cell_key(combo, "case-1", 2) != here


def test_empty_matrix_after_filters_is_refused() -> None:
    with pytest.raises(ManifestError, match="empty after include/exclude") as err:
        build_plan(_spec(exclude=[{"retrieve": "original"}, {"retrieve": "bm25"}]), CASES)
    assert err.value.where.endswith("spec.exclude")


def test_baseline_outside_matrix_is_refused() -> None:
    with pytest.raises(ManifestError, match="baseline combination") as err:
        build_plan(_spec(matrix={"retrieve": ["bm25"], "generate": ["short"]}), CASES)
    assert "add `original`" in err.value.fix
    with pytest.raises(ManifestError, match="not in the matrix"):
        build_plan(_spec(baseline={"rerank": "x"}), CASES)


def test_include_naming_unknown_variant_is_refused() -> None:
    with pytest.raises(ManifestError, match="'bm99'") as err:
        build_plan(_spec(include=[{"retrieve": "bm99"}]), CASES)
    assert err.value.where.endswith("spec.include[0].retrieve")
