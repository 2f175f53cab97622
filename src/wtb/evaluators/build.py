"""Build a BatchTest's evaluators, the user's included (before anything runs), and score a
cell with them."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Sequence

from wtb._jsonable import clean_text
from wtb.api.batchtest import EvaluatorSpec
from wtb.evaluators.base import Evaluator
from wtb.evaluators.builtin import USER_TYPE, build_builtin, check_fields
from wtb.evaluators.context import EvalContext
from wtb.evaluators.user import PythonEvaluator, load_user_function

_MAX_ERROR = 1000

DEFAULT_EVALUATOR_TIMEOUT_SECONDS = 60.0
"""How long a `python` evaluator may take on one cell, unless the BatchTest says
(`spec.evaluatorTimeoutSeconds`)."""


class EvaluatorTimeout(TimeoutError):
    """A `python` evaluator did not return within its deadline; its call was abandoned."""


def _build_one(spec: EvaluatorSpec, where: str) -> Evaluator:
    if spec.type != USER_TYPE:
        return build_builtin(spec, where)
    check_fields(spec, where)
    return PythonEvaluator(spec, load_user_function(spec, where=where))


def build_evaluators(
    specs: Sequence[EvaluatorSpec], where: str = "spec.evaluators"
) -> list[Evaluator]:
    """The evaluators of a BatchTest, in manifest order.

    Imports user evaluators, instantiates evaluator classes and compiles literal patterns,
    so that a mistake is a ManifestError naming the field before any cell runs.
    """
    return [_build_one(spec, f"{where}[{i}]") for i, spec in enumerate(specs)]


def _exit_code(exc: BaseException) -> str | None:
    if isinstance(exc, SystemExit):
        return f"exit code {exc.code!r}: the evaluator called sys.exit() or raised SystemExit"
    if isinstance(exc, KeyboardInterrupt):
        return "the evaluator raised KeyboardInterrupt"
    return None


def evaluate(
    evaluators: Sequence[Evaluator],
    ctx: EvalContext,
    *,
    timeout_seconds: float = DEFAULT_EVALUATOR_TIMEOUT_SECONDS,
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Score one cell: (metrics, errors). An evaluator that raises gets metric None and an
    error 'ErrorClass: message'; the others are unaffected. That includes an evaluator
    calling sys.exit() or raising another BaseException: it ends neither the cell nor the
    run (evaluators run on worker threads, never where a real Ctrl-C arrives). A `python`
    evaluator that does not return within `timeout_seconds` gets metric None and an error
    'EvaluatorTimeout: ...' (its call is abandoned: it runs on a daemon thread)."""
    metrics: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    for evaluator in evaluators:
        try:
            if isinstance(evaluator, PythonEvaluator) and ctx.status == "succeeded":
                metrics[evaluator.name] = _within(evaluator, ctx, timeout_seconds)
            else:
                metrics[evaluator.name] = evaluator(ctx)
        except BaseException as exc:  # sys.exit() in an evaluator too: this metric's error
            metrics[evaluator.name] = None
            message = clean_text(_exit_code(exc) or str(exc) or repr(exc))
            if len(message) > _MAX_ERROR:
                message = message[:_MAX_ERROR] + "..."
            errors[evaluator.name] = f"{type(exc).__name__}: {message}"
    return metrics, errors


def _within(evaluator: Evaluator, ctx: EvalContext, seconds: float) -> float | None:
    """`evaluator(ctx)` on a thread of its own (with the caller's context variables), waited
    for `seconds`. Python cannot stop a thread: one that overruns is abandoned (a daemon,
    it never holds up the run or the process's exit) and its late result is dropped."""
    outcome: list[tuple[bool, object]] = []
    done = threading.Event()
    context = contextvars.copy_context()

    def call() -> None:
        try:
            outcome.append((True, context.run(evaluator, ctx)))
        except BaseException as exc:  # handed to the caller, who decides
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=call, name=f"wtb-evaluator-{evaluator.name}", daemon=True).start()
    if not done.wait(seconds):
        raise EvaluatorTimeout(
            f"evaluator {evaluator.name!r} did not return within {seconds:g} s "
            "(spec.evaluatorTimeoutSeconds); its call was abandoned"
        )
    ok, value = outcome[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    assert value is None or isinstance(value, float)
    return value
