"""Evaluators: built-ins, user evaluators by import path, failed cells, error isolation."""

from __future__ import annotations

import importlib
import itertools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import BaseModel

from wtb.api.batchtest import EvaluatorSpec
from wtb.domain import Case
from wtb.errors import ManifestError
from wtb.evaluators import (
    EvalContext,
    Evaluator,
    PathNotFoundError,
    resolve_path,
)
from wtb.evaluators.build import build_evaluators, evaluate


def ctx(
    output: dict[str, Any] | None,
    expected: dict[str, Any] | None = None,
    *,
    failed: bool = False,
    latency_ms: float = 12.5,
    tokens: int | None = None,
    cost: float | None = None,
) -> EvalContext:
    case = Case(id="c1", inputs={"q": "question"}, expected=expected)
    return EvalContext(
        case=case,
        inputs=case.inputs,
        expected=expected,
        output=None if failed else output,
        status="failed" if failed else "succeeded",
        error_type="ValueError" if failed else None,
        latency_ms=latency_ms,
        tokens=tokens,
        cost=cost,
    )


def one(name: str = "m", **fields: Any) -> Evaluator:
    [evaluator] = build_evaluators([EvaluatorSpec.model_validate({"name": name, **fields})])
    return evaluator


def score(evaluator: Evaluator, context: EvalContext) -> tuple[float | None, str | None]:
    metrics, errors = evaluate([evaluator], context)
    return metrics[evaluator.name], errors.get(evaluator.name)


def error_of(evaluator: Evaluator, context: EvalContext) -> str:
    """The error of an evaluator that must fail on this cell (its metric is then None)."""
    value, error = score(evaluator, context)
    assert value is None
    assert error is not None
    return error


# --- resolve_path ------------------------------------------------------------------------


class Inner(BaseModel):
    label: str


class Outer(BaseModel):
    inner: Inner
    tags: list[str]


def test_resolve_path_walks_keys_indexes_and_attributes() -> None:
    state = {
        "messages": [HumanMessage(content="hi"), AIMessage(content="answer")],
        "result": {"items": [{"id": 7}, {"id": 9}]},
        "model": Outer(inner=Inner(label="x"), tags=["a", "b"]),
    }
    assert resolve_path(state, "messages.-1.content") == "answer"
    assert resolve_path(state, "messages.0.content") == "hi"
    assert resolve_path(state, "result.items.1.id") == 9
    assert resolve_path(state, "model.inner.label") == "x"
    assert resolve_path(state, "model.tags.-2") == "a"


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("answr", ["'answr'", "available keys: answer, result"]),
        ("result.itemz", ["'result.itemz'", "'itemz'", "available keys: items"]),
        ("result.items.5", ["index 5 out of range", "2 items"]),
        ("result.items.first", ["'first' is not an index"]),
        ("answer.length", ["'answer' is str"]),
        ("model.inner.lable", ["no 'lable'", "available fields: label"]),
    ],
)
def test_resolve_path_errors_name_the_path_and_what_exists(path: str, named: list[str]) -> None:
    state = {
        "answer": "yes",
        "result": {"items": [1, 2]},
    }
    if path.startswith("model"):
        state = {"model": Outer(inner=Inner(label="x"), tags=[])}  # type: ignore[dict-item]
    with pytest.raises(PathNotFoundError) as info:
        resolve_path(state, path)
    assert isinstance(info.value, KeyError)
    for text in named:
        assert text in str(info.value)


# --- built-ins -----------------------------------------------------------------------------


def test_exact_match_compares_output_with_expected() -> None:
    evaluator = one(type="exactMatch", output="answer")
    assert score(evaluator, ctx({"answer": "Paris"}, {"answer": "Paris"})) == (1.0, None)
    assert score(evaluator, ctx({"answer": "paris"}, {"answer": "Paris"})) == (0.0, None)
    assert score(evaluator, ctx({"answer": 3}, {"answer": 3.0})) == (1.0, None)


def test_exact_match_options_and_expected_key() -> None:
    lenient = one(type="exactMatch", output="answer", ignoreCase=True, strip=True)
    assert score(lenient, ctx({"answer": "  PARIS\n"}, {"answer": "paris"})) == (1.0, None)
    case_only = one(type="exactMatch", output="answer", ignoreCase=True)
    assert score(case_only, ctx({"answer": " PARIS"}, {"answer": "paris"})) == (0.0, None)
    keyed = one(type="exactMatch", output="messages.-1.content", expected="answer")
    state = {"messages": [AIMessage(content="Paris")]}
    assert score(keyed, ctx(state, {"answer": "Paris"})) == (1.0, None)


