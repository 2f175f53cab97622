"""Hostile and careless input: every bad input is a located error (exit 2, the field and the
fix, no traceback); `validate --schema-only` runs no user code; data sets stay in the
manifest's folder; passwords never echoed; user prints keep machine output parseable;
stores are read without being written."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from wtb.cli.main import cli
from wtb.settings import get_settings
from wtb.storage import ResultStore

TOY = Path(__file__).parent / "fixtures" / "toy"
WTB = [sys.executable, "-m", "wtb"]


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _toy(root: Path) -> Path:
    """The toy workflow copied to `root/m` (manifests, data set, code)."""
    folder = root / "m"
    shutil.copytree(TOY, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _edit_batch(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = folder / "batchtest.yaml"
    batch = yaml.safe_load(path.read_text())
    edit(batch)
    path.write_text(yaml.safe_dump(batch))


def _dataset_path(value: str) -> Callable[[dict[str, Any]], None]:
    def edit(batch: dict[str, Any]) -> None:
        batch["spec"]["dataset"]["path"] = value

    return edit


def _write(name: str, content: bytes | str) -> Callable[[Path], list[str]]:
    """A manifest file of its own, given alone to `validate`."""

    def make(root: Path) -> list[str]:
        path = root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["validate", "-f", str(path)]

    return make


HEAD = "apiVersion: wtb.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\n"
BOMB = "".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
        *(f"{c}: &{c} [{','.join([f'*{chr(ord(c) - 1)}'] * 9)}]\n" for c in "bcdefghi"),
    ]
)


def _in_toy(
    edit: Callable[[Path], object], command: str = "validate"
) -> Callable[[Path], list[str]]:
    def make(root: Path) -> list[str]:
        folder = _toy(root)
        edit(folder)
        return [command, "-f", str(folder)] + (
            ["--database", f"sqlite:///{root / 'db' / 'w.db'}"] if command == "run" else []
        )

    return make


def _outside_absolute(folder: Path) -> None:
    secret = folder.parent / "secret.jsonl"
    shutil.copy(folder / "cases.jsonl", secret)
    _edit_batch(folder, _dataset_path(str(secret)))


def _outside_dotdot(folder: Path) -> None:
    shutil.copy(folder / "cases.jsonl", folder.parent / "up.jsonl")
    _edit_batch(folder, _dataset_path("../up.jsonl"))


def _outside_symlink(folder: Path) -> None:
    outside = folder.parent / "elsewhere.jsonl"
    shutil.copy(folder / "cases.jsonl", outside)
    (folder / "link.jsonl").symlink_to(outside)
    _edit_batch(folder, _dataset_path("link.jsonl"))


def _append_case(line: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        with (folder / "cases.jsonl").open("a") as cases:
            cases.write(line + "\n")

    return edit


def _spec_value(field: str, text: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "batchtest.yaml"
        path.write_text(path.read_text() + f"  {field}: {text}\n")

    return edit


def _dataset_file(name: str, text: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        (folder / name).write_text(text)
        _edit_batch(folder, _dataset_path(name))

    return edit


def _cli(*args: str) -> Callable[[Path], list[str]]:
    return lambda root: list(args)


HOSTILE: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    "non-UTF-8 manifest": (
        _write("latin.yaml", HEAD.encode() + b"spec: {graph: {factory: 'caf\xe9:x'}}\n"),
        ["latin.yaml", "not UTF-8", "save the manifest as UTF-8"],
    ),
    "billion laughs": (
        _write("bomb.yaml", BOMB + HEAD + "spec: *i\n"),
        ["bomb.yaml", "aliases expand to", "no aliases that multiply"],
    ),
    "self-referring alias": (
        _write("loop.yaml", HEAD + "spec: &s {graph: *s}\n"),
        ["loop.yaml", "refers to the node that contains it"],
    ),
    "very deep document": (
        _write("deep.yaml", HEAD + "spec: " + "[" * 20000 + "]" * 20000 + "\n"),
        ["deep.yaml", "line 4", "nested more than 100 levels deep", "fewer nesting levels"],
    ),
    "deep but under the recursion limit": (
        _write("deep2.yaml", HEAD + "spec: " + "[" * 500 + "]" * 500 + "\n"),
        ["deep2.yaml", "nested more than 100 levels deep"],
    ),
    ".inf repeats": (
        _in_toy(_spec_value("timeoutSeconds", ".inf")),
        ["batchtest.yaml", "spec.timeoutSeconds", "infinite or NaN", "give a finite number"],
    ),
    ".nan in a run": (
        _in_toy(_spec_value("timeoutSeconds", ".nan"), command="run"),
        ["spec.timeoutSeconds", "infinite or NaN", "give a finite number"],
    ),
    "data set by absolute path outside": (
        _in_toy(_outside_absolute),
        ["spec.dataset.path", "outside the manifest's directory", "WTB_ALLOW_DATA_OUTSIDE=1"],
    ),
    "data set by .. outside": (
        _in_toy(_outside_dotdot, command="run"),
        ["spec.dataset.path", "'../up.jsonl' is outside", "WTB_ALLOW_DATA_OUTSIDE=1"],
    ),
    "data set symlink to a file outside": (
        _in_toy(_outside_symlink),
        ["spec.dataset.path", "'link.jsonl' is outside", "elsewhere.jsonl"],
    ),
    "data set row nested too deep": (
        _in_toy(_append_case('{"inputs": {"question": ' + "[" * 5000 + "]" * 5000 + "}}")),
        ["cases.jsonl, line 21", "nested too deeply", "at most 100 levels"],
    ),
    "data set row nested deep under the recursion limit": (
        _in_toy(_append_case('{"inputs": {"question": ' + "[" * 300 + "]" * 300 + "}}")),
        ["cases.jsonl, line 21", "nested more than 100 levels"],
    ),
    "data set .inf": (
        _in_toy(_append_case('{"inputs": {"question": Infinity}}')),
        ["cases.jsonl, line 21", "JSON cannot represent"],
    ),
    "data set not UTF-8": (
        _in_toy(lambda f: (f / "cases.jsonl").write_bytes(b'{"inputs": {"question": "\xff"}}\n')),
        ["cases.jsonl", "not UTF-8", "save the file as UTF-8"],
    ),
    "YAML data set bomb": (
        _in_toy(_dataset_file("cases.yaml", BOMB + "cases:\n  - inputs: {question: *i}\n")),
        ["cases.yaml", "aliases expand to"],
    ),
    "CSV field over the field limit": (
        _in_toy(_dataset_file("cases.csv", 'question,answer\n"' + "x" * 200_000 + '",y\n')),
        ["cases.csv", "not valid CSV", "WTB_MAX_DATASET_ROW_BYTES"],
    ),
    "URL without a scheme": (
        _cli("results", "--database", "wtb:hunter2@db.example/wtb"),
        ["is not a database URL", "--database", "postgresql://user:password@host"],
    ),
    "port out of range": (
        _cli("results", "--database", "postgresql://wtb:hunter2@127.0.0.1:99999/db"),
        ["port 99999 is out of range", "give a port from 1 to 65535"],
    ),
    "port not a number": (
        _cli("results", "--database", "postgresql://wtb:hunter2@127.0.0.1:http/db"),
        ["is not a database URL", "postgresql://***@127.0.0.1:http/db"],
    ),
    "view on a port out of range": (
        _cli("view", "--port", "99999"),
        ["--port", "99999", "0<=x<=65535"],
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_is_a_located_error(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WTB_MAX_DATASET_ROW_BYTES", "100000")
    make, expected = HOSTILE[case]
    args = make(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    message = result.stderr
    assert "Traceback" not in result.output
    assert "hunter2" not in result.output
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"
    assert not (tmp_path / "db").exists(), "a refused input must not create the store"


def test_size_caps_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _toy(tmp_path)
    size = (folder / "batchtest.yaml").stat().st_size
    monkeypatch.setenv("WTB_MAX_MANIFEST_BYTES", str(size - 1))
    result = CliRunner().invoke(cli, ["validate", "-f", str(folder / "batchtest.yaml")])
    assert result.exit_code == 2
    assert "larger than" in result.stderr
    assert "WTB_MAX_MANIFEST_BYTES" in result.stderr
    get_settings.cache_clear()
    monkeypatch.setenv("WTB_MAX_MANIFEST_BYTES", "100000")
    monkeypatch.setenv("WTB_MAX_DATASET_BYTES", "100")
    result = CliRunner().invoke(cli, ["validate", "-f", str(folder)])
    assert result.exit_code == 2
    assert "spec.dataset.path" in result.stderr
    assert "WTB_MAX_DATASET_BYTES" in result.stderr
    get_settings.cache_clear()
    monkeypatch.setenv("WTB_MAX_DATASET_BYTES", str(10**9))
    monkeypatch.setenv("WTB_MAX_DATASET_ROW_BYTES", "20")
    result = CliRunner().invoke(cli, ["validate", "-f", str(folder)])
    assert result.exit_code == 2
    assert "cases.jsonl, line 1: the line is longer than 20" in result.stderr
    assert "WTB_MAX_DATASET_ROW_BYTES" in result.stderr


def test_data_outside_is_read_when_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _toy(tmp_path)
    _outside_symlink(folder)
    monkeypatch.setenv("WTB_ALLOW_DATA_OUTSIDE", "1")
    result = CliRunner().invoke(cli, ["validate", "-f", str(folder)])
    assert result.exit_code == 0, result.output
    assert "20 cases" in result.stdout


EVIL = """\
apiVersion: wtb.dev/v1alpha1
kind: Workflow
metadata: {{name: evil}}
spec:
  graph: {{factory: "evilmod:build"}}
  variants:
    answer:
      - name: pop
        path: "subprocess:Popen"
        factory: true
        config: {{args: ["touch", "{marker}"]}}
