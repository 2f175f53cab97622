"""Fingerprints: content hashes of everything that determines a cell's result.

A code fingerprint hashes the source of the code a combination runs: the module of the
graph (its factory, or a declared graph's state, nodes and routers) and the module of each
variant in the combination (the `fixed` ones too), each with the local modules it imports,
transitively. Imports are read statically (`ast`, every `import` in the file, functions'
included) and followed only to modules that are loaded already and live in the user's
project: in the same top-level package as a root module (wherever it is installed), or
under the run's python path or the directory a root module was imported from. Other
installed packages (site- or dist-packages) and the standard library are never followed.
Files are hashed by their bytes under their module names, never their paths, so the
fingerprint is the same in every process and on every machine that has the same code.

A cell's fingerprint adds what the cell is run with: the variants' and settings' specs
(path, factory, config, invoke), the `fixed` nodes, the Workflow's and the BatchTest's
`invoke`, the BatchTest's `isolation`, the graph's spec, the case (id, inputs, invoke,
resume; not `expected`, which only scoring reads) and the repeat (through the cell key).
Limits (timeouts, retries, concurrency, Ray) and evaluators are not part of it.
docs/reruns.md tells the rules.

Nothing here runs user code: modules are read from `sys.modules`, and `import_roots`
imports only the modules `prepare` imports (the graph's and the variants').
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from wtb._hashing import content_hash
from wtb.api.batchtest import BatchTestSpec
from wtb.api.workflow import ORIGINAL, WorkflowSpec
from wtb.domain import Case, Cell, Combination
from wtb.errors import ManifestError

_INSTALLED = ("site-packages", "dist-packages")


def _module_of(path: str) -> str:
    return path.partition(":")[0]


def graph_modules(spec: WorkflowSpec) -> list[str]:
    """The modules the graph is built from: its factory's, or a declared graph's state,
    nodes and routers."""
    graph = spec.graph
    if graph.factory is not None:
        return [_module_of(graph.factory)]
    paths = [graph.state or "", *(n.path for n in graph.nodes)]
    paths += [e.router for e in graph.edges if e.router]
    return sorted({_module_of(p) for p in paths if p})


def import_roots(spec: WorkflowSpec, batch: BatchTestSpec) -> None:
    """Import the graph's and the used variants' modules (those `prepare` imports), for a
    process that fingerprints a run it did not prepare (the batch driver)."""
    modules = set(graph_modules(spec))
    for node, variant in _used_variants(spec, batch):
        v = spec.variant(node, variant)
        if v is not None:
            modules.add(_module_of(v.path))
    modules.update(evaluator_modules(batch))
    for name in sorted(modules):
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ManifestError(
                f"cannot import {name!r} to fingerprint the run's code: "
                f"{type(exc).__name__}: {exc}",
                where="spec.graph",
                fix="run the driver where the workflow's code is importable",
            ) from exc


def evaluator_modules(batch: BatchTestSpec) -> list[str]:
    """The modules of the BatchTest's `python` evaluators."""
    return sorted({_module_of(e.path) for e in batch.evaluators if e.path})


def _used_variants(spec: WorkflowSpec, batch: BatchTestSpec) -> list[tuple[str, str]]:
    used = [
        (node, variant)
        for node, variants in batch.matrix.items()
        if not spec.is_setting(node)
        for variant in variants
        if variant != ORIGINAL
    ]
    return sorted({*used, *(batch.fixed or {}).items()})


def _installed_dirs() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(Path(d).resolve() for d in dirs)


def _is_installed(path: Path, installed: Sequence[Path]) -> bool:
    if any(part in _INSTALLED for part in path.parts):
        return True
    return any(path.is_relative_to(d) for d in installed)


def _module_file(module: ModuleType) -> Path | None:
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) or getattr(module, "__file__", None)
    if not origin or origin in ("built-in", "frozen"):
        return None
    path = Path(origin)
    return path.resolve() if path.is_file() else None