def test_missing_expected_value_is_an_error_for_that_cell_only() -> None:
    evaluator = one(type="exactMatch", output="answer")
    error = error_of(evaluator, ctx({"answer": "x"}, {"label": "x"}))
    assert error == (
        "ExpectedValueMissingError: case 'c1' has no expected value 'answer' (its expected "
        "keys: label); add it to the case or set the evaluator's `expected`"
    )
    assert "expected keys: none" in error_of(evaluator, ctx({"answer": "x"}, None))


def test_expected_key_may_be_a_dotted_path() -> None:
    evaluator = one(type="exactMatch", output="answer", expected="gold.answer")
    assert score(evaluator, ctx({"answer": "x"}, {"gold": {"answer": "x"}})) == (1.0, None)


def test_missing_output_path_names_the_available_keys() -> None:
    evaluator = one(type="exactMatch", output="answr")
    error = error_of(evaluator, ctx({"answer": "x"}, {"answr": "x"}))
    assert error == "PathNotFoundError: 'answr': no key 'answr' at 'answr'; available keys: answer"


def test_contains_in_strings_and_lists() -> None:
    expected_needle = one(type="contains", output="answer")
    assert score(expected_needle, ctx({"answer": "the capital is Paris"}, {"answer": "Paris"})) == (
        1.0,
        None,
    )
    assert score(expected_needle, ctx({"answer": "Lyon"}, {"answer": "Paris"})) == (0.0, None)
    assert score(expected_needle, ctx({"answer": "answer 42"}, {"answer": 42})) == (1.0, None)
    literal = one(type="contains", output="tags", value="Urgent", ignoreCase=True)
    assert score(literal, ctx({"tags": ["low", "urgent"]})) == (1.0, None)
    assert score(literal, ctx({"tags": ["low"]})) == (0.0, None)
    exact_items = one(type="contains", output="ids", expected="id")
    assert score(exact_items, ctx({"ids": [1, 2, 3]}, {"id": 2})) == (1.0, None)
    error = error_of(literal, ctx({"tags": {"urgent": True}}))
    assert error == "TypeError: output 'tags' is a dict; contains needs a string or a list"


def test_regex_with_literal_and_expected_patterns() -> None:
    literal = one(type="regex", output="answer", value=r"^\d{3}-\d{4}$")
    assert score(literal, ctx({"answer": "555-1234"})) == (1.0, None)
    assert score(literal, ctx({"answer": "call 555-1234"})) == (0.0, None)
    folded = one(type="regex", output="answer", value="paris", ignoreCase=True)
    assert score(folded, ctx({"answer": "PARIS!"})) == (1.0, None)
    from_case = one(type="regex", output="answer", expected="pattern")
    assert score(from_case, ctx({"answer": "abc"}, {"pattern": "b+"})) == (1.0, None)
    error = error_of(from_case, ctx({"answer": "abc"}, {"pattern": "(b"}))
    assert error.startswith(
        "ValueError: expected value 'pattern' of case 'c1' is not a valid regular expression"
    )


def test_a_bad_literal_pattern_is_refused_at_build_naming_the_evaluator() -> None:
    spec = EvaluatorSpec.model_validate(
        {"name": "phone", "type": "regex", "output": "answer", "value": "(unclosed"}
    )
    fine = EvaluatorSpec.model_validate({"name": "lat", "type": "latency"})
    with pytest.raises(ManifestError) as info:
        build_evaluators([fine, spec], where="bt.yaml: spec.evaluators")
    assert info.value.where == "bt.yaml: spec.evaluators[1].value"
    assert info.value.message.startswith("evaluator 'phone': '(unclosed' is not a valid regular")
    assert info.value.fix


def test_json_field_reads_strings_and_dicts() -> None:
    evaluator = one(type="jsonField", output="result", field="answer.city", expected="city")
    document = '{"answer": {"city": "Paris", "score": 3}}'
    assert score(evaluator, ctx({"result": document}, {"city": "Paris"})) == (1.0, None)
    parsed = {"answer": {"city": "Lyon"}}
    assert score(evaluator, ctx({"result": parsed}, {"city": "Paris"})) == (0.0, None)
    expected = {"city": "Paris"}
    assert error_of(evaluator, ctx({"result": "{not json"}, expected)) == (
        "ValueError: output 'result' is not valid JSON: Expecting property name enclosed in "
        "double quotes (line 1, column 2)"
    )
    missing = error_of(evaluator, ctx({"result": '{"answer": {}}'}, expected))
    assert missing.startswith("PathNotFoundError: 'answer.city'")
    assert error_of(evaluator, ctx({"result": 5}, expected)) == (
        "TypeError: output 'result' is a int; jsonField needs a JSON string, a dict or a list"
    )


