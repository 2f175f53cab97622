"""Evaluators that measure the run itself: latency, tokens, cost (lower is better)."""

from __future__ import annotations

from wtb.evaluators.base import Evaluator
from wtb.evaluators.context import EvalContext


class MeasuringEvaluator(Evaluator):
    """A failed run's latency, tokens or cost say nothing about the variant: None."""

    def failed_score(self) -> float | None:
        return None


class Latency(MeasuringEvaluator):
    def score(self, ctx: EvalContext) -> float | None:
        return ctx.latency_ms


class Tokens(MeasuringEvaluator):
    def score(self, ctx: EvalContext) -> float | None:
        return None if ctx.tokens is None else float(ctx.tokens)


class Cost(MeasuringEvaluator):
    def score(self, ctx: EvalContext) -> float | None:
        return ctx.cost