@dataclass
class CodeIndex:
    """Module fingerprints of one process's loaded code, each computed once."""

    python_path: Sequence[str]
    roots: Sequence[str]
    """The root modules (graph, variants): their top-level packages and the directories
    they were imported from belong to the project."""
    _project_dirs: tuple[Path, ...] = field(init=False)
    _packages: frozenset[str] = field(init=False)
    _installed: tuple[Path, ...] = field(init=False)
    _local: dict[str, bool] = field(default_factory=dict, init=False)
    _files: dict[str, str] = field(default_factory=dict, init=False)
    _imports: dict[str, list[str]] = field(default_factory=dict, init=False)
    _closures: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._installed = _installed_dirs()
        dirs = [Path(p).resolve() for p in self.python_path if p]
        for root in self.roots:
            module = sys.modules.get(root)
            file = None if module is None else _module_file(module)
            if file is None:
                continue
            depth = root.count(".") + (1 if file.name == "__init__.py" else 0)
            dirs.append(file.parents[depth])
        self._project_dirs = tuple(d for d in dirs if not _is_installed(d, self._installed))
        self._packages = frozenset(r.split(".")[0] for r in self.roots)

    def is_local(self, name: str) -> bool:
        found = self._local.get(name)
        if found is None:
            found = self._decide_local(name)
            self._local[name] = found
        return found

    def _decide_local(self, name: str) -> bool:
        module = sys.modules.get(name)
        if module is None:
            return False
        if name.split(".", maxsplit=1)[0] in self._packages:
            # The package of the graph or a variant is the user's, wherever it is
            # installed (an image may pip-install the workflow into site-packages).
            return True
        file = _module_file(module)
        paths = (
            [file]
            if file is not None
            else [Path(p).resolve() for p in getattr(module, "__path__", [])]
        )
        return bool(paths) and all(
            not _is_installed(p, self._installed)
            and any(p.is_relative_to(d) for d in self._project_dirs)
            for p in paths
        )

    def _file_hash(self, name: str) -> str:
        found = self._files.get(name)
        if found is None:
            file = _module_file(sys.modules[name])
            found = "namespace" if file is None else hashlib.sha256(file.read_bytes()).hexdigest()
            self._files[name] = found
        return found

    def _direct_imports(self, name: str) -> list[str]:
        found = self._imports.get(name)
        if found is None:
            found = sorted(m for m in self._imported_names(name) if self.is_local(m))
            self._imports[name] = found
        return found

    def _imported_names(self, name: str) -> set[str]:
        module = sys.modules[name]
        names = _parents(name)
        file = _module_file(module)
        if file is None or file.suffix != ".py":
            return names
        try:
            tree = ast.parse(file.read_bytes(), filename=name)
        except (SyntaxError, ValueError):
            return names
        is_package = file.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    names |= _parents(alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node.module, node.level, package)
                if base is None:
                    continue
                names |= _parents(base)
                names |= {f"{base}.{a.name}" for a in node.names if a.name != "*"}
        names.discard(name)
        return names

    def closure(self, roots: Iterable[str]) -> list[str]:
        """The local modules `roots` are and import, transitively, sorted."""
        seen: set[str] = set()
        todo = [r for r in roots if self.is_local(r)]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(m for m in self._direct_imports(name) if m not in seen)
        return sorted(seen)

    def fingerprint(self, roots: Iterable[str]) -> str:
        """Content hash of the source of `roots` and the local modules they import. A root
        that is not loaded, or not local (an installed package), counts by its name."""
        roots = sorted(set(roots))
        key = "\n".join(roots)
        found = self._closures.get(key)
        if found is None:
            modules = self.closure(roots)
            found = content_hash(
                {
                    "roots": roots,
                    "modules": {m: self._file_hash(m) for m in modules},
                }
            )
            self._closures[key] = found
        return found


def _parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


def _absolute(module: str | None, level: int, package: str) -> str | None:
    if level == 0:
        return module
    base = package.split(".") if package else []
    if level - 1 > len(base):
        return None
    base = base[: len(base) - (level - 1)]
    if module:
        base.append(module)
    return ".".join(base) or None


def _variant_spec(spec: WorkflowSpec, node: str, variant: str) -> Any:
    if spec.is_setting(node):
        choice = spec.setting(node, variant)
        return (
            None
            if choice is None
            else choice.invoke.model_dump(mode="json", by_alias=True, exclude_none=True)
        )
    v = spec.variant(node, variant)
    if v is None:
        return None
    return v.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"description"})


def _case_content(case: Case) -> dict[str, Any]:
    return {
        "id": case.id,
        "inputs": case.inputs,
        "invoke": case.invoke,
        "resume": None if case.resume is None else list(case.resume),
    }