---
apiVersion: wtb.dev/v1alpha1
kind: BatchTest
metadata: {{name: evil}}
spec:
  workflowRef: {{name: evil}}
  matrix: {{answer: [original, pop]}}
  dataset: {{cases: [{{inputs: {{question: q}}}}]}}
  evaluators: [{{name: latency, type: latency}}]
  primaryMetric: latency
"""


def test_schema_only_imports_nothing_and_calls_no_factory(tmp_path: Path) -> None:
    marker, imported = tmp_path / "factory-called", tmp_path / "module-imported"
    (tmp_path / "evil.yaml").write_text(EVIL.format(marker=marker))
    (tmp_path / "evilmod.py").write_text(f"open({str(imported)!r}, 'w').close()\n")
    # A fresh interpreter: nothing WTB or the test session imported before counts.
    probe = (
        "import sys\n"
        "from wtb.cli.main import cli\n"
        "try:\n"
        f"    cli(['validate', '--schema-only', '-f', {str(tmp_path / 'evil.yaml')!r}])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "loaded = [m for m in ('langgraph', 'wtb.graphs', 'wtb.pipeline.prepare', 'evilmod') "
        "if m in sys.modules]\n"
        "print('LOADED', loaded, 'CODE', code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert "LOADED [] CODE 0" in done.stdout, done.stdout + done.stderr
    assert "schema only" in done.stdout
    assert "2 combinations x 1 cases" in done.stdout
    assert not marker.exists(), "schema-only called a factory"
    assert not imported.exists(), "schema-only imported user code"


def test_schema_only_still_finds_mistakes(tmp_path: Path) -> None:
    folder = _toy(tmp_path)
    _edit_batch(folder, lambda b: b["spec"]["matrix"].update({"answer": ["original", "upside"]}))
    result = CliRunner().invoke(cli, ["validate", "--schema-only", "-f", str(folder)])
    assert result.exit_code == 2
    assert "spec.matrix.answer[1]" in result.stderr
    assert "no variant 'upside'" in result.stderr
    _edit_batch(folder, lambda b: b["spec"]["matrix"].update({"answer": ["original"]}))
    _outside_symlink(folder)
    result = CliRunner().invoke(cli, ["validate", "--schema-only", "-f", str(folder)])
    assert result.exit_code == 2
    assert "spec.dataset.path" in result.stderr


PRINTING = """\
import os
import sys
from typing import TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    question: str
    answer: str


