"""Build the user's LangGraph graph with chosen node variants swapped in.

The user's factory is never modified: each build calls it again (or copies the builder of a
compiled graph) and replaces node implementations on the copy, keeping every other property
of the node (input schema, retry and cache policies, destinations, metadata). A graph the
user compiled is compiled again as they compiled it (`wtb.runtime.compiled`), with the
store, cache and checkpointer made per cell attempt (`wtb.runtime.attempt`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter

from wtb.api.workflow import END, ORIGINAL, START, WorkflowSpec
from wtb.errors import ManifestError
from wtb.importing import import_object
from wtb.runtime.attempt import GraphRuntime
from wtb.runtime.compiled import CompileSettings, compile_settings

if TYPE_CHECKING:
    from langgraph.graph import StateGraph
    from langgraph.graph.state import CompiledStateGraph

GRAPH_WHERE = "spec.graph"


def load_builder(spec: WorkflowSpec, *, where: str = GRAPH_WHERE) -> StateGraph[Any]:
    """A fresh, uncompiled StateGraph for the workflow (the user's object is not touched).

    A ManifestError when the user's compiled graph has settings WTB cannot keep."""
    return load_graph(spec, where=where)[0]


def load_graph(
    spec: WorkflowSpec, *, where: str = GRAPH_WHERE
) -> tuple[StateGraph[Any], CompileSettings]:
    """A fresh, uncompiled StateGraph for the workflow, and how the user compiled it
    (nothing special for a builder or a declared graph)."""
    from langgraph.graph import StateGraph
    from langgraph.graph.state import CompiledStateGraph

    graph = spec.graph
    if graph.factory is None:
        return _declared_builder(spec, where=where), CompileSettings()
    obj = import_object(graph.factory, where=f"{where}.factory")
    if callable(obj) and not isinstance(obj, StateGraph | CompiledStateGraph):
        try:
            obj = obj()
        except Exception as exc:
            raise ManifestError(
                f"graph factory {graph.factory!r} raised {type(exc).__name__}: {exc}",
                where=f"{where}.factory",
                fix="the factory is called with no arguments and must return a StateGraph",
            ) from exc
    settings = CompileSettings()
    if isinstance(obj, CompiledStateGraph):
        with _refused(f"{where}.factory", "fix the graph the factory builds"):
            bare = _copy_builder(obj.builder).compile()
        settings = compile_settings(obj, bare, where=f"{where}.factory")
        obj = obj.builder
    if not isinstance(obj, StateGraph):
        raise ManifestError(
            f"graph factory {graph.factory!r} gave a {type(obj).__name__}, not a LangGraph graph",
            where=f"{where}.factory",
            fix="return a langgraph StateGraph (uncompiled builder) or a compiled graph",
        )
    return _copy_builder(obj), settings


def _copy_builder(builder: StateGraph[Any]) -> StateGraph[Any]:
    """A copy whose nodes can be replaced without touching the original's."""
    copied = copy.copy(builder)
    copied.nodes = dict(builder.nodes)
    return copied


def _declared_builder(spec: WorkflowSpec, *, where: str) -> StateGraph[Any]:
    from langgraph.graph import StateGraph

    graph = spec.graph
    if graph.state is None:  # guaranteed by the model; keeps the type checker honest
        raise ManifestError("a declared graph needs `state`", where=f"{where}.state")
    state = import_object(graph.state, where=f"{where}.state")
    with _refused(f"{where}.state", "give a TypedDict or pydantic model"):
        builder: StateGraph[Any] = StateGraph(state)
    for i, node in enumerate(graph.nodes):
        fn = import_object(node.path, where=f"{where}.nodes[{i}].path")
        _require_callable(fn, node.path, f"{where}.nodes[{i}].path")
        with _refused(f"{where}.nodes[{i}]", "fix the node"):
            builder.add_node(node.name, fn)
    for i, edge in enumerate(graph.edges):
        with _refused(f"{where}.edges[{i}]", "fix the edge"):
            if edge.router is None:
                builder.add_edge(edge.source, edge.to[0])
                continue
            router = import_object(edge.router, where=f"{where}.edges[{i}].router")
            _require_callable(router, edge.router, f"{where}.edges[{i}].router")
            builder.add_conditional_edges(edge.source, router, {t: t for t in edge.to})
    return builder


@contextmanager
def _refused(where: str, fix: str) -> Iterator[None]:
    """LangGraph's own refusals (ValueError, TypeError) as a ManifestError at `where`."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise ManifestError(f"LangGraph refuses it: {exc}", where=where, fix=fix) from exc


def check_compiles(builder: StateGraph[Any], *, where: str) -> None:
    """Compile once, so a broken graph (an edge to a missing node, a node with no way
    out) is refused before any cell runs."""
    with _refused(where, "fix the graph the factory builds (or the declared edges)"):
        builder.compile()


def _require_callable(obj: object, path: str, where: str) -> None:
    if not callable(obj):
        raise ManifestError(
            f"{path!r} is a {type(obj).__name__}, not a callable",
            where=where,
            fix="point at a function (or a callable object)",
        )


def graph_nodes(builder: StateGraph[Any]) -> list[str]:
    """The graph's node names in insertion order, without LangGraph's START/END."""
    return [n for n in builder.nodes if n not in (START, END)]


def resolve_variant(
    spec: WorkflowSpec, node: str, variant: str, *, where: str
) -> Callable[..., Any]:
    """The node callable of a variant: the import path, or what its factory returns for `config`."""
    v = spec.variant(node, variant)
    if v is None:
        raise ManifestError(
            f"node {node!r} has no variant {variant!r}",
            where=where,
            fix=f"use `{ORIGINAL}` or one of: "
            + ", ".join(x.name for x in spec.variants.get(node, [])),
        )
    index = spec.variants[node].index(v)
    vwhere = f"Workflow spec.variants.{node}[{index}]"
    target = import_object(v.path, where=f"{vwhere}.path")
    _require_callable(target, v.path, f"{vwhere}.path")
    if v.config is None:
        return target  # type: ignore[no-any-return]
    try:
        made = target(**v.config)
    except TypeError as exc:
        raise ManifestError(
            f"variant {v.name!r}: calling {v.path!r} with config {v.config} failed: {exc}",
            where=f"{vwhere}.config",
            fix="with `config`, `path` names a factory taking those keyword arguments and "
            "returning the node callable",
        ) from exc
    _require_callable(made, f"{v.path}(**config)", f"{vwhere}.config")
    return made  # type: ignore[no-any-return]


def swap_nodes(builder: StateGraph[Any], replacements: Mapping[str, Callable[..., Any]]) -> None:
    """Replace node implementations in place on a builder copy made by `load_builder`."""
    from langgraph.graph import StateGraph

    for name, fn in replacements.items():
        old = builder.nodes[name]
        # A scratch graph turns the callable into a node runnable exactly as add_node does,
        # sync or async; everything else about the node is kept from the original.
        scratch: StateGraph[Any] = StateGraph(builder.state_schema)
        scratch.add_node(name, fn, input_schema=old.input_schema)
        builder.nodes[name] = dataclasses.replace(old, runnable=scratch.nodes[name].runnable)


def _plain_sync(runnable: object) -> bool:
    is_callable_node = type(runnable).__name__ == "RunnableCallable"
    return is_callable_node and getattr(runnable, "func", None) is not None


def is_sync_graph(builder: StateGraph[Any]) -> bool:
    """True when every node and router is a plain sync function: then `invoke` in a thread.

    Graphs with any async node or router (or any other Runnable, e.g. a subgraph) run
    with `ainvoke`.
    """
    nodes = (builder.nodes[name].runnable for name in graph_nodes(builder))
    routers = (spec.path for branches in builder.branches.values() for spec in branches.values())
    return all(_plain_sync(r) for r in nodes) and all(_plain_sync(r) for r in routers)


def check_context(
    builder: StateGraph[Any], context: Mapping[str, Any] | None, *, where: str, fix: str
) -> None:
    """Refuse a context the graph's `context_schema` does not accept, as LangGraph would take
    it (a dataclass or pydantic model is built from the dict; a TypedDict is checked by
    pydantic). No schema: anything goes."""
    schema = builder.context_schema
    if schema is None:
        return
    given = dict(context or {})
    try:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            schema.model_validate(given)
        elif isinstance(schema, type) and dataclasses.is_dataclass(schema):
            schema(**given)
        else:
            TypeAdapter(schema).validate_python(given)
    except Exception as exc:
        name = getattr(schema, "__name__", repr(schema))
        raise ManifestError(
            f"the context does not fit the graph's context_schema {name}: "
            f"{type(exc).__name__}: {exc}",
            where=where,
            fix=fix,
        ) from exc


class VariantGraphs:
    """Compiled graphs per variant combination, built once each (per process). Setting axes
    of a combination change what the graph is invoked with, not the graph: they are left
    out here, so combinations that differ only in settings share one graph."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self._spec = spec
        self._compiled: dict[
            tuple[tuple[str, str], ...], tuple[CompiledStateGraph[Any], bool, GraphRuntime]
        ] = {}

    def get(self, combination: tuple[tuple[str, str], ...]) -> tuple[CompiledStateGraph[Any], bool]:
        """The compiled graph for a combination and whether it is sync-only."""
        graph, sync, _ = self._build(combination)
        return graph, sync

    def runtime(self, combination: tuple[tuple[str, str], ...]) -> GraphRuntime:
        """What each invocation of the combination's graph must run in: its attempt's
        store overlay and cache, and whether it needs a checkpointer thread."""
        return self._build(combination)[2]

    def _build(
        self, combination: tuple[tuple[str, str], ...]
    ) -> tuple[CompiledStateGraph[Any], bool, GraphRuntime]:
        if self._spec.settings:
            combination = tuple(p for p in combination if not self._spec.is_setting(p[0]))
        found = self._compiled.get(combination)
        if found is None:
            builder, settings = load_graph(self._spec)
            swap_nodes(
                builder,
                {
                    node: resolve_variant(self._spec, node, variant, where=f"matrix.{node}")
                    for node, variant in combination
                    if variant != ORIGINAL
                },
            )
            graph, runtime = settings.compile(builder)
            found = (graph, is_sync_graph(builder), runtime)
            self._compiled[combination] = found
        return found
