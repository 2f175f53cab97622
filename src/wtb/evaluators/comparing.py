"""Evaluators that compare a value of the final state with an expected value or a literal."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from wtb.api.batchtest import EvaluatorSpec
from wtb.errors import ManifestError
from wtb.evaluators.base import Evaluator
from wtb.evaluators.context import EvalContext
from wtb.evaluators.paths import PathNotFoundError, resolve_path

STATE_ROOT = "$state."
"""An `output` path starting so reads the full final state (keys an output schema hides
from what the graph returns), not the output; `$`, not a plain `state.`, because a graph
may well return a key named `state`."""


class ExpectedValueMissingError(KeyError):
    """The case has no expected value where the evaluator looks for one."""

    def __str__(self) -> str:
        return str(self.args[0])


class ComparingEvaluator(Evaluator):
    """Reads `output` (a dotted path in the final state) and the case's expected value."""

    def __init__(self, spec: EvaluatorSpec) -> None:
        super().__init__(spec.name, higher_is_better=spec.direction_higher_is_better)
        if spec.output is None:  # refused by EvaluatorSpec; kept for the type checker
            raise ValueError(f"evaluator {spec.name!r} needs `output`")
        self.output_path = spec.output
        self.expected_key = spec.expected or spec.output.removeprefix(STATE_ROOT)
        self.ignore_case = spec.ignore_case

    def output_value(self, ctx: EvalContext) -> Any:
        path = self.output_path
        if path.startswith(STATE_ROOT):
            return resolve_path(ctx.state, path.removeprefix(STATE_ROOT))
        return resolve_path(ctx.output, path)

    def expected_value(self, ctx: EvalContext) -> Any:
        expected = ctx.expected or {}
        if self.expected_key in expected:
            return expected[self.expected_key]
        try:
            return resolve_path(expected, self.expected_key)
        except PathNotFoundError:
            keys = ", ".join(expected) if expected else "none"
            raise ExpectedValueMissingError(
                f"case {ctx.case.id!r} has no expected value {self.expected_key!r} "
                f"(its expected keys: {keys}); add it to the case or set the evaluator's "
                "`expected`"
            ) from None


def _normalized(value: Any, *, ignore_case: bool, strip: bool) -> Any:
    if isinstance(value, str):
        if strip:
            value = value.strip()
        if ignore_case:
            value = value.casefold()
    return value


class ExactMatch(ComparingEvaluator):
    def __init__(self, spec: EvaluatorSpec) -> None:
        super().__init__(spec)
        self.strip = spec.strip

    def matches(self, actual: Any, expected: Any) -> bool:
        def norm(value: Any) -> Any:
            return _normalized(value, ignore_case=self.ignore_case, strip=self.strip)

        return bool(norm(actual) == norm(expected))

    def score(self, ctx: EvalContext) -> float | None:
        return float(self.matches(self.output_value(ctx), self.expected_value(ctx)))


class JsonField(ExactMatch):
    """The output is a JSON document (a string, or already a dict/list); compare one field."""

    def __init__(self, spec: EvaluatorSpec) -> None:
        super().__init__(spec)
        if spec.field is None:  # refused by EvaluatorSpec; kept for the type checker
            raise ValueError(f"evaluator {spec.name!r} needs `field`")
        self.field = spec.field

    def score(self, ctx: EvalContext) -> float | None:
        document = self.output_value(ctx)
        if isinstance(document, str):
            try:
                document = json.loads(document)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"output {self.output_path!r} is not valid JSON: {exc.msg} "
                    f"(line {exc.lineno}, column {exc.colno})"
                ) from None
        elif not isinstance(document, Mapping | list):
            raise TypeError(
                f"output {self.output_path!r} is a {type(document).__name__}; "
                "jsonField needs a JSON string, a dict or a list"
            )
        actual = resolve_path(document, self.field)
        return float(self.matches(actual, self.expected_value(ctx)))


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"{what} is a {type(value).__name__}, not a string")


class Contains(ComparingEvaluator):
    """The needle (`value`, or the expected value) is in the output string or list."""

    def __init__(self, spec: EvaluatorSpec) -> None:
        super().__init__(spec)
        self.literal = spec.value

    def score(self, ctx: EvalContext) -> float | None:
        haystack = self.output_value(ctx)
        needle = self.literal if self.literal is not None else self.expected_value(ctx)
        fold = self.ignore_case
        if isinstance(haystack, str):
            text = _text(needle, "the value looked for")
            return float(text.casefold() in haystack.casefold() if fold else text in haystack)
        if isinstance(haystack, list | tuple):
            if fold and isinstance(needle, str):
                wanted = needle.casefold()
                return float(any(isinstance(i, str) and i.casefold() == wanted for i in haystack))
            return float(needle in haystack)
        raise TypeError(
            f"output {self.output_path!r} is a {type(haystack).__name__}; "
            "contains needs a string or a list"
        )


class Regex(ComparingEvaluator):
    """re.search of the pattern (`value`, or the expected value) in the output string."""

    def __init__(self, spec: EvaluatorSpec, *, where: str) -> None:
        super().__init__(spec)
        self.flags = re.IGNORECASE if spec.ignore_case else 0
        self.pattern: re.Pattern[str] | None = None
        if spec.value is not None:
            try:
                self.pattern = re.compile(spec.value, self.flags)
            except re.error as exc:
                raise ManifestError(
                    f"evaluator {spec.name!r}: {spec.value!r} is not a valid regular "
                    f"expression: {exc}",
                    where=where,
                    fix="fix the pattern (Python `re` syntax); in YAML, single-quote it "
                    "so backslashes stay as written",
                ) from exc

    def score(self, ctx: EvalContext) -> float | None:
        pattern = self.pattern
        if pattern is None:
            source = _text(self.expected_value(ctx), f"expected value {self.expected_key!r}")
            try:
                pattern = re.compile(source, self.flags)
            except re.error as exc:
                raise ValueError(
                    f"expected value {self.expected_key!r} of case {ctx.case.id!r} is not a "
                    f"valid regular expression: {exc}"
                ) from None
        text = _text(self.output_value(ctx), f"output {self.output_path!r}")
        return float(pattern.search(text) is not None)


def _number(value: Any, what: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError(f"{what} is not a number: {value!r}") from None
    raise TypeError(f"{what} is a {type(value).__name__}, not a number")


class Numeric(ComparingEvaluator):
    """|output - expected| <= tolerance + relativeTolerance * |expected|."""

    def __init__(self, spec: EvaluatorSpec) -> None:
        super().__init__(spec)
        self.tolerance = spec.tolerance or 0.0
        self.relative_tolerance = spec.relative_tolerance or 0.0

    def score(self, ctx: EvalContext) -> float | None:
        actual = _number(self.output_value(ctx), f"output {self.output_path!r}")
        expected = _number(self.expected_value(ctx), f"expected value {self.expected_key!r}")
        allowed = self.tolerance + self.relative_tolerance * abs(expected)
        return float(abs(actual - expected) <= allowed)
