"""Aggregation in the database: per combination and per (combination, case).

Only aggregates leave the database, so the statistics cost the same for 100 or 100,000
cells. Percentiles are computed portably (SQLite has no percentile_cont): a window
function ranks each combination's latencies, and only the two ranks around each wanted
percentile come back, to be interpolated linearly (numpy's default method).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from math import floor, isfinite
from random import Random
from statistics import median
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, case, func, or_, select

from wtb.domain import CaseAggregate, Combination, ComboAggregate, NodeAggregate
from wtb.storage.schema import cells

P50 = Fraction(1, 2)
P95 = Fraction(19, 20)
STREAM_ROWS = 1000
"""Rows fetched per round trip when aggregates are streamed."""
NODE_SAMPLE = 4096
"""Node times kept per (combination, node) for its median: beyond, a uniform sample."""

_CELLS = cells.c
_SUCCEEDED = func.sum(case((_CELLS.status == "succeeded", 1), else_=0))
_INTERRUPTED = func.sum(case((_CELLS.status == "interrupted", 1), else_=0))


def _evaluator_errors(name: str) -> ColumnElement[Any]:
    """Cells whose evaluator `name` raised (its metric is missing for that reason)."""
    raised = _CELLS.evaluator_errors[name].as_string().is_not(None)
    return func.sum(case((raised, 1), else_=0))


def combination_of(stored: dict[str, str]) -> Combination:
    return tuple(sorted(stored.items()))


def _floor_rank(count: ColumnElement[int], q: Fraction) -> ColumnElement[int]:
    """floor(q * (count - 1)) in integer arithmetic, so SQL and Python agree exactly."""
    return (count - 1) * q.numerator // q.denominator


RankedLatencies = tuple[int, Combination, dict[int, float]]
"""A combination's cell count, the combination, and its latencies at the needed ranks."""


def _latency_ranks(conn: Connection, run_id: int) -> dict[str, RankedLatencies]:
    ranked = (
        select(
            _CELLS.combo_key,
            _CELLS.combination,
            _CELLS.latency_ms,
            (
                func.row_number().over(
                    partition_by=_CELLS.combo_key, order_by=(_CELLS.latency_ms, _CELLS.id)
                )
                - 1
            ).label("rank"),
            func.count().over(partition_by=_CELLS.combo_key).label("n"),
        )
        .where(_CELLS.run_id == run_id)
        .subquery()
    )
    wanted = []
    for q in (P50, P95):
        low = _floor_rank(ranked.c.n, q)
        wanted += [ranked.c.rank == low, ranked.c.rank == low + 1]
    c = ranked.c
    rows = conn.execute(
        select(c.combo_key, c.combination, c.n, c.rank, c.latency_ms).where(or_(*wanted))
    )
    found: dict[str, RankedLatencies] = {}
    for combo_key, combination, n, rank, latency in rows:
        entry = found.setdefault(combo_key, (n, combination_of(combination), {}))
        entry[2][rank] = latency
    return found


def _percentile(latencies: dict[int, float], n: int, q: Fraction) -> float:
    position = q * (n - 1)
    low = floor(position)
    fraction = position - low
    if fraction == 0:
        return latencies[low]
    return latencies[low] + (latencies[low + 1] - latencies[low]) * float(fraction)


def combo_aggregates(
    conn: Connection, run_id: int, metrics: Sequence[str] = ()
) -> list[ComboAggregate]:
    """Runs, successes, interrupted cells, token and cost totals and latency p50/p95 over all
    cells of each combo, and per metric in `metrics` the cells whose evaluator raised."""
    ranks = _latency_ranks(conn, run_id)
    totals = conn.execute(
        select(
            _CELLS.combo_key,
            func.count(),
            _SUCCEEDED,
            func.sum(_CELLS.tokens),
            func.sum(_CELLS.cost),
            _INTERRUPTED,
            *(_evaluator_errors(name) for name in metrics),
        )
        .where(_CELLS.run_id == run_id)
        .group_by(_CELLS.combo_key)
        .order_by(_CELLS.combo_key)
    )
    aggregates = []
    for combo_key, runs, succeeded, tokens, cost, interrupted, *errors in totals:
        ranked = ranks.get(combo_key)
        if ranked is None:
            # Its first cell was committed between the two statements (a matrix built
            # while the run goes on): it joins the next matrix.
            continue
        n, combination, latencies = ranked
        aggregates.append(
            ComboAggregate(
                combo_key=combo_key,
                combination=combination,
                runs=runs,
                succeeded=int(succeeded),
                tokens=None if tokens is None else int(tokens),
                cost=None if cost is None else float(cost),
                latency_p50=_percentile(latencies, n, P50),
                latency_p95=_percentile(latencies, n, P95),
                interrupted=int(interrupted),
                evaluator_errors={
                    name: int(count) for name, count in zip(metrics, errors, strict=True)
                },
            )
        )
    return aggregates


