"""Shared pieces of the custom resource models: camelCase aliases, strictness, conditions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "wtb.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes names (RFC 1123 subdomain, as metadata.name).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# Graph node and variant names: identifiers LangGraph accepts and a label can show.
IDENT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
# "package.module:attribute" (attribute may be dotted).
IMPORT_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"


class SpecModel(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields refused.

    Strict types, as the API server's schema is: `"3"` is not an integer, `"yes"` not a bool.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


class StatusModel(BaseModel):
    """Base of status models: camelCase on the wire, written only by WTB."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    """A status condition in the shape of Kubernetes' metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class ObjectMeta(BaseModel):
    """The part of metadata WTB reads; everything else is kept as it is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    namespace: str = Field(default="default", pattern=NAME_PATTERN, max_length=63)
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


JSONObject = dict[str, Any]

# Size limits of the resources, in the CRDs too (maxLength, maxItems, maxProperties): the
# API server refuses an oversize object at apply time, before WTB reads it. Generous for
# any real workflow, finite for a hostile one; the work a matrix makes is bounded by the
# operator's and the CLI's WTB_MAX_COMBINATIONS and WTB_MAX_CELLS besides.
MAX_NAME: Final = 253
"""Characters of a name: node, variant, setting choice, evaluator, case id, metric."""
MAX_TEXT: Final = 4096
"""Characters of an import path, a file path, a literal or a pattern."""
MAX_NODES: Final = 64
"""Nodes (or settings) in a matrix, in `fixed`, `baseline` or one include/exclude
pattern; nodes with variants in a Workflow."""
MAX_VARIANTS: Final = 256
"""Variants listed per node (matrix and Workflow), choices per setting."""
MAX_PATTERNS: Final = 256
"""Patterns in `include`, and in `exclude`."""
MAX_EVALUATORS: Final = 64
MAX_LIST: Final = 256
"""Entries of other short lists: expected fields, transient errors, graph nodes and edges,
Python path entries, breakpoints."""
MAX_INLINE_CASES: Final = 10_000
"""Cases given inline in a BatchTest (a bigger data set belongs in a file)."""

Name = Annotated[str, Field(max_length=MAX_NAME)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
NodeMap = Annotated[dict[str, Name], Field(max_length=MAX_NODES)]
"""node -> variant: `fixed`, `baseline`, an include/exclude pattern."""


def given_fields(model: BaseModel, names: Iterable[str] | None = None) -> set[str]:
    """The fields (of `names`, default all) given a value other than their default. A
    default value is no mistake, whoever wrote it: the API server fills in the CRD's
    defaults, and a spec read back from the result store has every field."""
    fields = type(model).model_fields
    return {
        f
        for f in (model.model_fields_set if names is None else set(names) & model.model_fields_set)
        if getattr(model, f) != fields[f].get_default(call_default_factory=True)
    }


def duplicates(names: list[str]) -> list[str]:
    """The names that occur more than once, sorted."""
    return sorted(name for name, count in Counter(names).items() if count > 1)
