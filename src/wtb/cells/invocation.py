"""What one attempt's graph.invoke / ainvoke gets besides the input: the RunnableConfig and
LangGraph's run-scoped context, built in one place for both executor drivers (and so for the
Ray actors, which run the executor's `attempt`).

The user's `invoke` blocks are merged, least specific first: the Workflow's, the BatchTest's,
the combination's variants and settings (in axis-name order), the case's. WTB then adds what
correlates the invocation's trace with the cell: `run_name` ("wtb:<batch>:<combination>"),
the tag `wtb`, and metadata `wtb_run`, `wtb_cell`, `wtb_case`, `wtb_repeat`, `wtb_attempt`,
`wtb_combination` (the user's metadata may not use the `wtb_` prefix, so these always win).
A graph with a checkpointer (WTB's own in-memory saver, see `wtb.runtime.attempt`) runs each
attempt on a thread of its own, `configurable.thread_id`, which wins over the user's.
Each attempt's invocation gets `run_id`, a uuid made for it (stored with the attempt, so
the cell's trace in LangSmith or OpenTelemetry is found from the cell), and WTB's own
callback handler (`wtb.cells.nodes.NodeTimer`, per-node figures) beside the graph's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wtb.api.invocation import InvocationSpec, merge_invocations
from wtb.api.workflow import WorkflowSpec
from wtb.domain import Case, Cell, Combination
from wtb.runs.spec import RunSpec
from wtb.variant_matrix import combination_label

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

WTB_TAG = "wtb"


@dataclass(frozen=True, slots=True)
class Invocation:
    """The keyword arguments of one invocation besides the input."""

    config: RunnableConfig
    context: dict[str, Any] | None
    """The merged context; None when no level gives one."""

    def context_for(self, graph: Any) -> dict[str, Any] | None:
        """The `context=` argument for `graph`: a graph that declares a context_schema
        always gets one (`{}` when nothing was given: the schema's defaults, as `prepare`
        checked), so its nodes never see `runtime.context` None."""
        if self.context is None and getattr(graph, "context_schema", None) is not None:
            return {}
        return self.context


def combination_invocation(
    workflow: WorkflowSpec, batch_invoke: InvocationSpec | None, combination: Combination
) -> list[InvocationSpec | None]:
    """The `invoke` blocks that apply to every case of `combination`, least specific first."""
    return [
        workflow.invoke,
        batch_invoke,
        *(workflow.axis_invocation(axis, choice) for axis, choice in combination),
    ]


def case_invocation(case: Case) -> InvocationSpec | None:
    """A case's `invoke` block (validated when the data set was loaded)."""
    return None if case.invoke is None else InvocationSpec.model_validate(case.invoke)


def thread_id(cell: Cell, attempt_number: int) -> str:
    """The checkpointer thread of one attempt of a cell: no two attempts share one."""
    return f"{cell.key}#{attempt_number}"


class Invocations:
    """Builds the invocations of one run's attempts. What depends only on the combination
    (its `invoke` blocks merged, its label, the run name) is worked out once per
    combination: an attempt of a fast graph should not pay for it again."""

    def __init__(self, job: RunSpec) -> None:
        self._job = job
        self._combinations: dict[Combination, tuple[InvocationSpec, str, str]] = {}

    def _combination(self, combination: Combination) -> tuple[InvocationSpec, str, str]:
        found = self._combinations.get(combination)
        if found is None:
            job = self._job
            spec = merge_invocations(
                combination_invocation(job.workflow, job.batch.invoke, combination)
            )
            label = combination_label(combination)
            run_name = ":".join(part for part in ("wtb", job.batch_name, label) if part)
            found = self._combinations[combination] = (spec, label, run_name)
        return found

    def build(
        self,
        cell: Cell,
        case: Case,
        attempt: int,
        *,
        needs_thread: bool = False,
        run_id: str | None = None,
        callbacks: Sequence[Any] = (),
    ) -> Invocation:
        """The RunnableConfig and context of attempt `attempt` (1-based) of `cell` on
        `case`; `needs_thread` when the graph has a checkpointer; `run_id` the root run's
        id (a uuid string), `callbacks` handlers added to the graph's own (LangGraph merges
        them)."""
        spec, label, run_name = self._combination(cell.combination)
        if case.invoke is not None:
            spec = merge_invocations([spec, case_invocation(case)])
        metadata: dict[str, Any] = {
            **(spec.metadata or {}),
            "wtb_run": self._job.run_key,
            "wtb_cell": cell.key,
            "wtb_case": cell.case_id,
            "wtb_repeat": cell.repeat,
            "wtb_attempt": attempt,
            "wtb_combination": label,
        }
        tags = [WTB_TAG, *(t for t in spec.tags or () if t != WTB_TAG)]
        config: RunnableConfig = {"run_name": run_name, "tags": tags, "metadata": metadata}
        if run_id is not None:
            config["run_id"] = uuid.UUID(run_id)
        if callbacks:
            config["callbacks"] = list(callbacks)
        if spec.recursion_limit is not None:  # else the graph's own, as in production
            config["recursion_limit"] = spec.recursion_limit
        if spec.configurable or needs_thread:
            config["configurable"] = dict(spec.configurable or {})
        if needs_thread:
            config["configurable"]["thread_id"] = thread_id(cell, attempt)
        return Invocation(config=config, context=spec.context)