class Fingerprinter:
    """The code fingerprint of a run and the fingerprint of each of its cells. Built after
    `prepare` (or `import_roots`) loaded the workflow's modules."""

    def __init__(
        self,
        workflow: WorkflowSpec,
        batch: BatchTestSpec,
        cases: Sequence[Case],
        python_path: Sequence[str] = (),
    ) -> None:
        self._workflow = workflow
        self._batch = batch
        self._cases = {c.id: c for c in cases}
        self._graph_roots = graph_modules(workflow)
        used = _used_variants(workflow, batch)
        self._variant_roots: dict[tuple[str, str], list[str]] = {}
        for node, variant in used:
            v = workflow.variant(node, variant)
            if v is not None:
                self._variant_roots[(node, variant)] = [_module_of(v.path)]
        evaluators = evaluator_modules(batch)
        roots = {
            *self._graph_roots,
            *(m for ms in self._variant_roots.values() for m in ms),
            *evaluators,
        }
        self._index = CodeIndex(python_path, sorted(roots))
        self.evaluators = self._index.fingerprint(evaluators) if evaluators else ""
        """The fingerprint of the `python` evaluators' code (empty without any): not part
        of a cell's identity, but of how its result was scored."""
        self._graph = self._index.fingerprint(self._graph_roots)
        self._variants = {
            f"{node}={variant}": self._index.fingerprint(roots)
            for (node, variant), roots in sorted(self._variant_roots.items())
        }
        self.code = content_hash({"graph": self._graph, "variants": self._variants})
        """The run's code fingerprint: the graph's and every variant's it uses."""
        self._shared = content_hash(
            {
                "graph": workflow.graph.model_dump(mode="json", by_alias=True, exclude_none=True),
                "workflowInvoke": _dump(workflow.invoke),
                "batchInvoke": _dump(batch.invoke),
                "isolation": batch.isolation or "shared",
                "fixed": {
                    node: [_variant_spec(workflow, node, v), self._variants.get(f"{node}={v}")]
                    for node, v in sorted((batch.fixed or {}).items())
                },
            }
        )
        self._combos: dict[Combination, str] = {}
        self._case_digests: dict[str, str] = {}

    def combination_code(self, combination: Combination) -> str:
        """The code fingerprint of one combination: the graph's and its variants'."""
        return content_hash(
            {
                "graph": self._graph,
                "variants": {
                    f"{n}={v}": self._variants.get(f"{n}={v}")
                    for n, v in sorted([*combination, *(self._batch.fixed or {}).items()])
                    if v != ORIGINAL and not self._workflow.is_setting(n)
                },
            }
        )

    def _combination(self, combination: Combination) -> str:
        found = self._combos.get(combination)
        if found is None:
            found = content_hash(
                {
                    "code": self.combination_code(combination),
                    "shared": self._shared,
                    "axes": [
                        [node, choice, _variant_spec(self._workflow, node, choice)]
                        for node, choice in combination
                    ],
                }
            )
            self._combos[combination] = found
        return found

    def _case(self, case_id: str) -> str:
        found = self._case_digests.get(case_id)
        if found is None:
            found = content_hash(_case_content(self._cases[case_id]))
            self._case_digests[case_id] = found
        return found

    def cell(self, cell: Cell) -> str:
        """The cell's fingerprint: equal fingerprints may share a result."""
        return content_hash(
            [self._combination(cell.combination), self._case(cell.case_id), cell.repeat, cell.key]
        )

    def cells(self, cells: Iterable[Cell]) -> dict[str, str]:
        """Cell key -> fingerprint."""
        return {c.key: self.cell(c) for c in cells}


def _dump(value: Any) -> Any:
    return (
        None if value is None else value.model_dump(mode="json", by_alias=True, exclude_none=True)
    )


def scoring_digest(batch: BatchTestSpec, evaluator_code: str) -> str:
    """What a cell's metrics were computed with, besides its case's `expected`: the
    evaluators' specs and the code of the `python` ones."""
    return content_hash(
        {
            "evaluators": [
                e.model_dump(mode="json", by_alias=True, exclude_none=True)
                for e in batch.evaluators
            ],
            "code": evaluator_code,
        }
    )


def expected_digest(expected: Mapping[str, Any] | None) -> str:
    return content_hash(expected or {})
