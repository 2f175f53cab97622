"""WTB, the Workflow Test Bench: batch-test LangGraph workflows over node variants.

The public API for workflow authors is small: `report_usage` lets a plain-function node
report tokens and cost; `EvalContext` is what a user evaluator receives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wtb.usage import report_usage

if TYPE_CHECKING:
    from wtb.evaluators import EvalContext

__all__ = ["EvalContext", "report_usage"]


def __getattr__(name: str) -> Any:
    # EvalContext lives with the evaluators; import it only when asked for.
    if name == "EvalContext":
        from wtb.evaluators import EvalContext

        return EvalContext
    raise AttributeError(name)
