"""Expand a BatchTest into cells: (variant combination x case x repeat), streamed.

Keys are content hashes, so the same cell gets the same key in every process, on every
machine, after every restart: the store's unique constraint on it makes recording idempotent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from wtb.api.batchtest import BatchTestSpec
from wtb.api.workflow import ORIGINAL
from wtb.canonical import content_hash
from wtb.errors import ManifestError
from wtb.results import Case, Cell, Combination


def combo_key(combination: Combination) -> str:
    return content_hash([list(p) for p in combination], 16)


def cell_key(combination: Combination, case_id: str, repeat: int) -> str:
    return content_hash([[list(p) for p in combination], case_id, repeat], 32)


def combination_label(combination: Combination) -> str:
    """'node=variant, node=variant' in node order, every node written out."""
    return ", ".join(f"{node}={variant}" for node, variant in sorted(combination))


def as_combination(mapping: Mapping[str, str]) -> Combination:
    return tuple(sorted(mapping.items()))


def _matches(combination: Combination, pattern: Mapping[str, str]) -> bool:
    chosen = dict(combination)
    return all(chosen.get(node) == variant for node, variant in pattern.items())


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


def expand_combinations(spec: BatchTestSpec) -> tuple[Combination, ...]:
    """The cartesian product of the matrix (nodes sorted by name), narrowed by
    include/exclude."""
    nodes = sorted(spec.matrix)
    combos: list[Combination] = []
    for variants in itertools.product(*(spec.matrix[n] for n in nodes)):
        combination = tuple(zip(nodes, variants, strict=True))
        if spec.include and not any(_matches(combination, p) for p in spec.include):
            continue
        if any(_matches(combination, p) for p in spec.exclude):
            continue
        combos.append(combination)
    return tuple(combos)


def baseline_of(spec: BatchTestSpec) -> Combination:
    """The baseline combination: the spec's, every node not named there `original`."""
    return as_combination({**{n: ORIGINAL for n in spec.matrix}, **(spec.baseline or {})})


def build_plan(spec: BatchTestSpec, cases: Sequence[Case], *, where: str = "spec") -> Plan:
    """Check the matrix's own consistency and expand it.

    That each variant exists in the workflow is checked by `wtb.batch.prepare`.
    """
    for field, patterns in (("include", spec.include), ("exclude", spec.exclude)):
        for i, pattern in enumerate(patterns):
            for node, variant in pattern.items():
                if node not in spec.matrix:
                    raise ManifestError(
                        f"{field}[{i}] names node {node!r}, which is not in the matrix",
                        where=f"{where}.{field}[{i}]",
                        fix=f"use one of the matrix nodes: {', '.join(sorted(spec.matrix))}",
                    )
                if variant not in spec.matrix[node]:
                    raise ManifestError(
                        f"{field}[{i}] names variant {variant!r} of {node!r}, not in the matrix",
                        where=f"{where}.{field}[{i}].{node}",
                        fix=f"use one of: {', '.join(spec.matrix[node])}",
                    )
    combinations = expand_combinations(spec)
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
            f"baseline names node(s) not in the matrix: {', '.join(unknown)}",
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
