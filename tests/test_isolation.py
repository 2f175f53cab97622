"""Real applications under WTB: node objects shared by cells or built per cell attempt
(BatchTest `isolation`), a Workflow's `pythonPath` for a src/ layout, and warnings raised
while variants are built, attributed to them. Fixture: tests/fixtures/srclayout."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from wtb.api.workflow import WorkflowSpec
from wtb.cli.main import cli
from wtb.domain import CellResult
from wtb.errors import ExitCode
from wtb.events import EventBus
from wtb.manifests import load_manifests
from wtb.pipeline.prepare import PreparedBatch, prepare

SRCLAYOUT = Path(__file__).parent / "fixtures" / "srclayout"
APP = "srclayoutapp"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    """A copy of the src/ layout fixture; its package is imported afresh by each test and
    forgotten after, so that only the Workflow's `pythonPath` can make it importable."""

    def forget() -> None:
        for name in [m for m in sys.modules if m == APP or m.startswith(f"{APP}.")]:
            del sys.modules[name]

    forget()
    path = list(sys.path)
    copy = tmp_path / "app"
    shutil.copytree(SRCLAYOUT, copy)
    yield copy
    sys.path[:] = path
    forget()


def _edit(path: Path, **spec: Any) -> None:
    doc = yaml.safe_load(path.read_text())
    doc["spec"].update(spec)
    path.write_text(yaml.safe_dump(doc))


def _only(variant: str) -> dict[str, Any]:
    """A BatchTest's matrix of node `answer` as `variant` alone (its own baseline)."""
    return {"matrix": {"answer": [variant]}, "baseline": {"answer": variant}}


def _prepared(app: Path) -> PreparedBatch:
    from wtb.importing import extend_sys_path

    manifests = load_manifests([str(app)])
    batch, source = manifests.batchtests[0]
    workflow, _ = manifests.workflow_for(batch, source)
    python_path = workflow.spec.python_path_under(app)
    extend_sys_path(python_path)
    return prepare(
        batch,
        workflow,
        base_dir=app,
        where="batchtest.yaml",
        workflow_where="workflow.yaml",
        python_path=python_path,
    )


def _run(prepared: PreparedBatch, concurrency: int = 1) -> list[CellResult]:
    from wtb.runners import InlineRunner

    runner = InlineRunner(concurrency, backoff_scale=0)
    return list(runner.run(prepared.job, prepared.plan.iter_cells(), EventBus()))


def _calls(results: list[CellResult], variant: str) -> list[int]:
    return sorted(
        r.output["calls"]
        for r in results
        if r.output is not None and dict(r.cell.combination)["answer"] == variant
    )


def _failed(results: list[CellResult], variant: str) -> list[str]:
    return [
        f"{r.error_type}: {r.error_message}"
        for r in results
        if r.status != "succeeded" and dict(r.cell.combination)["answer"] == variant
    ]


@pytest.mark.parametrize("variant", ["original", "async_counter"])
def test_shared_node_objects_serve_every_cell_of_a_combination(app: Path, variant: str) -> None:
    """The default: one graph per combination in the process, its node objects serving
    every case and repeat (6 cells: the counter sees 6 calls), on threads and on the loop."""
    _edit(app / "batchtest.yaml", **_only(variant))
    results = _run(_prepared(app))
    assert _calls(results, variant) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("variant", ["original", "async_counter"])
def test_cell_isolation_gives_every_attempt_fresh_node_objects(app: Path, variant: str) -> None:
    """`isolation: cell`: the graph factory (original) and the variant's factory run again
    for each attempt: every cell's counter sees its first call, even at concurrency 2."""
    _edit(app / "batchtest.yaml", **_only(variant), isolation="cell")
    results = _run(_prepared(app), concurrency=2)
    assert _calls(results, variant) == [1] * 6
    assert all(r.metrics["first_call"] == 1.0 for r in results)


def test_a_stateful_fake_model_serves_one_cell_when_shared_every_cell_when_isolated(
    app: Path,
) -> None:
    """The issue's case: a fake model popping scripted responses. Shared, the first cell
    takes the one response and the five others fail; with `isolation: cell` all succeed."""
    _edit(app / "batchtest.yaml", **_only("scripted"))
    failed = _failed(_run(_prepared(app)), "scripted")
    assert len(failed) == 5
    assert all("no scripted response left" in f for f in failed)

    _edit(app / "batchtest.yaml", isolation="cell")
    results = _run(_prepared(app), concurrency=2)
    assert _failed(results, "scripted") == []
    assert {r.output["answer"] for r in results if r.output} == {
        f"scripted: q{i}" for i in range(3)
    }


def test_new_fields_left_out_keep_the_run_digest(app: Path) -> None:
    """`isolation` and `pythonPath` not given are not in the record: runs recorded before
    they existed keep their key."""
    _edit(app / "workflow.yaml", pythonPath=None)
    (app / "src" / APP).rename(app / APP)  # importable from the manifest's directory
    sys.path.insert(0, str(app))
    record = _prepared(app).job.to_record()
    assert "pythonPath" not in record["workflow"]
    assert "isolation" not in record["batchTest"]


