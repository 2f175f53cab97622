"""Expand a BatchTest into cells: (variant combination x case x repeat), streamed.

Keys are content hashes, so the same cell gets the same key in every process, on every
machine, after every restart: the store's unique constraint on it makes recording idempotent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from wtb._hashing import content_hash
from wtb.api.batchtest import BatchTestSpec
from wtb.api.workflow import ORIGINAL
from wtb.domain import Case, Cell, Combination
from wtb.errors import ManifestError
from wtb.settings import get_settings
from wtb.variant_matrix import (
    baseline_of,
    combination_label,
    combo_key,
    expand_combinations,
)


def cell_key(combination: Combination, case_id: str, repeat: int) -> str:
    return content_hash([[list(p) for p in combination], case_id, repeat], 32)


@dataclass(frozen=True)
class Plan:
    combinations: tuple[Combination, ...]
    baseline: Combination
    cases: tuple[Case, ...]
    repeats: int

    @property
    def total(self) -> int:
        return len(self.combinations) * len(self.cases) * self.repeats

    def iter_cells(self) -> Iterator[Cell]:
        """Cells case by case, repeat by repeat, every combination of each together.

        This order lets partial results cover every combination evenly, and keeps the
        cells that share a prefix (same case and repeat) next to each other.
        """
        keyed = [(c, combo_key(c)) for c in self.combinations]
        for case in self.cases:
            for repeat in range(self.repeats):
                for combination, ckey in keyed:
                    yield Cell(
                        key=cell_key(combination, case.id, repeat),
                        combo_key=ckey,
                        combination=combination,
                        case_id=case.id,
                        repeat=repeat,
                    )


def _fixed_note(spec: BatchTestSpec, node: str) -> str:
    if node in (spec.fixed or {}):
        return f" ({node!r} is fixed: the same variant in every combination)"
    return ""


def check_cell_count(
    spec: BatchTestSpec,
    combinations: int,
    cases: int,
    *,
    where: str = "spec",
    limit: int | None = None,
) -> None:
    """Refuse a run of more than `limit` cells (default: the WTB_MAX_CELLS setting);
    nothing is checked while the cases are not known (0)."""
    limit = get_settings().max_cells if limit is None else limit
    cells = combinations * cases * spec.repeats
    if cases and cells > limit:
        raise ManifestError(
            f"the run would have {cells:,} cells ({combinations:,} combinations x {cases:,} "
            f"cases x {spec.repeats} repeats), more than the limit of {limit:,}",
            where=f"{where}.matrix",
            fix="run fewer combinations (spec.matrix, include), fewer cases (spec.dataset) "
            "or fewer repeats (spec.repeats), split the batch, or raise the limit "
            "(WTB_MAX_CELLS; the operator chart's operator.maxCells)",
        )


def build_plan(spec: BatchTestSpec, cases: Sequence[Case], *, where: str = "spec") -> Plan:
    """Check the matrix's own consistency and expand it.

    That each variant exists in the workflow is checked by `wtb.pipeline.prepare.prepare`.
    """
    for field, patterns in (("include", spec.include), ("exclude", spec.exclude)):
        for i, pattern in enumerate(patterns):
            for node, variant in pattern.items():
                if node not in spec.matrix:
                    raise ManifestError(
                        f"{field}[{i}] names node {node!r}, which is not in the matrix"
                        + _fixed_note(spec, node),
                        where=f"{where}.{field}[{i}]",
                        fix=f"use one of the matrix nodes: {', '.join(sorted(spec.matrix))}",
                    )
                if variant not in spec.matrix[node]:
                    raise ManifestError(
                        f"{field}[{i}] names variant {variant!r} of {node!r}, not in the matrix",
                        where=f"{where}.{field}[{i}].{node}",
                        fix=f"use one of: {', '.join(spec.matrix[node])}",
                    )
    combinations = expand_combinations(spec, where=where)
    check_cell_count(spec, len(combinations), len(cases) or len(spec.dataset.cases), where=where)
    if not combinations:
        raise ManifestError(
            "the matrix is empty after include/exclude",
            where=f"{where}.include" if spec.include else f"{where}.exclude",
            fix="loosen include or exclude so that at least one combination remains",
        )
    baseline_map = spec.baseline or {node: ORIGINAL for node in spec.matrix}
    unknown = sorted(set(baseline_map) - set(spec.matrix))
    if unknown:
        raise ManifestError(
            f"baseline names node(s) not in the matrix: {', '.join(unknown)}"
            + "".join(_fixed_note(spec, node) for node in unknown),
            where=f"{where}.baseline",
            fix=f"name each matrix node once: {', '.join(sorted(spec.matrix))}",
        )
    baseline = baseline_of(spec)
    if baseline not in combinations:
        raise ManifestError(
            f"the baseline combination ({combination_label(baseline)}) is not in the matrix",
            where=f"{where}.baseline",
            fix="set `baseline` to a combination the matrix (after include/exclude) contains"
            + ("" if spec.baseline else ", or add `original` to every matrix node"),
        )
    return Plan(
        combinations=combinations, baseline=baseline, cases=tuple(cases), repeats=spec.repeats
    )
