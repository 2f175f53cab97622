"""The Evaluator interface and the rule for cells whose graph failed."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from wtb.evaluators.context import EvalContext


class Evaluator(ABC):
    """A named metric computed for every cell.

    A failed or interrupted cell (the graph raised, or stopped waiting for a human) is
    not scored by `score`: a failure is not a success,
    so a metric where higher is better gets 0.0, and one where lower is better gets None
    (0 would be the best value). Measuring evaluators override `failed_score`.
    """

    def __init__(self, name: str, *, higher_is_better: bool) -> None:
        self.name = name
        self.higher_is_better = higher_is_better

    def __call__(self, ctx: EvalContext) -> float | None:
        # An interrupted graph did not finish: no more a success than a failure is.
        if ctx.status != "succeeded":
            return self.failed_score()
        return self.score(ctx)

    def failed_score(self) -> float | None:
        return 0.0 if self.higher_is_better else None

    @abstractmethod
    def score(self, ctx: EvalContext) -> float | None:
        """The metric of a cell whose graph succeeded."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def as_score(value: object) -> float | None:
    """A metric from what an evaluator returned: bool -> 1.0/0.0, numbers -> float."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        score = float(value)
        if not math.isfinite(score):
            raise ValueError(f"the evaluator returned {score!r}; return a finite number")
        return score
    raise TypeError(
        f"the evaluator returned a {type(value).__name__}; return a float, a bool or None"
    )