def iter_case_aggregates(
    conn: Connection, run_id: int, metrics: Sequence[str], primary: str
) -> Iterator[CaseAggregate]:
    """Per (combination, case), ordered by both: repeats averaged, disagreement flagged.

    Repeats disagree when their statuses differ, or their primary scores differ, or only
    some of them have a primary score (its evaluator failed on the others).
    """
    score = _CELLS.metrics[primary].as_float()
    means = [func.avg(_CELLS.metrics[name].as_float()) for name in metrics]
    stmt = (
        select(
            _CELLS.combo_key,
            _CELLS.case_id,
            func.count(),
            _SUCCEEDED,
            func.min(_CELLS.status) != func.max(_CELLS.status),
            func.min(score),
            func.max(score),
            func.count(score),
            *means,
        )
        .where(_CELLS.run_id == run_id)
        .group_by(_CELLS.combo_key, _CELLS.case_id)
        .order_by(_CELLS.combo_key, _CELLS.case_id)
    )
    for row in conn.execution_options(yield_per=STREAM_ROWS).execute(stmt):
        yield _case_aggregate(row, metrics)


def _case_aggregate(row: Row[Any], metrics: Sequence[str]) -> CaseAggregate:
    combo_key, case_id, runs, succeeded, status_varies, low, high, scored = tuple(row)[:8]
    score_varies = scored > 0 and (low != high or scored < runs)
    return CaseAggregate(
        combo_key=combo_key,
        case_id=case_id,
        runs=runs,
        succeeded=int(succeeded),
        metric_means={
            name: None if mean is None else float(mean)
            for name, mean in zip(metrics, tuple(row)[8:], strict=True)
        },
        outcome_varies=bool(status_varies) or score_varies,
    )


class _NodeRunning:
    """One (combination, node)'s figures while cells stream past."""

    __slots__ = ("calls", "cells", "seen", "times", "token_cells", "tokens")

    def __init__(self) -> None:
        self.cells = 0
        self.calls = 0
        self.tokens = 0
        self.token_cells = 0
        self.times: list[float] = []
        self.seen = 0

    def add(self, figures: dict[str, Any], rng: Random) -> None:
        self.cells += 1
        self.calls += int(figures.get("calls") or 0)
        tokens = figures.get("tokens")
        if isinstance(tokens, int):
            self.tokens += tokens
            self.token_cells += 1
        ms = figures.get("ms")
        if not isinstance(ms, int | float) or not isfinite(ms):
            return
        self.seen += 1
        if len(self.times) < NODE_SAMPLE:
            self.times.append(float(ms))
        else:  # reservoir sampling: every time kept with the same probability
            slot = rng.randrange(self.seen)
            if slot < NODE_SAMPLE:
                self.times[slot] = float(ms)

    def aggregate(self) -> NodeAggregate:
        return NodeAggregate(
            cells=self.cells,
            ms_p50=median(self.times) if self.times else None,
            calls=self.calls / self.cells,
            tokens=self.tokens / self.token_cells if self.token_cells else None,
        )


def node_aggregates(conn: Connection, run_id: int) -> dict[str, dict[str, NodeAggregate]]:
    """Per combo_key and node: median time, mean calls and tokens over succeeded cells.

    Cells' node figures are JSON, which SQLite and PostgreSQL take apart differently, so
    they are streamed and reduced here; memory stays bounded (NODE_SAMPLE times per node).
    The median is exact up to NODE_SAMPLE cells per combination, then estimated from a
    uniform sample (seeded: the same run gives the same matrix).
    """
    stmt = (
        select(_CELLS.combo_key, _CELLS.nodes)
        .where(_CELLS.run_id == run_id, _CELLS.status == "succeeded", _CELLS.nodes.is_not(None))
        .order_by(_CELLS.id)
    )
    rng = Random(run_id)
    running: dict[str, dict[str, _NodeRunning]] = {}
    for combo_key, nodes in conn.execution_options(yield_per=STREAM_ROWS).execute(stmt):
        if not isinstance(nodes, dict):
            continue
        combo = running.setdefault(combo_key, {})
        for node, figures in nodes.items():
            if isinstance(figures, dict):
                combo.setdefault(node, _NodeRunning()).add(figures, rng)
    return {
        combo_key: {node: r.aggregate() for node, r in sorted(nodes.items())}
        for combo_key, nodes in running.items()
    }
