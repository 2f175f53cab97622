"""The one check of a BatchTest against its Workflow, shared by the admission webhook and the
reconcile step: parse the spec, read the Workflow it names, parse that, check the references.

Each outcome says what it means to both callers: `admission_answer` turns it into a refusal
or a warning, and the reconcile step (`wtb.kube.decide.decide_validation`) into a failure or
a wait. The Workflow is read only when the spec parses (its name comes from the spec).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wtb.api.batchtest import BatchTest
from wtb.api.workflow import Workflow
from wtb.errors import ManifestErrors
from wtb.kube.semantics import check_references, parse_batchtest, parse_workflow, summary

WorkflowReader = Callable[[str, str], dict[str, Any] | None]
"""(namespace, name) -> the Workflow object, or None when there is none."""


@dataclass(frozen=True)
class SpecInvalid:
    """The spec itself is wrong: refused at admission; the run fails (InvalidSpec)."""

    message: str


@dataclass(frozen=True)
class WorkflowNotFound:
    """The Workflow named does not exist (yet): admitted with a warning; the run waits."""

    namespace: str
    ref: str

    @property
    def message(self) -> str:
        return (
            f"spec.workflowRef.name: no Workflow {self.ref!r} in namespace {self.namespace!r} (yet)"
        )

    @property
    def warning(self) -> str:
        return f"spec.workflowRef.name: Workflow {self.ref!r} does not exist (yet)"


@dataclass(frozen=True)
class WorkflowInvalid:
    """The Workflow named is itself wrong (its own status says why): admitted with a
    warning; the run waits for it to be mended."""

    ref: str
    problems: str

    @property
    def message(self) -> str:
        return f"spec.workflowRef.name: Workflow {self.ref!r} is invalid: {self.problems}"

    @property
    def warning(self) -> str:
        return f"spec.workflowRef.name: Workflow {self.ref!r} is invalid"


@dataclass(frozen=True)
class WorkflowMismatch:
    """The spec names nodes or variants the Workflow lacks: refused at admission; the run
    waits (the Workflow may be edited to fit)."""

    message: str


@dataclass(frozen=True)
class Valid:
    batch: BatchTest
    workflow: Workflow


Checked = SpecInvalid | WorkflowNotFound | WorkflowInvalid | WorkflowMismatch | Valid


def check_batchtest(body: dict[str, Any], read_workflow: WorkflowReader) -> Checked:
    """The BatchTest `body` checked on its own and against the Workflow it names."""
    try:
        batch = parse_batchtest(body)
    except ManifestErrors as exc:
        return SpecInvalid(summary(exc.errors))
    namespace, ref = batch.metadata.namespace, batch.spec.workflow_ref.name
    workflow_body = read_workflow(namespace, ref)
    if workflow_body is None:
        return WorkflowNotFound(namespace, ref)
    try:
        workflow = parse_workflow(workflow_body)
    except ManifestErrors as exc:
        return WorkflowInvalid(ref, summary(exc.errors))
    problems = check_references(batch, workflow)
    if problems:
        return WorkflowMismatch(summary(problems))
    return Valid(batch, workflow)


@dataclass(frozen=True)
class AdmissionAnswer:
    """Refused with `refusal` when set; otherwise admitted, with `warning` when set."""

    refusal: str | None = None
    warning: str | None = None


def admission_answer(checked: Checked) -> AdmissionAnswer:
    """What the webhook answers: a wrong spec is refused; a Workflow that is missing or
    itself wrong is no fault of this spec (it may be applied or mended later): a warning."""
    match checked:
        case SpecInvalid(message) | WorkflowMismatch(message):
            return AdmissionAnswer(refusal=message)
        case WorkflowNotFound() | WorkflowInvalid():
            return AdmissionAnswer(warning=checked.warning)
        case Valid():
            return AdmissionAnswer()
