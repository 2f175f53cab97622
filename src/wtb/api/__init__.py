"""Typed models of WTB's custom resources: the one source of the CRDs and of the engine's input."""

from wtb.api._base import API_VERSION, GROUP, VERSION, Condition, ObjectMeta
from wtb.api.batchtest import (
    BatchTest,
    BatchTestSpec,
    BatchTestStatus,
    DatasetSpec,
    EvaluatorSpec,
    RetrySpec,
)
from wtb.api.comparison import ComparisonMatrix, MatrixRow
from wtb.api.execution import Execution, ExecutionSpec, ExecutionStatus
from wtb.api.workflow import END, ORIGINAL, START, VariantSpec, Workflow, WorkflowSpec

RESOURCE_KINDS: dict[str, type[Workflow] | type[BatchTest] | type[Execution]] = {
    "Workflow": Workflow,
    "BatchTest": BatchTest,
    "Execution": Execution,
}

__all__ = [
    "API_VERSION",
    "END",
    "GROUP",
    "ORIGINAL",
    "RESOURCE_KINDS",
    "START",
    "VERSION",
    "BatchTest",
    "BatchTestSpec",
    "BatchTestStatus",
    "ComparisonMatrix",
    "Condition",
    "DatasetSpec",
    "EvaluatorSpec",
    "Execution",
    "ExecutionSpec",
    "ExecutionStatus",
    "MatrixRow",
    "ObjectMeta",
    "RetrySpec",
    "VariantSpec",
    "Workflow",
    "WorkflowSpec",
]
