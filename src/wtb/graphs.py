"""Build the user's LangGraph graph with chosen node variants swapped in.

The user's factory is never modified: each build calls it again (or copies the builder of a
compiled graph) and replaces node implementations on the copy, keeping every other property
of the node (input schema, retry and cache policies, destinations, metadata). A node inside a
subgraph node is replaced on a copy of the subgraph's builder, compiled again as it was. A
graph the user compiled is compiled again as they compiled it (`wtb.runtime.compiled`), with
the store, cache and checkpointer made per cell attempt (`wtb.runtime.attempt`).

A variant is whatever LangGraph's `add_node` takes; `as_node` refuses, before any cell
runs, what LangGraph would take and then fail to call.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypedDict

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


def _declared_builder(spec: WorkflowSpec, *, where: str) -> StateGraph[Any]:
    from langgraph.graph import StateGraph

    graph = spec.graph
    if graph.state is None:  # guaranteed by the model; keeps the type checker honest
        raise ManifestError("a declared graph needs `state`", where=f"{where}.state")
    state = import_object(graph.state, where=f"{where}.state")
    with _refused(f"{where}.state", "give a TypedDict or pydantic model"):
        builder: StateGraph[Any] = StateGraph(state)
    for i, node in enumerate(graph.nodes):
        fn = as_node(
            import_object(node.path, where=f"{where}.nodes[{i}].path"),
            repr(node.path),
            where=f"{where}.nodes[{i}].path",
            fix_hint="point at the node itself",
        )
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


def input_keys(builder: StateGraph[Any]) -> frozenset[str] | None:
    """The keys the graph's input schema has (LangGraph drops any other input key); None
    when its input is not a mapping of keys (a graph over a single root value)."""
    channels = builder.schemas.get(builder.input_schema)
    if not channels or "__root__" in channels:
        return None
    return frozenset(channels)


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
    spec: WorkflowSpec, node: str, variant: str, *, where: str, workflow_where: str = "Workflow"
) -> Any:
    """The node of a variant, as `add_node` takes it: what `path` names, or with
    `factory: true` what that factory returns (called with `config` as keyword arguments).

    Anything LangGraph runs as a node is accepted (a function, sync or async, with the
    parameters LangGraph injects; a Runnable such as a ToolNode or a compiled graph); what it
    could not call is refused here, before any cell runs, naming the variant's field (in
    the Workflow `workflow_where` names; `where` names the BatchTest's reference to it).
    """
    v = spec.variant(node, variant)
    if v is None:
        raise ManifestError(
            f"node {node!r} has no variant {variant!r}",
            where=where,
            fix=f"use `{ORIGINAL}` or one of: "
            + ", ".join(x.name for x in spec.variants.get(node, [])),
        )
    index = spec.variants[node].index(v)
    vwhere = f"{workflow_where}: spec.variants.{node}[{index}]"
    target = import_object(v.path, where=f"{vwhere}.path")
    if not v.factory:
        return as_node(
            target,
            f"variant {v.name!r}: {v.path!r}",
            where=f"{vwhere}.path",
            fix_hint="if it builds the node, set `factory: true` on the variant",
        )
    return as_node(
        _call_factory(v.name, v.path, target, v.config or {}, vwhere),
        f"variant {v.name!r}: what factory {v.path!r} returned",
        where=f"{vwhere}.factory",
        fix_hint="make the factory return the node (a function or a Runnable), "
        "or remove `factory: true` when `path` names the node itself",
    )


def _call_factory(
    name: str, path: str, factory: object, config: Mapping[str, Any], vwhere: str
) -> object:
    if not callable(factory):
        raise ManifestError(
            f"variant {name!r}: {path!r} is a {type(factory).__name__}, not a factory",
            where=f"{vwhere}.factory",
            fix="with `factory: true`, `path` names a function that returns the node; "
            "remove `factory: true` when `path` names the node itself",
        )
    try:
        inspect.signature(factory).bind(**config)
    except TypeError as exc:
        given = f"with config {dict(config)}" if config else "without arguments"
        raise ManifestError(
            f"variant {name!r}: factory {path!r} cannot be called {given}: {exc}",
            where=f"{vwhere}.config",
            fix="`config` holds the factory's keyword arguments: give exactly those it takes",
        ) from exc
    except ValueError:
        pass  # no signature to check (a builtin): the call itself tells
    try:
        return factory(**config)
    except Exception as exc:
        raise ManifestError(
            f"variant {name!r}: factory {path!r} raised {type(exc).__name__}: {exc}",
            where=f"{vwhere}.config" if config else f"{vwhere}.factory",
            fix="fix the factory, or the keyword arguments in `config`",
        ) from exc


class _ScratchState(TypedDict):
    value: Any


# The keyword parameters LangGraph passes a node function, when it recognizes them.
_INJECTED = ("config", "runtime", "store", "writer", "previous", "error")


def as_node(obj: object, label: str, *, where: str, fix_hint: str) -> Any:
    """`obj` when LangGraph can run it as a node, else a ManifestError at `where`.

    LangGraph's own `add_node` (on a scratch graph) decides what is a node, so whatever it
    accepts is accepted. It does not check that a function can be called the way it will
    be: with the state, plus the keyword arguments it recognizes (`config` annotated
    RunnableConfig or not annotated, `runtime`, `store`, `writer`, ...). A function that
    cannot (no parameter, another required one) would fail every cell; it is refused here.
    """
    from langchain_core.runnables import Runnable
    from langgraph.graph import StateGraph

    if isinstance(obj, StateGraph):
        raise ManifestError(
            f"{label} is an uncompiled StateGraph",
            where=where,
            fix="compile it (`builder.compile()`) to use it as a node",
        )
    if isinstance(obj, Runnable):
        return obj
    scratch: StateGraph[Any] = StateGraph(_ScratchState)
    try:
        scratch.add_node("node", obj)
    except (TypeError, ValueError) as exc:
        raise ManifestError(
            f"{label} is a {type(obj).__name__}, which LangGraph cannot run as a node: {exc}",
            where=where,
            fix="point at a function or a Runnable (a ToolNode, a compiled graph, a "
            f"RunnableLambda, ...); {fix_hint}",
        ) from exc
    runnable = scratch.nodes["node"].runnable
    accepts = getattr(runnable, "func_accepts", None)
    if accepts is None or not callable(obj):
        return obj  # not a plain function node (a generator, a dict of Runnables, ...)
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return obj  # no signature to check
    try:
        signature.bind(None, **dict.fromkeys(accepts))
    except TypeError as exc:
        passed = " and ".join(["the state", *(f"`{k}`" for k in accepts)])
        missing = [
            p.name
            for p in signature.parameters.values()
            if p.name in _INJECTED and p.name not in accepts and p.default is p.empty
        ]
        fix = (
            f"annotate `{missing[0]}` as LangGraph expects (`config: RunnableConfig`, or no "
            "annotation; see LangGraph's add_node), or give it a default"
            if missing
            else "a node takes the state as its one required parameter (plus, optionally, "
            f"`config: RunnableConfig`, `runtime`, `store`, `writer`); {fix_hint}"
        )
        raise ManifestError(
            f"{label} cannot be called as a node, with {passed} as LangGraph calls it: {exc}",
            where=where,
            fix=fix,
        ) from exc
    return obj


SUBGRAPH_SEP = "/"
"""Separates a subgraph node from a node inside it in a node path: `research/search`."""


_DEFAULT_HANDLER = "__default_error_handler__"
"""The node LangGraph adds to a builder when it compiles it with a default error handler
(`set_node_defaults(error_handler=...)`); compiling again adds it again, and refuses to when
it is already there."""


def _subgraph(runnable: object) -> CompiledStateGraph[Any] | None:
    """The compiled StateGraph a node runs, when the node is one (added with `add_node`)."""
    from langgraph.graph.state import CompiledStateGraph

    return runnable if isinstance(runnable, CompiledStateGraph) else None


def node_paths(builder: StateGraph[Any]) -> list[str]:
    """Every node a variant can replace: the graph's nodes and, for each node that is a
    compiled StateGraph, the nodes inside it as `parent/child` (at any depth).

    A subgraph that a node's own code invokes is not reachable: only LangGraph's node
    table is walked, never a function's body.
    """
    paths: list[str] = []
    for name in graph_nodes(builder):
        if name == _DEFAULT_HANDLER:
            continue
        paths.append(name)
        sub = _subgraph(builder.nodes[name].runnable)
        if sub is not None:
            paths += [f"{name}{SUBGRAPH_SEP}{p}" for p in node_paths(sub.builder)]
    return paths


def check_node_path(
    path: str, known: list[str], *, field: str, graph: str = "the graph", where: str
) -> None:
    """A ManifestError at `where` unless `path` is one of the `known` node paths (see
    `node_paths`), suggesting the closest ones."""
    if path in known:
        return
    close = difflib.get_close_matches(path, known, n=3)
    # The deepest known node the path goes into: is it a node nothing can be reached in?
    parents = [k for k in known if path.startswith(k + SUBGRAPH_SEP)]
    parent = max(parents, key=len, default=None)
    reason = (
        f"; node {parent!r} is not a compiled StateGraph added with add_node, so nothing "
        "inside it can be replaced (a graph a node's code invokes is not reachable)"
        if parent is not None and not any(k.startswith(parent + SUBGRAPH_SEP) for k in known)
        else ""
    )
    raise ManifestError(
        f"{field} names node {path!r}, which {graph} does not have{reason}",
        where=where,
        fix=(f"did you mean {' or '.join(repr(c) for c in close)}? " if close else "")
        + f"the nodes are: {', '.join(known)}",
    )


def swap_nodes(builder: StateGraph[Any], replacements: Mapping[str, Any]) -> None:
    """Replace nodes in place on a builder copy made by `load_builder`.

    A key is a node name or a `parent/child` path into a subgraph node (see `node_paths`):
    the subgraph is rebuilt from a copy of its builder with the child replaced, compiled
    with the arguments it was compiled with, and put back as the parent node. A parent
    that is itself replaced (by a subgraph variant) is replaced first, then its children.
    """
    nested: dict[str, dict[str, Any]] = {}
    for path, node in replacements.items():
        if path in builder.nodes:
            _replace(builder, path, node)
        else:
            parent, _, child = path.partition(SUBGRAPH_SEP)
            nested.setdefault(parent, {})[child] = node
    for parent, children in nested.items():
        old = builder.nodes[parent]
        sub = _subgraph(old.runnable)
        if sub is None:  # prepare refuses such a path before anything runs
            raise KeyError(f"node {parent!r} is not a compiled StateGraph")
        sub_builder = _copy_builder(sub.builder)
        swap_nodes(sub_builder, children)
        builder.nodes[parent] = dataclasses.replace(old, runnable=_compile_like(sub, sub_builder))


def _replace(builder: StateGraph[Any], name: str, node: Any) -> None:
    from langgraph.graph import StateGraph

    old = builder.nodes[name]
    # A scratch graph turns the node into a node runnable exactly as add_node does (sync or
    # async function, Runnable); everything else about the node is kept from the original.
    scratch: StateGraph[Any] = StateGraph(builder.state_schema)
    scratch.add_node(name, node, input_schema=old.input_schema)
    builder.nodes[name] = dataclasses.replace(old, runnable=scratch.nodes[name].runnable)


def _copy_builder(builder: StateGraph[Any]) -> StateGraph[Any]:
    """A copy whose node table can change without touching the user's builder, without the
    nodes LangGraph added when the builder was compiled (it adds them again)."""
    copied = copy.copy(builder)
    copied.nodes = {
        name: spec
        for name, spec in builder.nodes.items()
        if not (name == _DEFAULT_HANDLER and getattr(spec, "is_error_handler", False))
    }
    return copied


# Settings of a compiled graph that `compile` does not take (`with_config`, attributes set
# after compiling): carried over to the recompiled subgraph as they are.
_CARRIED = ("config", "step_timeout", "retry_policy", "cache_policy")


def _compile_like(
    compiled: CompiledStateGraph[Any], builder: StateGraph[Any]
) -> CompiledStateGraph[Any]:
    """Compile `builder` with the arguments `compiled` was compiled with."""
    recompiled = builder.compile(
        checkpointer=compiled.checkpointer,
        cache=compiled.cache,
        store=compiled.store,
        interrupt_before=_interrupts(compiled.interrupt_before_nodes),
        interrupt_after=_interrupts(compiled.interrupt_after_nodes),
        debug=compiled.debug,
        name=compiled.name,
        transformers=compiled.stream_transformers or None,
    )
    for attr in _CARRIED:
        setattr(recompiled, attr, getattr(compiled, attr))
    return recompiled


def _interrupts(nodes: str | Sequence[str]) -> Any:
    """A compiled graph's interrupt nodes as `compile` takes them: "*" (all) or a list."""
    return nodes if isinstance(nodes, str) else list(nodes) or None


