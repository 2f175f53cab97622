"""What the result store can keep of a cell's result, checked before it is written.

One bad value must cost one cell, never a write batch (and so never the run, on every
rerun). Before results are buffered (`wtb.pipeline.execute.ResultWriter`):

- an output larger than `max_output_bytes` (as compact UTF-8 JSON) is recorded truncated,
  under a marker that says so (`TRUNCATED`: its size, the limit, a preview);
- a count the database cannot hold (tokens beyond a signed 64-bit integer) or a cost that
  is not a finite number is not turned into another number: the cell is recorded failed
  (`VALUE_OUT_OF_RANGE`), with the value in its message. Scoring checks this first
  (`wtb.cells.scoring`), so the cell is scored as the failure it is.

Whatever the database still refuses is narrowed down to its cell by `ResultStore.record`,
which records that cell failed (`RESULT_REFUSED`) with `refusal_reason`: the error's class
and the first line of its message, never the statement's parameters.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from wtb.domain import CellResult, NodeFigures

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
DEFAULT_MAX_OUTPUT_BYTES: Final = 1024 * 1024
"""The default largest output kept whole (`WTB_MAX_OUTPUT_BYTES`)."""

TRUNCATED: Final = "$wtbTruncated"
"""The key of a truncated output's marker: {bytes, limit, note}; `preview` beside it holds
the start of the output's JSON text."""
VALUE_OUT_OF_RANGE: Final = "ValueOutOfRange"
"""`error_type` of a cell whose token count or cost the store cannot keep."""
RESULT_REFUSED: Final = "ResultRefused"
"""`error_type` of a cell whose result the database refused."""
_MAX_REASON: Final = 300


def usage_problem(tokens: int | None, cost: float | None) -> str | None:
    """Why the store cannot keep this token count or cost as they are (None: it can)."""
    if tokens is not None and not INT64_MIN <= tokens <= INT64_MAX:
        return (
            f"the cell's token count {tokens} is out of the range the result store keeps "
            f"(at most {INT64_MAX}); WTB does not store it as another number. "
            "Check the usage the graph reports (wtb.report_usage, usage_metadata)"
        )
    if cost is not None and not math.isfinite(cost):
        return (
            f"the cell's cost {cost!r} is not a finite number; "
            "check the cost the graph reports (wtb.report_usage)"
        )
    return None


def _node_tokens(figures: NodeFigures) -> NodeFigures:
    tokens = figures["tokens"]
    if tokens is not None and not INT64_MIN <= tokens <= INT64_MAX:
        return {**figures, "tokens": None}
    return figures


def storable_nodes(nodes: Mapping[str, NodeFigures] | None) -> dict[str, NodeFigures] | None:
    """Per-node figures with token counts the store cannot keep as unknown (None): the
    cell's own count says what was wrong."""
    if not nodes:
        return None
    return {node: _node_tokens(figures) for node, figures in nodes.items()}


def output_size(output: Any) -> int:
    """Bytes of the output as compact UTF-8 JSON (as the store keeps it, near enough)."""
    text = json.dumps(output, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(text.encode("utf-8", "replace"))


def is_truncated(output: Any) -> bool:
    """Whether a stored output is a truncated one's marker (it cannot be scored again)."""
    return isinstance(output, dict) and TRUNCATED in output


def truncated(output: Any, size: int, limit: int) -> dict[str, Any]:
    """The marker recorded for an output of `size` bytes over `limit`: what was cut, and
    the start of its JSON text, the whole within `limit` bytes."""
    text = json.dumps(output, ensure_ascii=False, separators=(",", ":"), default=str)
    marker: dict[str, Any] = {
        TRUNCATED: {
            "bytes": size,
            "limit": limit,
            "note": f"output of {size} bytes truncated to a preview of at most {limit} bytes "
            "(WTB_MAX_OUTPUT_BYTES); evaluators scored the whole output",
        },
        "preview": "",
    }
    budget = max(0, limit - output_size(marker))
    preview = text[:budget]
    # Escapes and multi-byte characters may make the preview larger than its length.
    while preview and output_size(preview) > budget:
        preview = preview[: len(preview) * 3 // 4]
    marker["preview"] = preview
    return marker


def refusal_reason(exc: BaseException) -> str:
    """Why the database refused a write, without the statement or its parameters: the
    driver's error class and the first line of its message."""
    orig = getattr(exc, "orig", None)
    error = orig if isinstance(orig, BaseException) else exc
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    reason = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return reason if len(reason) <= _MAX_REASON else reason[:_MAX_REASON] + "..."


def refused_result(result: CellResult, reason: str, *, attempts: bool = True) -> CellResult:
    """The failed result recorded for a cell the store cannot keep as it is (`reason`):
    no output, no figures, its metrics unknown; its attempts kept unless `attempts` is
    False (they may be what was refused)."""
    return dataclasses.replace(
        result,
        status="failed",
        output=None,
        metrics=dict.fromkeys(result.metrics),
        evaluator_errors={},
        tokens=None,
        cost=None,
        error_type=RESULT_REFUSED,
        error_message=(
            f"the database refused this cell's result ({reason}); WTB recorded the cell "
            "as failed so that the rest of the run is kept"
        ),
        nodes=None,
        error_node=None,
        finished_at=datetime.now(UTC),
        attempts=result.attempts if attempts else (),
    )


def fit_for_store(result: CellResult, max_output_bytes: int) -> CellResult:
    """The result as the store can keep it: an output over `max_output_bytes` truncated
    under a marker; a token count or cost it cannot hold makes the cell failed (scoring
    catches those first, with the cell scored as failed; this covers results made
    elsewhere)."""
    problem = usage_problem(result.tokens, result.cost)
    if problem is not None:
        return dataclasses.replace(
            refused_result(result, problem), error_type=VALUE_OUT_OF_RANGE, error_message=problem
        )
    nodes = storable_nodes(result.nodes)
    if nodes != result.nodes:
        result = dataclasses.replace(result, nodes=nodes)
    if result.output is not None:
        size = output_size(result.output)
        if size > max_output_bytes:
            result = dataclasses.replace(
                result, output=truncated(result.output, size, max_output_bytes)
            )
    return result
