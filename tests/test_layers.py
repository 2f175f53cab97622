"""The layering of the code: the operator is thin over the engine, never the other way round,
and neither the operator nor its decisions (`wtb.kube`) import the modules that load user
code (direct imports; the operator calls no function of theirs)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "src" / "wtb"
OPERATOR = ROOT / "operator" / "wtb_operator"
# What imports and runs user code: the operator process must never call into these.
USER_CODE_LOADERS = {"wtb.importing", "wtb.graphs", "wtb.evaluators.user", "wtb.runners"}


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _offending(directory: Path, forbidden: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted(directory.rglob("*.py"))
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def test_the_engine_never_imports_the_operator() -> None:
    assert _offending(ENGINE, {"wtb_operator", "kopf"}) == []


def test_the_operator_and_its_decisions_do_not_load_user_code() -> None:
    assert _offending(OPERATOR, USER_CODE_LOADERS) == []
    assert _offending(ENGINE / "kube", USER_CODE_LOADERS) == []


def test_the_layer_check_sees_imports() -> None:
    """The checks above are not vacuous: they find imports that are there."""
    assert any(line.endswith("wtb.kube.semantics") for line in _offending(OPERATOR, {"wtb.kube"}))
    assert _offending(ENGINE, {"wtb.graphs"})
