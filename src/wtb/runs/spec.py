"""A run's spec: the Workflow's and the BatchTest's specs and the data set, typed, in one
picklable value. It is everything a runner needs to execute cells, and what the store keeps
of a run (`to_record` / `from_record`), so a driver can rebuild it without the manifests.

A run the operator records has no data set yet (`planned` is False): only the workflow's
image can load it, and the batch driver plans the run there (`wtb.pipeline.prepare`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wtb._hashing import content_hash
from wtb.api.batchtest import BatchTestSpec
from wtb.api.workflow import WorkflowSpec
from wtb.domain import Case

LIMITS = frozenset(
    {
        "concurrency",
        "timeoutSeconds",
        "retry",
        "ray",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "activeDeadlineSeconds",
        "evaluatorTimeoutSeconds",
    }
)
"""BatchTest fields that bound how cells run, not what they compute: in no run's or cell's
identity (a changed timeout reruns nothing)."""


def _dump(model: WorkflowSpec | BatchTestSpec) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class RunSpec:
    workflow: WorkflowSpec
    batch: BatchTestSpec
    cases: tuple[Case, ...] = ()
    python_path: tuple[str, ...] = ()
    """Directories put first on sys.path before user code is imported (local runs)."""
    planned: bool = True
    """False for a run recorded without its data set (by the operator)."""
    run_key: str = ""
    """The run's key in the result store, for trace metadata (not part of the record)."""
    batch_name: str = ""
    """The BatchTest's name, for trace run names (not part of the record)."""
    evaluator_code: str = ""
    """The fingerprint of the `python` evaluators' code the run is scored with
    (`wtb.runs.fingerprints`; empty until planned): a result scored with other code is
    scored again when reused."""

    def case_index(self) -> dict[str, Case]:
        return {c.id: c for c in self.cases}

    def to_record(self) -> dict[str, Any]:
        """The JSON the store keeps for this run; `from_record` reads it back."""
        record: dict[str, Any] = {
            "workflow": _dump(self.workflow),
            "batchTest": _dump(self.batch),
        }
        if self.planned:
            record["cases"] = [
                {
                    "id": c.id,
                    "inputs": c.inputs,
                    **({"expected": c.expected} if c.expected else {}),
                    **({"invoke": c.invoke} if c.invoke else {}),
                    **({"resume": list(c.resume)} if c.resume is not None else {}),
                }
                for c in self.cases
            ]
        if self.evaluator_code:
            record["evaluatorCode"] = self.evaluator_code
        return record

    @classmethod
    def from_record(
        cls,
        record: dict[str, Any],
        python_path: tuple[str, ...] = (),
        *,
        run_key: str = "",
        batch_name: str = "",
    ) -> RunSpec:
        cases = record.get("cases")
        return cls(
            workflow=WorkflowSpec.model_validate(record["workflow"]),
            batch=BatchTestSpec.model_validate(record["batchTest"]),
            cases=tuple(
                Case(
                    id=c["id"],
                    inputs=c["inputs"],
                    expected=c.get("expected"),
                    invoke=c.get("invoke"),
                    resume=None if c.get("resume") is None else tuple(c["resume"]),
                )
                for c in cases or ()
            ),
            python_path=python_path,
            planned=cases is not None,
            run_key=run_key,
            batch_name=batch_name,
            evaluator_code=record.get("evaluatorCode", ""),
        )

    def digest(self) -> str:
        """Content hash of workflow, batch and cases: a changed spec or data set is a new run."""
        return content_hash(self.to_record())

    def identity_digest(self, code_fingerprint: str) -> str:
        """Content hash of what determines the run's results: the specs without their
        limits (`LIMITS`), the cases, and the fingerprint of the code. A changed limit
        resumes the same run; changed code, nodes, evaluators or cases make a new run
        (whose unchanged cells are reused, see docs/reruns.md)."""
        record = self.to_record()
        batch = {k: v for k, v in record["batchTest"].items() if k not in LIMITS}
        return content_hash({**record, "batchTest": batch, "code": code_fingerprint})

    def workflow_digest(self) -> str:
        """Content hash of the Workflow's spec alone (the store keeps each version once)."""
        return content_hash(_dump(self.workflow))
