"""User evaluators, named by import path: a function, or a class built once with `config`."""

from __future__ import annotations

from collections.abc import Callable

from wtb.api.batchtest import EvaluatorSpec
from wtb.errors import ManifestError
from wtb.evaluators.base import Evaluator, as_score
from wtb.evaluators.context import EvalContext
from wtb.importing import import_object

UserFunction = Callable[[EvalContext], object]


def load_user_function(spec: EvaluatorSpec, *, where: str) -> UserFunction:
    """Import the evaluator `spec.path` names; instantiate a class with `spec.config`.

    `where` locates the evaluator in the manifest (e.g. 'spec.evaluators[2]').
    """
    path = spec.path or ""
    obj = import_object(path, where=f"{where}.path")
    if isinstance(obj, type):
        try:
            instance = obj(**(spec.config or {}))
        except TypeError as exc:
            raise ManifestError(
                f"evaluator {spec.name!r}: {path} does not accept this config: {exc}",
                where=f"{where}.config",
                fix=f"pass only the keyword arguments {obj.__name__}.__init__ takes",
            ) from exc
        except Exception as exc:
            raise ManifestError(
                f"evaluator {spec.name!r}: creating {path} with this config raised "
                f"{type(exc).__name__}: {exc}",
                where=f"{where}.config",
                fix="fix the config values (or the class)",
            ) from exc
        if not callable(instance):
            raise ManifestError(
                f"evaluator {spec.name!r}: instances of {path} are not callable",
                where=f"{where}.path",
                fix="define `__call__(self, ctx: EvalContext) -> float | bool | None`",
            )
        function: UserFunction = instance
        return function
    if not callable(obj):
        raise ManifestError(
            f"evaluator {spec.name!r}: {path} is a {type(obj).__name__}, not a function",
            where=f"{where}.path",
            fix="name a function `(ctx: EvalContext) -> float | bool | None` or a class",
        )
    if spec.config is not None:
        raise ManifestError(
            f"evaluator {spec.name!r}: `config` is passed to evaluator classes, and {path} "
            "is a function",
            where=f"{where}.config",
            fix="remove `config`, or make the evaluator a class taking these keyword arguments",
        )
    user_function: UserFunction = obj
    return user_function


class PythonEvaluator(Evaluator):
    """Calls user code on succeeded cells; its return value becomes the metric."""

    def __init__(self, spec: EvaluatorSpec, function: UserFunction) -> None:
        super().__init__(spec.name, higher_is_better=spec.direction_higher_is_better)
        self.function = function

    def score(self, ctx: EvalContext) -> float | None:
        return as_score(self.function(ctx))