def _plain_sync(runnable: object) -> bool:
    is_callable_node = type(runnable).__name__ == "RunnableCallable"
    return is_callable_node and getattr(runnable, "func", None) is not None


def _sync_node(runnable: object) -> bool:
    """A plain sync function, or a compiled subgraph of them with no checkpointer, store or
    cache object of its own (which might be async-only)."""
    if _plain_sync(runnable):
        return True
    sub = _subgraph(runnable)
    return (
        sub is not None
        and sub.checkpointer in (None, True, False)
        and sub.store is None
        and sub.cache is None
        and is_sync_graph(sub.builder)
    )


def is_sync_graph(builder: StateGraph[Any]) -> bool:
    """True when every node and router is a plain sync function, or a subgraph of them:
    then `invoke` in a thread.

    Graphs with any async node or router, or any other Runnable (a ToolNode, whose tools
    may be async-only; a RunnableLambda; a model), run with `ainvoke`.
    """
    nodes = (builder.nodes[name].runnable for name in graph_nodes(builder))
    routers = (spec.path for branches in builder.branches.values() for spec in branches.values())
    return all(_sync_node(r) for r in nodes) and all(_plain_sync(r) for r in routers)


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
    out here, so combinations that differ only in settings share one graph.

    With `fresh()` a graph is built anew on every call instead (BatchTest `isolation: cell`):
    the graph factory and the variants' factories run again, so no node object is shared
    with another cell attempt."""

    def __init__(self, spec: WorkflowSpec, *, saver: bool = False) -> None:
        """`saver`: give every graph WTB's checkpointer, whatever the user compiled (cases
        that resume interrupts need one; an interrupt() in a node cannot be seen
        statically)."""
        self._spec = spec
        self._saver = saver
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

    def fresh(
        self, combination: tuple[tuple[str, str], ...]
    ) -> tuple[CompiledStateGraph[Any], GraphRuntime]:
        """A graph for a combination built now, shared with nobody (not cached), and the
        runtime its invocations run in."""
        graph, _, runtime = self._compile(self._nodes_of(combination))
        return graph, runtime

    def _nodes_of(self, combination: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        if self._spec.settings:
            return tuple(p for p in combination if not self._spec.is_setting(p[0]))
        return combination

    def _build(
        self, combination: tuple[tuple[str, str], ...]
    ) -> tuple[CompiledStateGraph[Any], bool, GraphRuntime]:
        combination = self._nodes_of(combination)
        found = self._compiled.get(combination)
        if found is None:
            found = self._compile(combination)
            self._compiled[combination] = found
        return found

    def _compile(
        self, combination: tuple[tuple[str, str], ...]
    ) -> tuple[CompiledStateGraph[Any], bool, GraphRuntime]:
        builder, settings = load_graph(self._spec)
        swap_nodes(
            builder,
            {
                node: resolve_variant(self._spec, node, variant, where=f"matrix.{node}")
                for node, variant in combination
                if variant != ORIGINAL
            },
        )
        graph, runtime = settings.compile(builder, saver=self._saver)
        return graph, is_sync_graph(builder), runtime
