"""The variant matrix, a BatchTest's input: which variant of each node (or choice of each
Workflow setting: an axis that changes the invocation, not a node) to try, expanded
into combinations (the cartesian product of the per-node lists, narrowed by
include/exclude), and the baseline the others are compared with.

Not to be confused with the comparison matrix, the output (`wtb.comparison`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from typing import Final

from wtb._hashing import content_hash
from wtb.api.batchtest import BatchTestSpec
from wtb.api.workflow import ORIGINAL
from wtb.domain import Combination
from wtb.errors import ManifestError
from wtb.settings import get_settings


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


def _pattern_indices(
    nodes: list[str], spec: BatchTestSpec, pattern: Mapping[str, str]
) -> list[list[int]] | None:
    """Per node (in `nodes` order), the variant indices a pattern allows; None when it
    names a node or variant the matrix lacks (it matches no combination)."""
    if not set(pattern) <= set(nodes):
        return None
    allowed: list[list[int]] = []
    for node in nodes:
        variants = spec.matrix[node]
        if node not in pattern:
            allowed.append(list(range(len(variants))))
        elif pattern[node] in variants:
            allowed.append([variants.index(pattern[node])])
        else:
            return None
    return allowed


COUNT_STEPS: Final = 100_000
"""The most steps the exact count may take; beyond them the count is an upper bound."""


class _TooManySteps(Exception):
    pass


def _avoiding(sizes: list[int], patterns: list[dict[int, int]]) -> int:
    """How many index tuples (one index below sizes[i] per position i) match none of the
    patterns (position -> index), counted position by position without listing them: the
    indices no pattern names at a position are alike, so they are counted together."""
    steps = 0

    def count(position: int, left: list[dict[int, int]]) -> int:
        nonlocal steps
        steps += 1
        if steps > COUNT_STEPS:
            raise _TooManySteps
        if any(not p for p in left):
            return 0  # a pattern with nothing left to match matches everything here
        if not left:
            return math.prod(sizes[position:])
        rest = [p for p in left if position not in p]
        named = sorted({p[position] for p in left if position in p})
        free = sizes[position] - len(named)  # indices no pattern names here: alike
        total = free * count(position + 1, rest) if free else 0
        for index in named:
            narrowed = [
                {k: v for k, v in p.items() if k != position}
                for p in left
                if p.get(position) == index
            ]
            total += count(position + 1, rest + narrowed)
        return total

    return count(0, patterns)


def _as_indices(
    nodes: list[str], spec: BatchTestSpec, patterns: list[dict[str, str]]
) -> list[dict[int, int]]:
    """The patterns that can match, as position -> variant index (the others dropped)."""
    out: list[dict[int, int]] = []
    for pattern in patterns:
        if _pattern_indices(nodes, spec, pattern) is not None:
            out.append({nodes.index(n): spec.matrix[n].index(v) for n, v in pattern.items()})
    return out


def count_combinations(spec: BatchTestSpec) -> int:
    """How many combinations the matrix has after include/exclude, computed without
    expanding it (so never more work than COUNT_STEPS): exact, or when that would take
    longer an upper bound (the product, or with `include` the sum of what each pattern
    leaves). Never below the number `expand_combinations` returns."""
    return _count(spec)[0]


def _count(spec: BatchTestSpec) -> tuple[int, bool]:
    """The count, and whether it is exact."""
    nodes = sorted(spec.matrix)
    sizes = [len(spec.matrix[n]) for n in nodes]
    exclude = _as_indices(nodes, spec, spec.exclude)
    try:
        kept = _avoiding(sizes, exclude)
        if spec.include:
            # Those avoiding every exclude pattern but matching an include one.
            kept -= _avoiding(sizes, exclude + _as_indices(nodes, spec, spec.include))
        return kept, True
    except _TooManySteps:
        pass
    if spec.include:
        bound = sum(
            math.prod(len(a) for a in allowed)
            for allowed in (_pattern_indices(nodes, spec, p) for p in spec.include)
            if allowed is not None
        )
        return bound, False
    return math.prod(sizes), False


def check_combination_count(
    spec: BatchTestSpec, *, where: str = "spec", limit: int | None = None
) -> int:
    """The matrix's combination count (`count_combinations`), or a ManifestError naming
    spec.matrix when it is above `limit` (default: the WTB_MAX_COMBINATIONS setting)."""
    limit = get_settings().max_combinations if limit is None else limit
    count, exact = _count(spec)
    if count > limit:
        sizes = " x ".join(f"{len(spec.matrix[n])} ({n})" for n in sorted(spec.matrix))
        raise ManifestError(
            f"the matrix has {'' if exact else 'up to '}{count:,} combinations ({sizes}"
            f"{', narrowed by include' if spec.include else ''}), more than the limit of "
            f"{limit:,}",
            where=f"{where}.matrix",
            fix="vary fewer nodes or fewer variants per node, move nodes that need not vary "
            "to `fixed`, keep only the combinations you need with `include` patterns, "
            "or raise the limit (WTB_MAX_COMBINATIONS; the operator chart's "
            "operator.maxCombinations)",
        )
    return count


def expand_combinations(
    spec: BatchTestSpec, *, where: str = "spec", limit: int | None = None
) -> tuple[Combination, ...]:
    """The cartesian product of the matrix (nodes sorted by name), narrowed by
    include/exclude, in product order.

    Its size is checked first (`check_combination_count`), so no uncapped matrix is ever
    expanded; with `include` only what the patterns allow is generated, not the whole
    product."""
    check_combination_count(spec, where=where, limit=limit)
    nodes = sorted(spec.matrix)
    if spec.include:
        wanted: set[tuple[int, ...]] = set()
        for pattern in spec.include:
            allowed = _pattern_indices(nodes, spec, pattern)
            if allowed is not None:
                wanted.update(itertools.product(*allowed))
        indices: Iterable[tuple[int, ...]] = sorted(wanted)
    else:
        indices = itertools.product(*(range(len(spec.matrix[n])) for n in nodes))
    combos: list[Combination] = []
    for index in indices:
        chosen = {n: spec.matrix[n][i] for n, i in zip(nodes, index, strict=True)}
        if any(all(chosen.get(n) == v for n, v in p.items()) for p in spec.exclude):
            continue
        combos.append(tuple(chosen.items()))
    return tuple(combos)


def baseline_of(spec: BatchTestSpec) -> Combination:
    """The baseline combination: the spec's, every node not named there `original`."""
    return as_combination({**{n: ORIGINAL for n in spec.matrix}, **(spec.baseline or {})})
