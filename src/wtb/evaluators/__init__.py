"""Evaluators: the metrics computed for every cell.

Built-in types compare a value of the final state with the case's expected value
(exactMatch, contains, regex, jsonField, numeric) or measure the run (latency, tokens,
cost); `python` evaluators are user functions or classes named by import path.

Building them (`wtb.evaluators.build`) imports user code; the built-ins alone
(`wtb.evaluators.builtin`) do not, and are what the operator checks.
"""

from wtb.evaluators.base import Evaluator
from wtb.evaluators.comparing import ExpectedValueMissingError
from wtb.evaluators.context import EvalContext
from wtb.evaluators.paths import PathNotFoundError, resolve_path

__all__ = [
    "EvalContext",
    "Evaluator",
    "ExpectedValueMissingError",
    "PathNotFoundError",
    "resolve_path",
]
