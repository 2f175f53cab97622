"""YAML for untrusted text: PyYAML's safe loader with bounds on what one document may cost.

A document nested deeper than `MAX_DEPTH` levels (PyYAML composes recursively, and so do
pydantic and the JSON encoder after it) or whose aliases expand to more than
`MAX_ALIAS_EXPANSION` nodes (the "billion laughs": a few lines that stand for billions of
values once a consumer walks them) or that refers to itself is refused with a
`YamlLimitError` naming the line, before anything is built from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import yaml

MAX_DEPTH = 100
"""Deepest nesting of lists and mappings a manifest, a data set or one case may have."""

MAX_ALIAS_EXPANSION = 100_000
"""Nodes that aliases (`*name`) may add to a document once expanded."""


class YamlLimitError(ValueError):
    """A YAML document over one of the bounds: `problem`, and the 1-based `line`."""

    def __init__(self, problem: str, line: int | None) -> None:
        self.problem = problem
        self.line = line
        super().__init__(f"{problem} (line {line})" if line else problem)

    @property
    def at(self) -> str:
        """ ", line N" or ""."""
        return f", line {self.line}" if self.line else ""


def _line(node: yaml.Node | None) -> int | None:
    mark = getattr(node, "start_mark", None)
    return mark.line + 1 if mark is not None else None


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing nesting deeper than MAX_DEPTH while it composes (before
    Python's own recursion limit is reached)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise YamlLimitError(
                    f"nested more than {MAX_DEPTH} levels deep", event.start_mark.line + 1
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand to more than MAX_ALIAS_EXPANSION nodes beyond
    the nodes written, or that contains itself (`&a [*a]`)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise YamlLimitError("an alias refers to the node that contains it", _line(node))
        open_nodes.add(key)
        total = 1
        value = node.value
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in value)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    expanded = size(root)  # depth is bounded by MAX_DEPTH: recursion is safe
    written = len(sizes)
    if expanded - written > MAX_ALIAS_EXPANSION:
        raise YamlLimitError(
            f"its aliases expand to {expanded - written} more values, more than "
            f"{MAX_ALIAS_EXPANSION}",
            _line(root),
        )


def load_all(text: str) -> Iterator[Any]:
    """Every document of `text`, as `yaml.safe_load_all` gives them, within the bounds.

    Raises yaml.YAMLError for bad syntax, YamlLimitError for a document over a bound.
    """
    loader = _BoundedLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _check_expansion(node)
            yield loader.construct_document(node)
    except RecursionError:
        raise YamlLimitError(f"nested more than {MAX_DEPTH} levels deep", None) from None
    finally:
        loader.dispose()


def load_one(text: str) -> tuple[Any, yaml.Node | None]:
    """The single document of `text` and its composed node (for line numbers)."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expansion(node)
        return loader.construct_document(node), node
    except RecursionError:
        raise YamlLimitError(f"nested more than {MAX_DEPTH} levels deep", None) from None
    finally:
        loader.dispose()


def non_finite(value: Any, path: str = "") -> str | None:
    """The path (`spec.timeoutSeconds`, `spec.cases[2].inputs.x`) of the first infinite or
    NaN number in plain data, or None. Depth is bounded by the loader."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path or "(document)"
    if isinstance(value, dict):
        for key, item in value.items():
            found = non_finite(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = non_finite(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether plain data (a parsed JSON row) nests deeper than `limit`, checked without
    recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False
