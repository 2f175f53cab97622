"""Batches of the toy workflow (tests/fixtures/toy) for tests that need a prepared batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from wtb.manifests import load_manifests
from wtb.pipeline.prepare import PreparedBatch, prepare

TOY = Path(__file__).parent / "fixtures" / "toy"


def toy_batchtest(name: str, cases: int, **spec: Any) -> dict[str, Any]:
    """A BatchTest manifest of the toy Workflow: `original` against variant `v` of node
    lookup, `cases` inline cases whose answer is their question; `spec` adds to or
    overrides the spec."""
    return {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "BatchTest",
        "metadata": {"name": name},
        "spec": {
            "workflowRef": {"name": "toy"},
            "matrix": {"lookup": ["original", "v"]},
            "dataset": {
                "cases": [
                    {
                        "id": f"c{i}",
                        "inputs": {"question": f"q{i}"},
                        "expected": {"answer": f"q{i}"},
                    }
                    for i in range(cases)
                ]
            },
            "concurrency": 2,
            "evaluators": [
                {"name": "correct", "type": "exactMatch", "output": "answer", "expected": "answer"}
            ],
            "primaryMetric": "correct",
            **spec,
        },
    }


def toy_prepared(
    tmp_path: Path, name: str, lookup_variant: str, cases: int, **spec: Any
) -> PreparedBatch:
    """A BatchTest `name` over the toy workflow with `lookup` replaced by the toy module's
    `lookup_variant` node (as variant `v`), `cases` cases whose answer is their question,
    through the manifests as a user writes them. `spec` adds to or overrides the spec.
    The toy package must be importable (the caller puts TOY on sys.path)."""
    workflow = yaml.safe_load((TOY / "workflow.yaml").read_text())
    workflow["spec"]["variants"]["lookup"] = [
        {"name": "v", "path": f"toyflow.graph:{lookup_variant}"}
    ]
    defaults: dict[str, Any] = {
        "matrix": {"lookup": ["v"]},
        "baseline": {"lookup": "v"},
        "concurrency": 4,
    }
    batch = toy_batchtest(name, cases, **{**defaults, **spec})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all([workflow, batch]))
    manifests = load_manifests([str(path)])
    bt, source = manifests.batchtests[0]
    wf, _ = manifests.workflow_for(bt, source)
    return prepare(bt, wf, base_dir=tmp_path, where=path.name, workflow_where=path.name)
