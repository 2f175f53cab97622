"""The Workflow resource: a LangGraph graph and the variants that may replace its nodes."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from wtb.api._base import (
    IDENT_PATTERN,
    IMPORT_PATH_PATTERN,
    MAX_LIST,
    MAX_NAME,
    MAX_NODES,
    MAX_TEXT,
    MAX_VARIANTS,
    Condition,
    ObjectMeta,
    SpecModel,
    StatusModel,
    Text,
    duplicates,
)
from wtb.api.invocation import InvocationSpec

ORIGINAL = "original"
START = "__start__"
END = "__end__"


class NodeDecl(SpecModel):
    """One node of a declared graph."""

    name: str = Field(
        pattern=IDENT_PATTERN, max_length=MAX_NAME, description="Node name, unique in the graph."
    )
    path: str = Field(
        pattern=IMPORT_PATH_PATTERN,
        max_length=MAX_TEXT,
        description="Import path of the node callable, as 'package.module:function'.",
    )


class EdgeDecl(SpecModel):
    """An edge of a declared graph: fixed (`to`) or conditional (`router` + `to` list)."""

    source: str = Field(
        alias="from", description="Source node name, or __start__ for the entry edge."
    )
    to: list[str] = Field(
        min_length=1,
        description="Target node names (__end__ ends the graph). With a router, its choices.",
    )
    router: str | None = Field(
        default=None,
        pattern=IMPORT_PATH_PATTERN,
        description="Import path of a routing function returning one of `to`.",
    )

    @model_validator(mode="after")
    def _one_target_without_router(self) -> EdgeDecl:
        if self.router is None and len(self.to) != 1:
            raise ValueError(
                "an edge without a router has exactly one target in `to`; "
                "add `router` for a conditional edge"
            )
        return self


class GraphSpec(SpecModel):
    """Either a graph factory by import path, or nodes and edges declared here."""

    factory: str | None = Field(
        default=None,
        pattern=IMPORT_PATH_PATTERN,
        description=(
            "Import path of a function returning a LangGraph StateGraph builder "
            "(or a compiled graph), or of a module-level compiled graph."
        ),
    )
    state: str | None = Field(
        default=None,
        pattern=IMPORT_PATH_PATTERN,
        description="Import path of the state schema (TypedDict or pydantic model) "
        "of a declared graph.",
    )
    nodes: list[NodeDecl] = Field(default_factory=list, max_length=MAX_LIST)
    edges: list[EdgeDecl] = Field(default_factory=list, max_length=MAX_LIST)

    @model_validator(mode="after")
    def _factory_or_declared(self) -> GraphSpec:
        if self.factory is not None:
            if self.nodes or self.edges or self.state:
                raise ValueError(
                    "give either `factory`, or `state` with `nodes` and `edges`, not both"
                )
            return self
        if not self.nodes or self.state is None:
            raise ValueError(
                "a graph needs `factory` (import path of a graph factory), "
                "or `state`, `nodes` and `edges`"
            )
        names = [n.name for n in self.nodes]
        reserved = sorted({START, END} & set(names))
        if reserved:
            raise ValueError(f"{', '.join(reserved)} are LangGraph's own; name nodes otherwise")
        dupes = duplicates(names)
        if dupes:
            raise ValueError(f"node names must be unique; repeated: {', '.join(dupes)}")
        known = {*names, START, END}
        for i, edge in enumerate(self.edges):
            for target in [edge.source, *edge.to]:
                if target not in known:
                    raise ValueError(
                        f"edges[{i}] names unknown node {target!r}; "
                        f"known: {', '.join(sorted(known))}"
                    )
            if edge.source == END:
                raise ValueError(f"edges[{i}] starts at {END}; nothing runs after the end")
            if START in edge.to:
                raise ValueError(f"edges[{i}] leads to {START}; only the entry edge starts there")
        if not any(e.source == START for e in self.edges):
            raise ValueError(f"add an edge from {START} to the first node")
        return self


class VariantSpec(SpecModel):
    """An implementation that may replace one node."""

    name: str = Field(
        pattern=IDENT_PATTERN,
        max_length=MAX_NAME,
        description="Variant name, unique for its node.",
    )
    path: str = Field(
        pattern=IMPORT_PATH_PATTERN,
        max_length=MAX_TEXT,
        description=(
            "Import path of the node: anything LangGraph's add_node takes (a function, sync "
            "or async, with the parameters LangGraph passes; a Runnable such as a ToolNode, "
            "a compiled graph or a RunnableLambda). With `factory`, of a function that "
            "returns the node."
        ),
    )
    factory: bool | None = Field(
        default=None,
        description=(
            "True when `path` names a factory: it is called (with `config` as keyword "
            "arguments, or with none) and what it returns is the node."
        ),
    )
    config: dict[str, Any] | None = Field(
        default=None,
        description="Keyword arguments for the factory; needs `factory: true`.",
    )
    invoke: InvocationSpec | None = Field(
        default=None,
        description="What the invocation gets when this variant is in the combination "
        "(over the Workflow's and the BatchTest's `invoke`, under a data set row's).",
    )
    description: str | None = None

    @model_validator(mode="after")
    def _not_original(self) -> VariantSpec:
        if self.name == ORIGINAL:
            raise ValueError(
                f"'{ORIGINAL}' names the node's own implementation; choose another variant name"
            )
        if self.config is not None and not self.factory:
            raise ValueError(
                f"variant {self.name!r}: `config` holds keyword arguments for a factory; add "
                "`factory: true` when `path` names a function that builds the node, "
                "or remove `config`"
            )
        return self


class SettingSpec(SpecModel):
    """One choice of a named setting: a matrix axis that changes what the invocation gets
    (a model name in `configurable`, a field of the context) rather than a node."""

    name: str = Field(
        pattern=IDENT_PATTERN,
        max_length=MAX_NAME,
        description="Choice name, unique for its setting.",
    )
    invoke: InvocationSpec = Field(
        description="What the invocation gets with this choice (merged like a variant's)."
    )
    description: str | None = None

    @model_validator(mode="after")
    def _not_original(self) -> SettingSpec:
        if self.name == ORIGINAL:
            raise ValueError(
                f"'{ORIGINAL}' names the setting left out (nothing added); "
                "choose another choice name"
            )
        return self


class WorkflowSpec(SpecModel):
    image: str | None = Field(
        default=None, description="Container image holding the workflow code (cluster runs)."
    )
    graph: GraphSpec
    python_path: list[Text] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description=(
            "Directories put first on the Python path before the workflow's code is "
            "imported (a src/ layout: [src]): relative to the manifest's directory for "
            "`wtb run` and `wtb validate`, to the image's working directory in a cluster "
            "run. Relative paths inside that directory only (no absolute path, no `..`)."
        ),
    )
    variants: dict[str, Annotated[list[VariantSpec], Field(max_length=MAX_VARIANTS)]] = Field(
        default_factory=dict,
        max_length=MAX_NODES,
        description=(
            "Per node, the implementations that may replace it. A node inside a subgraph "
            "node (a compiled StateGraph added with add_node) is named `parent/child`."
        ),
    )
    settings: dict[str, Annotated[list[SettingSpec], Field(max_length=MAX_VARIANTS)]] | None = (
        Field(
            default=None,
            max_length=MAX_NODES,
            description=(
                "Named settings a BatchTest's matrix may vary like a node: per setting name (not "
                "a node's), its choices, each an `invoke` block."
            ),
        )
    )
    invoke: InvocationSpec | None = Field(
        default=None,
        description="What every invocation of the graph gets (context, configurable, "
        "recursionLimit, tags, metadata); a BatchTest, variant, setting or row adds to it.",
    )

    @model_validator(mode="after")
    def _relative_python_path(self) -> WorkflowSpec:
        # Absolute paths and `..` would name directories outside the workflow's code: on
        # another machine, or in the image, they would not be there (or be something else).
        for i, entry in enumerate(self.python_path or []):
            parts = PurePosixPath(entry.replace("\\", "/")).parts
            if not entry.strip() or entry.startswith(("/", "\\", "~")) or ":" in entry:
                raise ValueError(
                    f"pythonPath[{i}] {entry!r}: give a directory relative to the manifest's "
                    "directory (the image's working directory in a cluster run), like `src`"
                )
            if ".." in parts:
                raise ValueError(
                    f"pythonPath[{i}] {entry!r} leaves the manifest's directory (`..`); "
                    "keep the workflow's code beside or below the manifest"
                )
        return self

    @model_validator(mode="after")
    def _unique_variant_names(self) -> WorkflowSpec:
        for node, variants in self.variants.items():
            dupes = duplicates([v.name for v in variants])
            if dupes:
                raise ValueError(
                    f"variants.{node}: variant names must be unique; repeated: {', '.join(dupes)}"
                )
        for setting, choices in (self.settings or {}).items():
            if not re.match(IDENT_PATTERN, setting):
                raise ValueError(
                    f"settings.{setting}: a setting name is an identifier (letters, digits, "
                    "_ . -, not starting with a digit)"
                )
            if not choices:
                raise ValueError(f"settings.{setting} lists no choice; add at least one")
            if setting in self.variants:
                raise ValueError(
                    f"settings.{setting}: {setting!r} names a node with variants; a setting "
                    "and a node are both matrix axes, so name the setting otherwise"
                )
            declared = {n.name for n in self.graph.nodes}
            if setting in declared:
                raise ValueError(
                    f"settings.{setting}: {setting!r} names a node of the graph; a setting "
                    "and a node are both matrix axes, so name the setting otherwise"
                )
            dupes = duplicates([c.name for c in choices])
            if dupes:
                raise ValueError(
                    f"settings.{setting}: choice names must be unique; repeated: {', '.join(dupes)}"
                )
        return self

    def python_path_under(self, base: Path) -> tuple[str, ...]:
        """The `pythonPath` directories, resolved against `base` (the manifest's directory,
        or the image's working directory)."""
        return tuple(str(base / entry) for entry in self.python_path or [])

    def variant(self, node: str, name: str) -> VariantSpec | None:
        """The named variant of a node; None for `original`."""
        for v in self.variants.get(node, []):
            if v.name == name:
                return v
        return None

    def is_setting(self, axis: str) -> bool:
        """Whether a matrix axis is a named setting (not a node)."""
        return self.settings is not None and axis in self.settings

    def setting(self, axis: str, name: str) -> SettingSpec | None:
        """The named choice of a setting; None for `original` or an unknown name."""
        for choice in (self.settings or {}).get(axis, []):
            if choice.name == name:
                return choice
        return None

    def axis_invocation(self, axis: str, choice: str) -> InvocationSpec | None:
        """What choosing `choice` on matrix axis `axis` (a node or a setting) adds to the
        invocation; None for `original` or an unknown name."""
        if self.is_setting(axis):
            found = self.setting(axis, choice)
            return None if found is None else found.invoke
        variant = self.variant(axis, choice)
        return None if variant is None else variant.invoke


class NodeVariantsStatus(StatusModel):
    node: str
    variants: list[str]


class WorkflowStatus(StatusModel):
    phase: Literal["Pending", "Ready", "Invalid"] | None = None
    observed_generation: int | None = None
    nodes: list[NodeVariantsStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)


class Workflow(SpecModel):
    """A LangGraph graph in a container image, and the variants that may replace its nodes."""

    api_version: Literal["wtb.dev/v1alpha1"] = "wtb.dev/v1alpha1"
    kind: Literal["Workflow"] = "Workflow"
    metadata: ObjectMeta
    spec: WorkflowSpec
    status: WorkflowStatus | None = None
