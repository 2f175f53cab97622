"""What WTB keeps of a graph the user compiled, when it compiles it again with variants.

LangGraph compiles a `StateGraph` into a `CompiledStateGraph` whose instance attributes
are of three kinds, and WTB treats each kind differently:

- structure, derived from the builder (nodes, channels, edges' triggers, schemas):
  rebuilt from the builder copy with the variants swapped in;
- settings (name, interrupts, debug, stream transformers, the config of `with_config`,
  step timeout, retry and cache policies, stream mode): copied onto the new graph as
  they are;
- resources (checkpointer, store, cache): never shared with the cells. The store and the
  cache become per-attempt stand-ins, and a checkpointer WTB's own in-memory saver
  (`wtb.runtime.attempt`).

An attribute of none of these kinds (a newer LangGraph's) is refused, by name, if the
user's graph sets it differently from a plain `compile()`: WTB cannot tell whether it
would be kept. So are a `checkpointer=True` (it borrows a parent graph's saver, and the
graph WTB runs has no parent), a subclass of `CompiledStateGraph`, and nodes or channels
added to the compiled graph after it was compiled.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from wtb.errors import ManifestError
from wtb.runtime.attempt import GraphRuntime

if TYPE_CHECKING:
    from langgraph.graph import StateGraph
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.store.base import BaseStore

STRUCTURE = frozenset(
    {
        "builder",
        "nodes",
        "channels",
        "input_channels",
        "output_channels",
        "stream_channels",
        "trigger_to_nodes",
        "node_error_handler_map",
        "context_schema",
        "schema_to_mapper",
        "_output_mapper",
        "_state_mapper",
        "_serde_allowlist",
        "__orig_class__",
    }
)
SETTINGS = frozenset(
    {
        "name",
        "interrupt_before_nodes",
        "interrupt_after_nodes",
        "debug",
        "stream_transformers",
        "config",
        "step_timeout",
        "retry_policy",
        "cache_policy",
        "stream_mode",
        "stream_eager",
    }
)
RESOURCES = frozenset({"checkpointer", "store", "cache"})


@dataclass(frozen=True)
class CompileSettings:
    """How to compile a builder as the user compiled their graph."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    """Attributes of the user's compiled graph copied onto every graph WTB compiles."""
    store: BaseStore | None = None
    cache: bool = False
    checkpointer: bool | None = None
    """True: the user compiled a saver in; False: `checkpointer=False`; None: none."""

    @property
    def needs_saver(self) -> bool:
        """A saver in the user's graph, or interrupts (which need one to stop at)."""
        if self.checkpointer is not None:
            return self.checkpointer
        return bool(
            self.settings.get("interrupt_before_nodes")
            or self.settings.get("interrupt_after_nodes")
        )

    def compile(
        self, builder: StateGraph[Any], *, saver: bool = False
    ) -> tuple[CompiledStateGraph[Any], GraphRuntime]:
        """The compiled graph, and the resources its attempts get; with `saver`, WTB's
        checkpointer in any case (to resume interrupts)."""
        from langgraph.checkpoint.memory import InMemorySaver

        runtime = GraphRuntime(
            user_store=self.store,
            cache=self.cache,
            saver=InMemorySaver() if saver or self.needs_saver else None,
        )
        kwargs = runtime.compile_kwargs()
        if self.checkpointer is False and not saver:
            kwargs["checkpointer"] = False
        compiled = builder.compile(**kwargs)
        for name, value in self.settings.items():
            # Copied, not shared: the config's dicts and the interrupt lists are mutable.
            setattr(compiled, name, copy.copy(value))
        return compiled, runtime


def compile_settings(
    user: CompiledStateGraph[Any], bare: CompiledStateGraph[Any], *, where: str
) -> CompileSettings:
    """The settings of the user's compiled graph, read against `bare`, its builder compiled
    with no arguments; a ManifestError at `where` for what cannot be kept."""
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph

    if type(user) is not CompiledStateGraph:
        _refuse(
            f"the graph is a {type(user).__name__}, a subclass of CompiledStateGraph: "
            "WTB compiles the builder again and would lose what the subclass changes",
            where,
        )
    for part in ("nodes", "channels"):
        extra = sorted(set(getattr(user, part)) - set(getattr(bare, part)))
        if extra:
            _refuse(
                f"the compiled graph has {part} its builder does not ({', '.join(extra)}): "
                "they were added after compile() and WTB builds from the builder",
                where,
            )
    if user.checkpointer is True:
        _refuse(
            "the graph is compiled with checkpointer=True, which borrows a parent graph's "
            "saver; the graph WTB runs has no parent",
            where,
        )
    mine = vars(user)
    theirs = vars(bare)
    unknown = sorted(
        name
        for name in mine.keys() - STRUCTURE - SETTINGS - RESOURCES
        if name not in theirs or not _same(mine[name], theirs[name])
    )
    if unknown:
        _refuse(
            f"WTB does not know how to keep {', '.join(unknown)} of a compiled graph "
            "(set differently from a plain compile())",
            where,
        )
    saver = user.checkpointer
    return CompileSettings(
        settings={
            name: mine[name]
            for name in SETTINGS
            if name in mine and not (name in theirs and _same(mine[name], theirs[name]))
        },
        store=user.store,
        cache=user.cache is not None,
        checkpointer=(
            True if isinstance(saver, BaseCheckpointSaver) else (False if saver is False else None)
        ),
    )


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:  # an object whose == raises is not the default
        return False


def _refuse(message: str, where: str) -> NoReturn:
    raise ManifestError(
        message,
        where=where,
        fix="return the uncompiled StateGraph, or compile it with only what a production "
        "run needs (a saver, a store, a cache, interrupts, a name); WTB gives each cell "
        "its own checkpointer thread, store overlay and cache",
    )
