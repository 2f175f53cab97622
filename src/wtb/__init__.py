"""WTB, the Workflow Test Bench: batch-test LangGraph workflows over node variants.

The public API for workflow authors is small: `report_usage` lets a plain-function node
report tokens and cost; `EvalContext` is what a user evaluator receives. For notebooks and
scripts, `run` runs BatchTests as `wtb run` does and `load` reads a recorded run back, both
as `RunResults` (`wtb.python_api`). Everything but `report_usage` loads on first use, so
`import wtb` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wtb.usage import report_usage

if TYPE_CHECKING:
    from wtb.evaluators import EvalContext
    from wtb.python_api import RunResults, load, run

__all__ = ["EvalContext", "RunResults", "load", "report_usage", "run"]

_LAZY = {
    "EvalContext": "wtb.evaluators",
    "RunResults": "wtb.python_api",
    "load": "wtb.python_api",
    "run": "wtb.python_api",
}


def __getattr__(name: str) -> Any:
    # Imported only when asked for: `import wtb` (and `wtb --help`) load none of them.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)