def answer(state: State) -> State:
    print("a print from the node {")
    sys.stdout.write("more from the node ]\\n")
    os.write(1, b"a raw write to descriptor 1 {\\n")
    return {"answer": state["question"]}


def build() -> StateGraph:
    graph = StateGraph(State)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph
"""

PRINTING_MANIFESTS = """\
apiVersion: wtb.dev/v1alpha1
kind: Workflow
metadata: {name: printing}
spec:
  graph: {factory: "printflow:build"}
---
apiVersion: wtb.dev/v1alpha1
kind: BatchTest
metadata: {name: printing}
spec:
  workflowRef: {name: printing}
  matrix: {answer: [original]}
  dataset: {cases: [{inputs: {question: a}, expected: {answer: a}}, {inputs: {question: b}}]}
  repeats: 2
  evaluators: [{name: correct, type: exactMatch, output: answer, expected: answer}]
  primaryMetric: correct
"""


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_prints_in_nodes_leave_machine_output_parseable(tmp_path: Path, output: str) -> None:
    (tmp_path / "printflow.py").write_text(PRINTING)
    (tmp_path / "m.yaml").write_text(PRINTING_MANIFESTS)
    done = subprocess.run(
        [*WTB, "run", "-f", str(tmp_path / "m.yaml"), "-o", output, "-q",
         "--database", f"sqlite:///{tmp_path / 'p.db'}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    documents = json.loads(done.stdout) if output == "json" else yaml.safe_load(done.stdout)
    assert documents[0]["progress"]["done"] == 4
    assert done.stderr.count("a print from the node") == 4
    assert done.stderr.count("a raw write to descriptor 1") == 4


def test_prints_in_nodes_stay_off_stdout_in_process(tmp_path: Path) -> None:
    (tmp_path / "printflow.py").write_text(PRINTING.replace('os.write(1, b"', 'print("'))
    (tmp_path / "m.yaml").write_text(PRINTING_MANIFESTS)
    result = CliRunner().invoke(
        cli,
        ["run", "-f", str(tmp_path / "m.yaml"), "-o", "json", "-q",
         "--database", f"sqlite:///{tmp_path / 'p.db'}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["progress"]["done"] == 4
    assert result.stderr.count("a print from the node") == 4
    sys.modules.pop("printflow", None)


def _stored_toy(tmp_path: Path) -> Path:
    db = tmp_path / "store" / "r.db"
    folder = _toy(tmp_path)
    _edit_batch(folder, lambda b: b["spec"].update({"repeats": 1}))
    result = CliRunner().invoke(
        cli, ["run", "-f", str(folder), "--database", f"sqlite:///{db}", "-q", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    return db


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_read_only_sqlite_store_is_read_and_not_written(tmp_path: Path) -> None:
    db = _stored_toy(tmp_path)
    before = _snapshot(db.parent)
    db.chmod(0o444)
    db.parent.chmod(0o555)
    try:
        for args in (
            ["results", "toy-answers"],
            ["results", "toy-answers", "-o", "json"],
            ["results"],
            ["export", "toy-answers", "--format", "jsonl"],
        ):
            result = CliRunner().invoke(cli, [*args, "--database", f"sqlite:///{db}"])
            assert result.exit_code == 0, (args, result.output)
            assert "Traceback" not in result.output
        assert "toy-answers" in result.stdout
        assert _snapshot(db.parent) == before, "reading wrote the store or its directory"
    finally:
        db.parent.chmod(0o755)
        db.chmod(0o644)


def test_the_read_only_engine_reads_a_store_it_may_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The branch a read-only disk takes (as root every file is writable, so it is chosen
    here by hand): SQLite opened with mode=ro, or immutable when that needs a write."""
    from wtb.storage import engine

    db = _stored_toy(tmp_path)
    monkeypatch.setattr(engine, "sqlite_writable", lambda _path: False)
    with ResultStore.open_for_reading(f"sqlite:///{db}") as store:
        [run] = store.find_runs(name="toy-answers")
        assert store.progress(run.id).done == 60
        assert store.engine.url.drivername == "sqlite"
        with store.engine.connect() as conn, pytest.raises(Exception, match="readonly"):
            conn.exec_driver_sql("DELETE FROM cells")


