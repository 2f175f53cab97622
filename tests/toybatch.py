"""The toy workflow (tests/fixtures/toy), the one BatchTest fixture of the tests: as manifests
(`toy_batchtest`), as a prepared batch (`toy_prepared`), as a run spec for runners
(`toy_job`), and as the API server stores it (`stored_batchtest_body`, `stored_batchtest`)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from wtb.api.batchtest import BatchTest, BatchTestSpec
from wtb.api.workflow import WorkflowSpec
from wtb.domain import Case
from wtb.manifests import load_manifests
from wtb.pipeline.prepare import PreparedBatch, prepare
from wtb.runs.spec import RunSpec

TOY = Path(__file__).parent / "fixtures" / "toy"

MODES = {
    # An async node: cells run on the asyncio loop (inline) or an actor's loop (Ray).
    "loop": ("toyflow.graph:build", ""),
    # Every node and router sync: inline, cells run whole on worker threads.
    "threads": ("toyflow.graph:build_sync", "_sync"),
}
_TAGS = itertools.count()
# The uid of `stored_batchtest` unless told otherwise.
STORED_UID = "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab"


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


def stored_batchtest_body(
    *,
    name: str = "demo",
    namespace: str | None = "team",
    uid: str = STORED_UID,
    generation: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    """A BatchTest API object as the Kubernetes API server stores it and the operator reads
    it (metadata with a uid and a generation): the toy Workflow's node `answer` as
    `original` against `reversed`, the data set at path `cases.jsonl`, one exactMatch
    evaluator `correct` on output `answer`, which is the primary metric. `spec` adds to or
    overrides the spec; `namespace=None` leaves the namespace out (the model's default
    then). A new dict on every call, so callers may edit it."""
    metadata: dict[str, Any] = {
        "name": name,
        **({} if namespace is None else {"namespace": namespace}),
        "uid": uid,
        "generation": generation,
    }
    return {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "BatchTest",
        "metadata": metadata,
        "spec": {
            "workflowRef": {"name": "toy"},
            "matrix": {"answer": ["original", "reversed"]},
            "dataset": {"path": "cases.jsonl"},
            "evaluators": [{"name": "correct", "type": "exactMatch", "output": "answer"}],
            "primaryMetric": "correct",
            **spec,
        },
    }


def stored_batchtest(
    *,
    name: str = "demo",
    namespace: str | None = "team",
    uid: str = STORED_UID,
    generation: int = 1,
    **spec: Any,
) -> BatchTest:
    """The typed BatchTest of `stored_batchtest_body` (same arguments)."""
    body = stored_batchtest_body(
        name=name, namespace=namespace, uid=uid, generation=generation, **spec
    )
    return BatchTest.model_validate(body, by_alias=True)


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
    return prepare_documents(tmp_path / f"{name}.yaml", workflow, batch)


def prepare_documents(
    path: Path,
    workflow: dict[str, Any],
    batch: dict[str, Any],
    *,
    python_path: tuple[str, ...] = (),
) -> PreparedBatch:
    """Write a Workflow and a BatchTest manifest to `path` as a user would, load them and
    prepare the batch (relative paths resolve beside `path`)."""
    path.write_text(yaml.safe_dump_all([workflow, batch]))
    manifests = load_manifests([str(path)])
    bt, source = manifests.batchtests[0]
    wf, _ = manifests.workflow_for(bt, source)
    return prepare(
        bt,
        wf,
        base_dir=path.parent,
        where=path.name,
        workflow_where=path.name,
        python_path=python_path,
    )


def toy_job(
    matrix: dict[str, list[str]],
    questions: list[str],
    *,
    mode: str = "loop",
    python_path: tuple[str, ...] = (str(TOY),),
    **spec: Any,
) -> RunSpec:
    """A run of the toy workflow on `questions` (case i: question `Word<tag> <q>`, expected
    answer `word<tag> <q>`, with a tag unique per job: the flaky node counts calls per
    question). Variants of `lookup` and `normalize` that block, fail, crash or stall are
    available by name; in `threads` mode the graph and the blocking lookups are sync.
    `spec` adds to or overrides the BatchTest spec."""
    factory, suffix = MODES[mode]
    workflow = WorkflowSpec.model_validate(
        {
            "graph": {"factory": factory},
            "variants": {
                "lookup": [
                    {"name": "stuck", "path": f"toyflow.graph:stuck_lookup{suffix}"},
                    {"name": "slow", "path": f"toyflow.graph:slow_lookup{suffix}"},
                    {"name": "stamped", "path": "toyflow.graph:stamped_lookup"},
                    {"name": "loop_blocking", "path": "toyflow.graph:loop_blocking_lookup"},
                    {"name": "exiting", "path": f"toyflow.graph:exiting_lookup{suffix}"},
                ],
                "normalize": [
                    {"name": "blocking", "path": "toyflow.graph:blocking_normalize"},
                    {"name": "broken", "path": "toyflow.graph:normalize_broken"},
                    {"name": "flaky", "path": "toyflow.graph:flaky_normalize"},
                    {"name": "stuck", "path": "toyflow.graph:stuck_normalize"},
                    {"name": "crash", "path": "toyflow.graph:crash_normalize"},
                    {"name": "exiting", "path": "toyflow.graph:exiting_normalize"},
                ],
            },
        }
    )
    batch = BatchTestSpec.model_validate(
        {
            "workflowRef": {"name": "toy"},
            "matrix": matrix,
            "baseline": {node: variants[0] for node, variants in matrix.items()},
            "dataset": {"cases": [{"inputs": {"question": "x"}}]},
            "evaluators": [
                {"name": "correct", "type": "exactMatch", "output": "answer", "expected": "answer"},
                {"name": "tokens", "type": "tokens"},
            ],
            "primaryMetric": "correct",
            **spec,
        }
    )
    tag = next(_TAGS)
    cases = tuple(
        Case(
            id=f"q{i}", inputs={"question": f"Word{tag} {q}"}, expected={"answer": f"word{tag} {q}"}
        )
        for i, q in enumerate(questions)
    )
    return RunSpec(workflow=workflow, batch=batch, cases=cases, python_path=python_path)