def test_python_path_makes_a_src_layout_importable_for_validate_and_run(app: Path) -> None:
    db = f"sqlite:///{app / 'r.db'}"
    validated = CliRunner().invoke(cli, ["validate", "-f", str(app)], catch_exceptions=False)
    assert validated.exit_code == 0, validated.output
    assert "ok  BatchTest default/srclayout: 2 combinations" in validated.output

    ran = CliRunner().invoke(
        cli, ["run", "-f", str(app), "--database", db, "-o", "json"], catch_exceptions=False
    )
    # Imported and run: the shared scripted model of this app runs out for some cells (the
    # isolation tests' point), and failed cells fail the run's default gate.
    assert ran.exit_code == ExitCode.CELLS_FAILED, ran.output
    assert "--fail-on failed: 5 of 12 cells failed" in ran.stderr
    assert '"total": 12' in ran.stdout


def test_without_python_path_a_src_layout_is_not_importable(app: Path) -> None:
    _edit(app / "workflow.yaml", pythonPath=None)
    result = CliRunner().invoke(cli, ["validate", "-f", str(app)], catch_exceptions=False)
    assert result.exit_code == 2
    assert f"no module named {APP!r}" in result.output


def test_a_python_path_directory_that_is_not_there_is_named(app: Path) -> None:
    _edit(app / "workflow.yaml", pythonPath=["src", "scr"])
    result = CliRunner().invoke(cli, ["validate", "-f", str(app)], catch_exceptions=False)
    assert result.exit_code == 2
    assert "spec.pythonPath[1]: no directory" in result.output


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("/opt/app/src", "relative to the manifest's directory"),
        ("~/src", "relative to the manifest's directory"),
        ("C:/app/src", "relative to the manifest's directory"),
        ("../shared/src", "leaves the manifest's directory"),
        ("src/../../x", "leaves the manifest's directory"),
    ],
)
def test_python_path_outside_the_manifests_directory_is_refused(entry: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorkflowSpec.model_validate({"graph": {"factory": "a.b:c"}, "pythonPath": [entry]})


def test_python_path_resolves_under_the_base_directory(tmp_path: Path) -> None:
    spec = WorkflowSpec.model_validate(
        {"graph": {"factory": "a.b:c"}, "pythonPath": ["src", "lib/python"]}
    )
    assert spec.python_path_under(tmp_path) == (
        str(tmp_path / "src"),
        str(tmp_path / "lib" / "python"),
    )


def test_warnings_while_building_variants_are_attributed_to_them(app: Path) -> None:
    """LangGraph's warning about a `config` annotation, and a factory's own deprecation
    warning, name the node, the variant and the matrix entry in `wtb validate`."""
    _edit(app / "batchtest.yaml", matrix={"answer": ["original", "annotated", "deprecated"]})
    result = CliRunner().invoke(cli, ["validate", "-f", str(app)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 2, result.stderr
    annotated, deprecated = lines
    assert "spec.matrix.answer[1]: node 'answer', variant 'annotated': UserWarning:" in annotated
    assert "The 'config' parameter should be typed as 'RunnableConfig'" in annotated
    assert "spec.matrix.answer[2]: node 'answer', variant 'deprecated'" in deprecated
    assert "DeprecationWarning: make_deprecated: use make_scripted" in deprecated

    prepared = _prepared(app)
    assert [(w.subject, w.category) for w in prepared.warnings] == [
        ("node 'answer', variant 'annotated'", "UserWarning"),
        ("node 'answer', variant 'deprecated'", "DeprecationWarning"),
    ]


def test_the_driver_resolves_python_path_against_its_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a cluster run the manifest is far away: the image's working directory is the
    base, and the Workflow's entries come before the driver's own PYTHONPATH."""
    from wtb.pipeline.drive import _python_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "/opt/extra")
    record = {"workflow": {"graph": {"factory": "a.b:c"}, "pythonPath": ["src"]}}
    assert _python_path(record) == (str(tmp_path / "src"), "/opt/extra")
    assert _python_path({"workflow": {"graph": {"factory": "a.b:c"}}}) == ("/opt/extra",)


def test_run_prints_the_build_warnings_too(app: Path) -> None:
    _edit(app / "batchtest.yaml", matrix={"answer": ["original", "annotated"]})
    db = f"sqlite:///{app / 'r.db'}"
    result = CliRunner().invoke(
        cli, ["run", "-f", str(app), "--database", db, "-o", "json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr
    assert "node 'answer', variant 'annotated': UserWarning:" in result.stderr
    assert result.stdout.lstrip().startswith("[")  # -o json stays parseable
    with sqlite3.connect(app / "r.db") as conn:
        (data,) = conn.execute("select data from audit_log where kind = 'batch.started'").fetchone()
    (kept,) = json.loads(data)["warnings"]
    assert "node 'answer', variant 'annotated': UserWarning:" in kept


@pytest.mark.ray
@pytest.mark.slow
def test_ray_actors_honour_isolation(app: Path, request: pytest.FixtureRequest) -> None:
    """One actor, so every cell runs where the same graph would be shared: with `isolation:
    cell` each attempt still sees fresh node objects; shared, the actor's counter counts
    every cell. The actor imports the src/ layout from the run's python path."""
    request.getfixturevalue("ray_cluster")
    from wtb.runners.ray_runner import RayRunner

    def on_ray(prepared: PreparedBatch) -> list[CellResult]:
        runner = RayRunner(actors=1, backoff_scale=0)
        return list(runner.run(prepared.job, prepared.plan.iter_cells(), EventBus()))

    _edit(app / "batchtest.yaml", **_only("async_counter"))
    assert _calls(on_ray(_prepared(app)), "async_counter") == [1, 2, 3, 4, 5, 6]
    _edit(app / "batchtest.yaml", isolation="cell")
    assert _calls(on_ray(_prepared(app)), "async_counter") == [1] * 6
