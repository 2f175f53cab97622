"""Build evaluators from the manifest (before anything runs) and score a cell with them."""

from __future__ import annotations

from collections.abc import Sequence

from wtb.api._base import given_fields
from wtb.api.batchtest import EvaluatorSpec
from wtb.errors import ManifestError
from wtb.evaluators.base import Evaluator
from wtb.evaluators.comparing import Contains, ExactMatch, JsonField, Numeric, Regex
from wtb.evaluators.context import EvalContext
from wtb.evaluators.measuring import Cost, Latency, Tokens
from wtb.evaluators.user import PythonEvaluator, load_user_function

# The optional fields each type reads; any other one given in a manifest is a mistake.
_FIELDS_READ: dict[str, frozenset[str]] = {
    "exactMatch": frozenset({"output", "expected", "ignore_case", "strip"}),
    "contains": frozenset({"output", "expected", "value", "ignore_case"}),
    "regex": frozenset({"output", "expected", "value", "ignore_case"}),
    "jsonField": frozenset({"output", "expected", "field", "ignore_case", "strip"}),
    "numeric": frozenset({"output", "expected", "tolerance", "relative_tolerance"}),
    "latency": frozenset(),
    "tokens": frozenset(),
    "cost": frozenset(),
    "python": frozenset({"path", "config"}),
}
_ALWAYS = frozenset({"name", "type", "higher_is_better"})

_MAX_ERROR = 1000


def _alias(field: str) -> str:
    return EvaluatorSpec.model_fields[field].alias or field


def _check_fields(spec: EvaluatorSpec, where: str) -> None:
    read = _FIELDS_READ[spec.type]
    for field in sorted(given_fields(spec) - read - _ALWAYS):
        reads = ", ".join(f"`{_alias(f)}`" for f in sorted(read)) or "no other field"
        raise ManifestError(
            f"evaluator {spec.name!r} of type {spec.type} does not use `{_alias(field)}`",
            where=f"{where}.{_alias(field)}",
            fix=f"remove it; type {spec.type} reads {reads}",
        )


def _build_one(spec: EvaluatorSpec, where: str) -> Evaluator:
    _check_fields(spec, where)
    match spec.type:
        case "exactMatch":
            return ExactMatch(spec)
        case "contains":
            return Contains(spec)
        case "regex":
            return Regex(spec, where=f"{where}.value")
        case "jsonField":
            return JsonField(spec)
        case "numeric":
            return Numeric(spec)
        case "latency":
            return Latency(spec.name, higher_is_better=spec.direction_higher_is_better)
        case "tokens":
            return Tokens(spec.name, higher_is_better=spec.direction_higher_is_better)
        case "cost":
            return Cost(spec.name, higher_is_better=spec.direction_higher_is_better)
        case "python":
            return PythonEvaluator(spec, load_user_function(spec, where=where))


def build_evaluators(
    specs: Sequence[EvaluatorSpec], where: str = "spec.evaluators"
) -> list[Evaluator]:
    """The evaluators of a BatchTest, in manifest order.

    Imports user evaluators, instantiates evaluator classes and compiles literal patterns,
    so that a mistake is a ManifestError naming the field before any cell runs.
    """
    return [_build_one(spec, f"{where}[{i}]") for i, spec in enumerate(specs)]


def evaluate(
    evaluators: Sequence[Evaluator], ctx: EvalContext
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Score one cell: (metrics, errors). An evaluator that raises gets metric None and an
    error 'ErrorClass: message'; the others are unaffected."""
    metrics: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    for evaluator in evaluators:
        try:
            metrics[evaluator.name] = evaluator(ctx)
        except Exception as exc:
            metrics[evaluator.name] = None
            message = str(exc) or repr(exc)
            if len(message) > _MAX_ERROR:
                message = message[:_MAX_ERROR] + "..."
            errors[evaluator.name] = f"{type(exc).__name__}: {message}"
    return metrics, errors