def test_reading_a_store_at_another_revision_does_not_migrate_it(tmp_path: Path) -> None:
    db = _stored_toy(tmp_path)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0003'")
    conn.close()
    for args in (["results", "toy-answers"], ["export", "toy-answers", "--format", "csv"]):
        result = CliRunner().invoke(cli, [*args, "--database", f"sqlite:///{db}"])
        assert result.exit_code == 2, result.output
        assert "at schema revision 0003" in result.stderr
        assert "run `wtb run`" in result.stderr
        assert "Traceback" not in result.output
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]
    conn.close()


def test_results_of_a_missing_store_create_nothing(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "w.db"
    result = CliRunner().invoke(cli, ["results", "--database", f"sqlite:///{db}"])
    assert result.exit_code == 2
    assert "no result store" in result.stderr
    assert "run `wtb run` first" in result.stderr
    assert not db.parent.exists()


def test_unparseable_urls_are_redacted() -> None:
    from wtb.storage.engine import redact

    for url in (
        "wtb:hunter2@db/wtb",
        "wtb:hun@ter2@db/wtb",
        "postgresql://wtb:hunter2@db:port/wtb",
        "db/wtb?password=hunter2",
        "wtb:hunter2",
    ):
        assert "hunter2" not in redact(url), url
        assert "ter2" not in redact(url), url
    assert redact("postgresql://wtb:hunter2@db:6432/wtb") == "postgresql://wtb:***@db:6432/wtb"
