"""The structure holds: the layers of `pyproject.toml` are checked transitively by
import-linter (a chain of imports counts, not only a direct one), and every module of the
engine and the operator imports alone, in a fresh interpreter (no import cycle hides behind
the order in which a test session happens to import things)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"wtb": ROOT / "src" / "wtb", "wtb_operator": ROOT / "operator" / "wtb_operator"}
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_the_layer_contracts_hold() -> None:
    done = _lint_imports(ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_contracts_catch_an_import_chain(tmp_path: Path) -> None:
    """Not vacuous: a contract the code breaks only through a chain of imports (the operator
    reaches pydantic through the engine, never directly) is reported broken."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    probe = tmp_path / "probe.toml"
    probe.write_text(
        textwrap.dedent(
            f"""
            [tool.importlinter]
            root_packages = {config["root_packages"]!r}
            include_external_packages = true

            [[tool.importlinter.contracts]]
            name = "probe"
            type = "forbidden"
            source_modules = ["wtb_operator.workflow"]
            forbidden_modules = ["pydantic"]
            """
        ).replace("'", '"')
    )
    done = _lint_imports(probe)
    assert done.returncode != 0, done.stdout
    assert "wtb_operator.workflow -> wtb.api.workflow" in done.stdout, done.stdout


# Scripts, not modules: `python -m` entry points run on import, and Alembic runs its
# environment script itself (it reads the migration context Alembic sets up).
NOT_IMPORTED_ALONE = {"wtb.__main__", "wtb_operator.__main__", "wtb.storage.migrations.env"}


def _modules() -> list[str]:
    names = []
    for package, directory in PACKAGES.items():
        for path in sorted(directory.rglob("*.py")):
            parts = [package, *path.relative_to(directory).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return [name for name in names if name not in NOT_IMPORTED_ALONE]


# Run in a new interpreter. A first child imports every module and reports which other
# libraries that loaded; the parent imports those (once, for every child), then imports each
# module of WTB's in a forked child that has never imported anything of WTB's.
_IMPORT_EACH = """
import importlib, os, sys, traceback
ours = ("wtb", "wtb.", "wtb_operator")
names = sys.argv[1:]
read, write = os.pipe()
if os.fork() == 0:
    os.close(read)
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:
            pass
    others = [m for m in list(sys.modules) if not m.startswith(ours)]
    os.write(write, "\\n".join(others).encode())
    os._exit(0)
os.close(write)
with os.fdopen(read) as pipe:
    libraries = pipe.read().split()
os.wait()
for library in libraries:
    try:
        importlib.import_module(library)
    except BaseException:
        pass
assert not [m for m in sys.modules if m.startswith(ours)]
failed = []
running = {}
for name in [*names, None]:
    while running and (name is None or len(running) >= (os.cpu_count() or 1)):
        pid, status = os.wait()
        if status != 0:
            failed.append(running[pid])
        del running[pid]
    if name is None:
        break
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    running[pid] = name
print("FAILED:", " ".join(failed))
"""


@pytest.mark.slow  # a hundred processes, each building the typed models anew
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    modules = _modules()
    assert "wtb.cells.executor" in modules  # the listing works
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, *modules],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={"WTB_WEBHOOK_PORT": "0", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "FAILED:", done.stdout + done.stderr
