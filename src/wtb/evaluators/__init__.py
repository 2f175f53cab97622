"""Evaluators: the metrics computed for every cell.

Built-in types compare a value of the final state with the case's expected value
(exactMatch, contains, regex, jsonField, numeric) or measure the run (latency, tokens,
cost); `python` evaluators are user functions or classes named by import path.
"""

from wtb.evaluators.base import Evaluator
from wtb.evaluators.build import build_evaluators, evaluate
from wtb.evaluators.comparing import ExpectedValueMissingError
from wtb.evaluators.context import EvalContext
from wtb.evaluators.paths import PathNotFoundError, resolve_path

__all__ = [
    "EvalContext",
    "Evaluator",
    "ExpectedValueMissingError",
    "PathNotFoundError",
    "build_evaluators",
    "evaluate",
    "resolve_path",
]
