"""What a graph's invocation gets besides its input: LangGraph's run-scoped `context`, the
RunnableConfig's `configurable`, `recursion_limit`, `tags` and `metadata`.

The same block (`invoke`) may be given on a Workflow, a BatchTest, a node variant, a setting
and a data set row; `merge_invocations` folds them, the most specific last: dicts are merged
key by key, tags concatenated, the recursion limit replaced.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Final

from pydantic import Field, field_validator

from wtb.api._base import SpecModel

MAX_RECURSION_LIMIT: Final = 10_000
RESERVED_METADATA_PREFIX: Final = "wtb_"
"""Metadata keys WTB sets on every invocation (`wtb_run`, `wtb_cell`, ...)."""

_MAX_KEYS = 256
_Tag = Annotated[str, Field(min_length=1, max_length=256)]


class InvocationSpec(SpecModel):
    """What graph.invoke / ainvoke gets besides the input. Given on a Workflow, a BatchTest,
    a variant, a setting or a data set row; the most specific wins (dicts key by key, tags
    concatenated)."""

    context: dict[str, Any] | None = Field(
        default=None,
        max_length=_MAX_KEYS,
        description=(
            "LangGraph's run-scoped context (`context=`, read by nodes as `runtime.context`); "
            "checked against the graph's context_schema before any cell runs."
        ),
    )
    configurable: dict[str, Any] | None = Field(
        default=None,
        max_length=_MAX_KEYS,
        description="The RunnableConfig's `configurable` (read by nodes as "
        'config["configurable"]).',
    )
    recursion_limit: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RECURSION_LIMIT,
        description=(
            "LangGraph's recursion limit (supersteps); by default the graph's own (its "
            "with_config, else LangGraph's), as in production. A graph that reaches it fails "
            "with GraphRecursionError, never retried."
        ),
    )
    tags: list[_Tag] | None = Field(
        default=None,
        max_length=64,
        description="Tags of the run, for tracing (WTB adds `wtb`).",
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        max_length=_MAX_KEYS,
        description=(
            "Metadata of the run, for tracing; keys starting with `wtb_` are WTB's own "
            "(run, cell, case, repeat, attempt, combination)."
        ),
    )

    @field_validator("metadata")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        reserved = sorted(k for k in value or {} if k.startswith(RESERVED_METADATA_PREFIX))
        if reserved:
            raise ValueError(
                f"metadata keys starting with {RESERVED_METADATA_PREFIX!r} are WTB's own "
                f"({', '.join(reserved)}); rename them"
            )
        return value


def merge_invocations(specs: Iterable[InvocationSpec | None]) -> InvocationSpec:
    """Fold `specs`, least specific first: `context`, `configurable` and `metadata` merged
    key by key (a later key wins), `tags` concatenated (each once, first place kept), the
    last `recursionLimit` given wins. The result is not validated again: every part was."""
    context: dict[str, Any] = {}
    configurable: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    tags: dict[str, None] = {}
    recursion_limit: int | None = None
    given = False
    for spec in specs:
        if spec is None:
            continue
        given = True
        context.update(spec.context or {})
        configurable.update(spec.configurable or {})
        metadata.update(spec.metadata or {})
        tags.update(dict.fromkeys(spec.tags or ()))
        if spec.recursion_limit is not None:
            recursion_limit = spec.recursion_limit
    if not given:
        return InvocationSpec()
    return InvocationSpec.model_construct(
        context=context or None,
        configurable=configurable or None,
        recursion_limit=recursion_limit,
        tags=list(tags) or None,
        metadata=metadata or None,
    )
