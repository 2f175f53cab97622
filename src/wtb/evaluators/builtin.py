"""The built-in evaluators, built from their specs with no user code: what the operator
checks at apply time, and what every run builds besides the user's evaluators."""

from __future__ import annotations

from collections.abc import Sequence

from wtb.api._base import given_fields
from wtb.api.batchtest import EvaluatorSpec
from wtb.errors import ManifestError
from wtb.evaluators.base import Evaluator
from wtb.evaluators.comparing import Contains, ExactMatch, JsonField, Numeric, Regex
from wtb.evaluators.measuring import Cost, Latency, Tokens

USER_TYPE = "python"
"""The evaluator type whose code is the user's: imported only where user code runs."""

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


def _alias(field: str) -> str:
    return EvaluatorSpec.model_fields[field].alias or field


def check_fields(spec: EvaluatorSpec, where: str) -> None:
    read = _FIELDS_READ[spec.type]
    for field in sorted(given_fields(spec) - read - _ALWAYS):
        reads = ", ".join(f"`{_alias(f)}`" for f in sorted(read)) or "no other field"
        raise ManifestError(
            f"evaluator {spec.name!r} of type {spec.type} does not use `{_alias(field)}`",
            where=f"{where}.{_alias(field)}",
            fix=f"remove it; type {spec.type} reads {reads}",
        )


def build_builtin(spec: EvaluatorSpec, where: str) -> Evaluator:
    """A built-in evaluator (any type but `python`), its fields checked."""
    check_fields(spec, where)
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
        case _:
            raise ValueError(f"{spec.type} is not a built-in evaluator type")


def check_builtin_evaluators(
    specs: Sequence[EvaluatorSpec], where: str = "spec.evaluators"
) -> None:
    """Build every built-in evaluator of a BatchTest (its fields, its patterns), importing
    nothing: a ManifestError names the mistake. User evaluators are checked where their
    code is (the batch driver, in the workflow's image)."""
    for i, spec in enumerate(specs):
        if spec.type != USER_TYPE:
            build_builtin(spec, f"{where}[{i}]")