@pytest.mark.parametrize(
    ("fields", "actual", "expected", "result"),
    [
        ({}, 3, 3, 1.0),
        ({}, 3.0001, 3, 0.0),
        ({"tolerance": 0.01}, 3.005, 3, 1.0),
        ({"tolerance": 0.01}, 2.98, 3, 0.0),
        ({"relativeTolerance": 0.1}, 108, 100, 1.0),
        ({"relativeTolerance": 0.1}, 89, 100, 0.0),
        ({"tolerance": 1, "relativeTolerance": 0.1}, 111, 100, 1.0),
        ({"tolerance": 0.5}, " 7.4 ", "7", 1.0),
        ({}, "1e3", 1000, 1.0),
    ],
)
def test_numeric_tolerances(
    fields: dict[str, Any], actual: Any, expected: Any, result: float
) -> None:
    evaluator = one(type="numeric", output="n", **fields)
    assert score(evaluator, ctx({"n": actual}, {"n": expected})) == (result, None)


def test_numeric_refuses_values_that_are_not_numbers() -> None:
    evaluator = one(type="numeric", output="n")
    assert error_of(evaluator, ctx({"n": "about three"}, {"n": 3})) == (
        "ValueError: output 'n' is not a number: 'about three'"
    )
    assert error_of(evaluator, ctx({"n": 3}, {"n": [3]})) == (
        "TypeError: expected value 'n' is a list, not a number"
    )
    assert error_of(evaluator, ctx({"n": True}, {"n": 1})) == (
        "TypeError: output 'n' is a bool, not a number"
    )


def test_measuring_evaluators_read_the_cell_and_are_lower_is_better() -> None:
    latency, tokens, cost = (one(t, type=t) for t in ("latency", "tokens", "cost"))
    assert [e.higher_is_better for e in (latency, tokens, cost)] == [False, False, False]
    context = ctx({"a": 1}, latency_ms=42.0, tokens=120, cost=0.003)
    metrics, errors = evaluate([latency, tokens, cost], context)
    assert list(metrics.values()) == [42.0, 120.0, 0.003]
    assert errors == {}
    metrics, _ = evaluate([tokens, cost], ctx({"a": 1}))
    assert list(metrics.values()) == [None, None]


def test_fields_a_type_does_not_read_are_refused() -> None:
    with pytest.raises(ManifestError) as info:
        one(type="exactMatch", output="a", tolerance=0.1)
    assert info.value.where == "spec.evaluators[0].tolerance"
    assert info.value.message == "evaluator 'm' of type exactMatch does not use `tolerance`"
    assert info.value.fix == (
        "remove it; type exactMatch reads `expected`, `ignoreCase`, `output`, `strip`"
    )
    with pytest.raises(ManifestError) as info:
        one(type="tokens", output="a")
    assert info.value.where == "spec.evaluators[0].output"
    assert info.value.fix == "remove it; type tokens reads no other field"


# --- failed cells ----------------------------------------------------------------------------


def test_failed_cells_score_zero_or_none_by_direction_and_type() -> None:
    evaluators = [
        one("a", type="exactMatch", output="answer"),
        one("b", type="numeric", output="error", higherIsBetter=False),
        one("c", type="latency"),
        one("d", type="tokens", higherIsBetter=True),
        one("e", type="cost"),
    ]
    metrics, errors = evaluate(evaluators, ctx(None, {"answer": "x"}, failed=True, tokens=5))
    assert metrics == {"a": 0.0, "b": None, "c": None, "d": None, "e": None}
    assert errors == {}


# --- user evaluators -----------------------------------------------------------------------

_USER_CODE = """
from wtb.evaluators import EvalContext

calls: list[str] = []


def length_ok(ctx: EvalContext) -> bool:
    calls.append(ctx.case.id)
    return len(ctx.output["answer"]) <= 5


def ratio(ctx: EvalContext) -> object:
    return ctx.output["value"]


def boom(ctx: EvalContext) -> float:
    raise RuntimeError("judge unavailable")


class Overlap:
    def __init__(self, *, weight: float = 1.0) -> None:
        if weight < 0:
            raise ValueError("weight must be >= 0")
        self.weight = weight

    def __call__(self, ctx: EvalContext) -> float:
        calls.append("Overlap")
        return self.weight * (ctx.output["answer"] == ctx.expected["answer"])


class NotCallable:
    pass


NOT_A_FUNCTION = 3
"""

