"""A recorded run with every case-level outcome the results pages show: flips both ways,
flaky cases, a failing variant, evaluator errors (the toy Workflow's answer variants of
tests/fixtures/toy/toyflow/cases.py), run through the real engine into a store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from wtb.cli.main import cli
from wtb.storage import ResultStore
from wtb.storage.records import RunRecord

TOY = Path(__file__).parent / "fixtures" / "toy"
NAME = "casemix"
CASES = 6
REPEATS = 2


def _manifests(tag: str) -> list[dict[str, Any]]:
    workflow = {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "toy"},
        "spec": {
            "graph": {"factory": "toyflow.graph:build_sync"},
            "variants": {
                "answer": [
                    {"name": "odd", "path": "toyflow.cases:wrong_on_odd"},
                    {"name": "even", "path": "toyflow.cases:wrong_on_even"},
                    {"name": "boom", "path": "toyflow.cases:raises_on_two"},
                    {
                        "name": "flaky",
                        "path": "toyflow.cases:make_wrong_first",
                        "factory": True,
                        "config": {"tag": tag},
                    },
                ]
            },
        },
    }
    batch = {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "BatchTest",
        "metadata": {"name": NAME},
        "spec": {
            "workflowRef": {"name": "toy"},
            "matrix": {"answer": ["original", "odd", "even", "boom", "flaky"]},
            "baseline": {"answer": "odd"},
            "dataset": {
                "cases": [
                    {
                        "id": f"c{i}",
                        "inputs": {"question": f"q{i}"},
                        "expected": {"answer": f"q{i}"},
                    }
                    for i in range(CASES)
                ]
            },
            "repeats": REPEATS,
            "concurrency": 1,
            "evaluators": [
                {"name": "correct", "type": "exactMatch", "output": "answer", "expected": "answer"},
                {"name": "picky", "type": "python", "path": "toyflow.cases:picky"},
            ],
            "primaryMetric": "correct",
        },
    }
    return [workflow, batch]


@dataclass(frozen=True, slots=True)
class Recorded:
    url: str
    run: RunRecord


def record_casemix(tmp_path: Path, tag: str) -> Recorded:
    """Run the BatchTest with `wtb run` into a SQLite file under tmp_path. The toy package
    must be importable (the caller puts TOY on sys.path)."""
    path = tmp_path / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump_all(_manifests(tag)))
    url = f"sqlite:///{tmp_path / 'casemix.db'}"
    result = CliRunner().invoke(
        cli, ["run", "-f", str(path), "--database", url, "-q", "-o", "json"]
    )
    # The boom variant fails cells on purpose: exit 4 (cells failed), everything recorded.
    assert result.exit_code == 4, result.output
    with ResultStore.open(url) as store:
        (run,) = store.find_runs(name=NAME)
    return Recorded(url, run)
