"""Bad input: one clear message naming the place and the fix, exit code 2, nothing written."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from wtb.cli.main import cli

TOY = Path(__file__).parent / "fixtures" / "toy"
WORKFLOW = yaml.safe_load((TOY / "workflow.yaml").read_text())
BATCH = yaml.safe_load((TOY / "batchtest.yaml").read_text())
CASES = (TOY / "cases.jsonl").read_text()

Edit = Callable[[dict[str, Any], dict[str, Any], Path], None]


def _set(path: str, value: Any) -> Edit:
    def edit(workflow: dict[str, Any], batch: dict[str, Any], _: Path) -> None:
        doc = batch if path.startswith("bt.") else workflow
        keys = path.split(".")[1:]
        for key in keys[:-1]:
            doc = doc[key]
        if value is DELETE:
            del doc[keys[-1]]
        else:
            doc[keys[-1]] = value

    return edit


DELETE = object()


def _cases_file(text: str) -> Edit:
    def edit(_: dict[str, Any], __: dict[str, Any], root: Path) -> None:
        (root / "cases.jsonl").write_text(text)

    return edit


BAD: dict[str, tuple[Edit, list[str]]] = {
    "missing field": (
        _set("bt.spec.primaryMetric", DELETE),
        ["spec.primaryMetric", "Field required", "add `primaryMetric`"],
    ),
    "unknown field": (
        _set("bt.spec.repeat", 3),
        ["spec.repeat", "unknown field", "did you mean `repeats`?"],
    ),
    "wrong type": (_set("bt.spec.repeats", "three"), ["spec.repeats", "valid integer", "'three'"]),
    "unknown node": (
        _set("bt.spec.matrix", {"anser": ["original"]}),
        ["spec.matrix.anser", "does not have", "normalize"],
    ),
    "unknown variant": (
        _set("bt.spec.matrix", {"answer": ["original", "upside"]}),
        ["spec.matrix.answer[1]", "no variant 'upside'", "reversed"],
    ),
    "unimportable factory": (
        _set("wf.spec.graph.factory", "toyflow.grph:build"),
        ["Workflow/toy", "spec.graph.factory", "no module named 'toyflow.grph'"],
    ),
    "bad import path": (
        _set("wf.spec.graph.factory", "toyflow/graph.py"),
        ["spec.graph.factory", "'package.module:attribute'"],
    ),
    "empty matrix": (
        _set(
            "bt.spec.exclude", [{"answer": "original"}, {"answer": "reversed"}, {"answer": "async"}]
        ),
        ["spec.exclude", "empty after include/exclude"],
    ),
    "baseline not in matrix": (
        _set("bt.spec.matrix", {"answer": ["reversed", "async"]}),
        ["spec.baseline", "not in the matrix"],
    ),
    "duplicate case ids": (
        _cases_file(CASES + CASES.splitlines()[0] + "\n"),
        ["cases.jsonl", "line 21", "q00", "line 1"],
    ),
    "graph that does not compile": (
        _set("wf.spec.graph.factory", "toyflow.graph:build_broken"),
        ["Workflow/toy", "spec.graph", "LangGraph refuses it", "summarize"],
    ),
    "declared edge out of the end": (
        _set(
            "wf.spec.graph",
            {
                "state": "toyflow.graph:State",
                "nodes": [{"name": "answer", "path": "toyflow.graph:answer"}],
                "edges": [
                    {"from": "__start__", "to": ["answer"]},
                    {"from": "__end__", "to": ["answer"]},
                ],
            },
        ),
        ["spec.graph", "edges[1] starts at __end__"],
    ),
    "NaN in data set": (
        _cases_file(CASES + '{"id": "n", "inputs": {"question": NaN}}\n'),
        ["cases.jsonl", "line 21", "JSON cannot represent"],
    ),
    "unknown evaluator type": (
        _set("bt.spec.evaluators", [{"name": "correct", "type": "exact", "output": "answer"}]),
        ["spec.evaluators[0].type", "exactMatch"],
    ),
    "unknown primary metric": (
        _set("bt.spec.primaryMetric", "accuracy"),
        ["primaryMetric 'accuracy'", "correct"],
    ),
    "unknown workflow": (
        _set("bt.spec.workflowRef", {"name": "other"}),
        ["spec.workflowRef.name", "'other'"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_manifest_is_refused_and_nothing_is_written(case: str, tmp_path: Path) -> None:
    edit, expected = BAD[case]
    workflow, batch = copy.deepcopy(WORKFLOW), copy.deepcopy(BATCH)
    (tmp_path / "cases.jsonl").write_text(CASES)
    (tmp_path / "toyflow").symlink_to(TOY / "toyflow")
    edit(workflow, batch, tmp_path)
    (tmp_path / "workflow.yaml").write_text(yaml.safe_dump(workflow))
    (tmp_path / "batchtest.yaml").write_text(yaml.safe_dump(batch))
    db = tmp_path / "store" / "wtb.db"
    result = CliRunner().invoke(cli, ["run", "-f", str(tmp_path), "--database", f"sqlite:///{db}"])
    assert result.exit_code == 2, result.output
    message = result.stderr
    assert message.startswith("error: ")
    assert "Traceback" not in message
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"
    assert not db.parent.exists(), "a refused manifest must not create the store"


def test_malformed_json_line_is_named(tmp_path: Path) -> None:
    lines = CASES.splitlines()
    lines[6] = lines[6][:-1]  # drop the closing brace of line 7
    (tmp_path / "cases.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "toyflow").symlink_to(TOY / "toyflow")
    (tmp_path / "workflow.yaml").write_text(yaml.safe_dump(WORKFLOW))
    (tmp_path / "batchtest.yaml").write_text(yaml.safe_dump(BATCH))
    result = CliRunner().invoke(cli, ["validate", "-f", str(tmp_path)])
    assert result.exit_code == 2
    assert "cases.jsonl" in result.stderr
    assert "line 7" in result.stderr


def test_several_schema_errors_are_reported_together(tmp_path: Path) -> None:
    batch = copy.deepcopy(BATCH)
    batch["spec"]["repeats"] = 0
    batch["spec"]["concurrency"] = "many"
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(batch))
    result = CliRunner().invoke(cli, ["validate", "-f", str(path)])
    assert result.exit_code == 2
    assert "spec.repeats" in result.stderr
    assert "spec.concurrency" in result.stderr


def test_not_a_resource_and_bad_yaml(tmp_path: Path) -> None:
    data = tmp_path / "cases.yaml"
    data.write_text(json.dumps([{"inputs": {"q": 1}}]))
    result = CliRunner().invoke(cli, ["validate", "-f", str(data)])
    assert result.exit_code == 2
    assert "no apiVersion and kind" in result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: BatchTest\n  spec: [\n")
    result = CliRunner().invoke(cli, ["validate", "-f", str(broken)])
    assert result.exit_code == 2
    assert "not valid YAML" in result.stderr
    assert "line" in result.stderr
