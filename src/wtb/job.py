"""A BatchJob: everything a runner needs to execute cells, in one picklable value.

The CLI builds it from manifests; the Ray driver rebuilds it from the spec the store recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wtb.api.batchtest import BatchTestSpec
from wtb.api.workflow import WorkflowSpec
from wtb.canonical import content_hash
from wtb.results import Case


@dataclass(frozen=True)
class BatchJob:
    workflow: WorkflowSpec
    batch: BatchTestSpec
    cases: tuple[Case, ...]
    python_path: tuple[str, ...] = ()
    """Directories put first on sys.path before user code is imported (local runs)."""

    def case_index(self) -> dict[str, Case]:
        return {c.id: c for c in self.cases}

    def to_record(self) -> dict[str, Any]:
        """The JSON the store keeps for this run; `from_record` reads it back."""
        return {
            "workflow": self.workflow.model_dump(mode="json", by_alias=True, exclude_none=True),
            "batchTest": self.batch.model_dump(mode="json", by_alias=True, exclude_none=True),
            "cases": [
                {"id": c.id, "inputs": c.inputs, **({"expected": c.expected} if c.expected else {})}
                for c in self.cases
            ],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], python_path: tuple[str, ...] = ()) -> BatchJob:
        return cls(
            workflow=WorkflowSpec.model_validate(record["workflow"]),
            batch=BatchTestSpec.model_validate(record["batchTest"]),
            cases=tuple(
                Case(id=c["id"], inputs=c["inputs"], expected=c.get("expected"))
                for c in record["cases"]
            ),
            python_path=python_path,
        )

    def digest(self) -> str:
        """Content hash of workflow, batch and cases: a changed spec or data set is a new run."""
        return content_hash(self.to_record())
