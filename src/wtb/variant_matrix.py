"""The variant matrix, a BatchTest's input: which variant of each node (or choice of each
Workflow setting: an axis that changes the invocation, not a node) to try, expanded
into combinations (the cartesian product of the per-node lists, narrowed by
include/exclude), and the baseline the others are compared with.

Not to be confused with the comparison matrix, the output (`wtb.comparison`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from wtb._hashing import content_hash
from wtb.api.batchtest import BatchTestSpec
from wtb.api.workflow import ORIGINAL
from wtb.domain import Combination


def combo_key(combination: Combination) -> str:
    return content_hash([list(p) for p in combination], 16)


def combination_label(combination: Combination) -> str:
    """'node=variant, node=variant' in node order, every node written out."""
    return ", ".join(f"{node}={variant}" for node, variant in sorted(combination))


def fixed_label(spec: BatchTestSpec) -> str:
    """The nodes fixed outside the matrix, as a label ('' when none): shown once, beside
    the combinations, whose labels leave them out."""
    return combination_label(as_combination(spec.fixed or {}))


def as_combination(mapping: Mapping[str, str]) -> Combination:
    return tuple(sorted(mapping.items()))


def _matches(combination: Combination, pattern: Mapping[str, str]) -> bool:
    chosen = dict(combination)
    return all(chosen.get(node) == variant for node, variant in pattern.items())


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