_names = itertools.count()


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[str]:
    """A real module of user evaluators on sys.path, under a fresh name per test."""
    name = f"user_evals_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(_USER_CODE))
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_python_function_evaluator(user_module: str) -> None:
    evaluator = one(type="python", path=f"{user_module}:length_ok")
    assert evaluator.higher_is_better
    assert score(evaluator, ctx({"answer": "short"})) == (1.0, None)
    assert score(evaluator, ctx({"answer": "far too long"})) == (0.0, None)
    assert importlib.import_module(user_module).calls == ["c1", "c1"]


def test_python_class_evaluator_is_built_once_with_config(user_module: str) -> None:
    evaluator = one(type="python", path=f"{user_module}:Overlap", config={"weight": 0.5})
    assert score(evaluator, ctx({"answer": "a"}, {"answer": "a"})) == (0.5, None)
    assert score(evaluator, ctx({"answer": "a"}, {"answer": "b"})) == (0.0, None)


def test_failed_cells_do_not_call_user_code(user_module: str) -> None:
    higher = one(type="python", path=f"{user_module}:length_ok")
    lower = one("lower", type="python", path=f"{user_module}:length_ok", higherIsBetter=False)
    metrics, errors = evaluate([higher, lower], ctx(None, failed=True))
    assert metrics == {"m": 0.0, "lower": None}
    assert errors == {}
    assert importlib.import_module(user_module).calls == []


@pytest.mark.parametrize(
    ("returned", "metric", "error"),
    [
        (True, 1.0, None),
        (False, 0.0, None),
        (3, 3.0, None),
        (0.25, 0.25, None),
        (None, None, None),
        (float("nan"), None, "ValueError: the evaluator returned nan; return a finite number"),
        (float("inf"), None, "ValueError: the evaluator returned inf; return a finite number"),
        ("0.5", None, "TypeError: the evaluator returned a str; return a float, a bool or None"),
    ],
)
def test_user_return_values_become_metrics(
    user_module: str, returned: Any, metric: float | None, error: str | None
) -> None:
    evaluator = one(type="python", path=f"{user_module}:ratio")
    assert score(evaluator, ctx({"value": returned})) == (metric, error)


def test_one_evaluator_raising_does_not_affect_the_others(user_module: str) -> None:
    specs = [
        {"name": "first", "type": "exactMatch", "output": "answer"},
        {"name": "judge", "type": "python", "path": f"{user_module}:boom"},
        {"name": "latency", "type": "latency"},
    ]
    evaluators = build_evaluators([EvaluatorSpec.model_validate(s) for s in specs])
    metrics, errors = evaluate(evaluators, ctx({"answer": "x"}, {"answer": "x"}))
    assert metrics == {"first": 1.0, "judge": None, "latency": 12.5}
    assert errors == {"judge": "RuntimeError: judge unavailable"}


@pytest.mark.parametrize(
    ("attr", "config", "where", "named"),
    [
        ("missing_function", None, "path", ["has no attribute 'missing_function'"]),
        ("NOT_A_FUNCTION", None, "path", ["'judge'", "is a int, not a function"]),
        ("NotCallable", None, "path", ["'judge'", "instances of", "not callable"]),
        ("Overlap", {"wieght": 2}, "config", ["'judge'", "does not accept this config", "wieght"]),
        ("Overlap", {"weight": -1}, "config", ["ValueError: weight must be >= 0"]),
        ("length_ok", {"weight": 2}, "config", ["is a function"]),
    ],
)
def test_bad_user_evaluators_are_refused_at_build(
    user_module: str, attr: str, config: dict[str, Any] | None, where: str, named: list[str]
) -> None:
    fine = EvaluatorSpec.model_validate({"name": "lat", "type": "latency"})
    fields: dict[str, Any] = {"name": "judge", "type": "python", "path": f"{user_module}:{attr}"}
    if config is not None:
        fields["config"] = config
    with pytest.raises(ManifestError) as info:
        build_evaluators(
            [fine, EvaluatorSpec.model_validate(fields)], where="b.yaml: spec.evaluators"
        )
    assert info.value.where == f"b.yaml: spec.evaluators[1].{where}"
    for text in named:
        assert text in info.value.message
    assert info.value.fix
