"""The BatchTest resource: variant matrix x data set x repeats x evaluators."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic.alias_generators import to_camel

from wtb.api._base import (
    IDENT_PATTERN,
    IMPORT_PATH_PATTERN,
    MAX_EVALUATORS,
    MAX_INLINE_CASES,
    MAX_LIST,
    MAX_NAME,
    MAX_NODES,
    MAX_PATTERNS,
    MAX_TEXT,
    MAX_VARIANTS,
    NAME_PATTERN,
    Condition,
    Name,
    NodeMap,
    ObjectMeta,
    SpecModel,
    StatusModel,
    Text,
    duplicates,
    given_fields,
)
from wtb.api.comparison import ComparisonMatrix
from wtb.api.invocation import InvocationSpec
from wtb.api.workflow import ORIGINAL

EvaluatorType = Literal[
    "exactMatch",
    "contains",
    "regex",
    "jsonField",
    "numeric",
    "latency",
    "tokens",
    "cost",
    "python",
]

# Evaluator types that compare an output with an expected value or a literal.
COMPARING_TYPES = frozenset({"exactMatch", "contains", "regex", "jsonField", "numeric"})
# Evaluator types that measure the run itself; lower is better by default.
MEASURING_TYPES = frozenset({"latency", "tokens", "cost"})


class WorkflowRef(SpecModel):
    name: str = Field(pattern=NAME_PATTERN, description="Name of a Workflow in the same namespace.")


class CaseSpec(SpecModel):
    """One test case given inline."""

    id: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        description="Case id; derived from the inputs when omitted.",
    )
    inputs: dict[str, Any] = Field(description="The graph's input state.")
    expected: dict[str, Any] | None = Field(
        default=None, description="Expected values, read by evaluators."
    )
    invoke: InvocationSpec | None = Field(
        default=None,
        description="What this case's invocations get; the most specific level, over the "
        "Workflow's, the BatchTest's and the combination's.",
    )
    resume: list[Any] | None = Field(
        default=None,
        max_length=100,
        description="The human's scripted answers: each interrupt() of the graph is resumed "
        "with the next value, in order, on the same thread, until the graph finishes.",
    )


class DatasetSpec(SpecModel):
    """Test cases: from a file (relative to the manifest) or inline."""

    path: str | None = Field(
        default=None,
        max_length=MAX_TEXT,
        description="JSONL, CSV or YAML file of cases, relative to the manifest.",
    )
    format: Literal["jsonl", "csv", "yaml"] | None = Field(
        default=None, description="File format; inferred from the extension when omitted."
    )
    expected_fields: list[Name] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description=(
            "For flat rows (no `inputs` key): the columns that are expected values; "
            "every other column except `id` is an input."
        ),
    )
    cases: list[CaseSpec] = Field(
        default_factory=list,
        max_length=MAX_INLINE_CASES,
        description="Cases given inline (a bigger data set belongs in a file: `path`).",
    )

    @model_validator(mode="after")
    def _path_or_cases(self) -> DatasetSpec:
        if (self.path is None) == (not self.cases):
            raise ValueError(
                "give either `path` (a data set file) or `cases` (inline), one of them"
            )
        return self


class EvaluatorSpec(SpecModel):
    """A metric computed for every cell. Fields beyond name and type depend on the type."""

    name: str = Field(
        pattern=IDENT_PATTERN,
        max_length=MAX_NAME,
        description="Metric name, unique in the BatchTest.",
    )
    type: EvaluatorType
    output: str | None = Field(
        default=None,
        max_length=MAX_TEXT,
        description="Dotted path of the compared value in what the graph returned "
        "(comparing types); `$state.` first reads the full final state instead.",
    )
    expected: str | None = Field(
        default=None,
        max_length=MAX_TEXT,
        description="Key of the expected value in the case's `expected` (default: `output`).",
    )
    value: str | None = Field(
        default=None,
        max_length=MAX_TEXT,
        description="A literal to look for (contains) or the pattern (regex), "
        "instead of `expected`.",
    )
    field: str | None = Field(
        default=None,
        max_length=MAX_TEXT,
        description="jsonField: dotted path inside the JSON output value.",
    )
    ignore_case: bool = Field(
        default=False, description="exactMatch, contains, regex, jsonField: compare ignoring case."
    )
    strip: bool = Field(
        default=False,
        description="exactMatch, jsonField: ignore leading and trailing whitespace of strings.",
    )
    tolerance: float | None = Field(
        default=None, ge=0, description="numeric: absolute tolerance (default 0)."
    )
    relative_tolerance: float | None = Field(
        default=None, ge=0, description="numeric: tolerance relative to the expected value."
    )
    path: str | None = Field(
        default=None,
        pattern=IMPORT_PATH_PATTERN,
        max_length=MAX_TEXT,
        description="python: import path of the evaluator function or class.",
    )
    config: dict[str, Any] | None = Field(
        default=None, description="python: keyword arguments for an evaluator class."
    )
    higher_is_better: bool | None = Field(
        default=None,
        description="Direction of the metric; default true, false for latency, tokens and cost.",
    )

    @model_validator(mode="after")
    def _fields_for_type(self) -> EvaluatorSpec:
        if self.type in COMPARING_TYPES and self.output is None:
            raise ValueError(
                f"evaluator type {self.type} needs `output`: the dotted path of the value "
                "to check in the final state"
            )
        if self.type == "python" and self.path is None:
            raise ValueError("evaluator type python needs `path`: 'package.module:function'")
        if self.type == "jsonField" and self.field is None:
            raise ValueError("evaluator type jsonField needs `field`: the dotted path in the JSON")
        if self.type != "python" and (self.path is not None or self.config is not None):
            raise ValueError("`path` and `config` belong to evaluators of type python")
        return self

    @property
    def direction_higher_is_better(self) -> bool:
        if self.higher_is_better is not None:
            return self.higher_is_better
        return self.type not in MEASURING_TYPES


MAX_BACKOFF_SECONDS = 600.0
"""The longest retry delay a BatchTest may ask for (10 minutes)."""
MAX_DEADLINE_SECONDS = 7 * 24 * 3600
"""The longest timeout or deadline a BatchTest may ask for (7 days)."""


class RetrySpec(SpecModel):
    max_attempts: int = Field(
        default=3, ge=1, le=20, description="Attempts per cell for transient errors."
    )
    backoff_seconds: float = Field(
        default=0.5,
        ge=0,
        le=MAX_BACKOFF_SECONDS,
        allow_inf_nan=False,
        description="First delay; doubles each attempt, with jitter (at most 600 s).",
    )
    max_backoff_seconds: float = Field(
        default=30.0,
        ge=0,
        le=MAX_BACKOFF_SECONDS,
        allow_inf_nan=False,
        description="Longest delay between two attempts (at most 600 s).",
    )
    transient_errors: list[Text] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description=(
            "More exception class names (or 'module:Class') treated as transient, "
            "beyond connection errors, rate limits and the graph's own timeouts."
        ),
    )
    retry_timeouts: bool | None = Field(
        default=None,
        description=(
            "Retry an attempt that overran `timeoutSeconds` (default false: a cell that "
            "times out once has failed, so a looping or hanging variant costs one timeout "
            "per cell, not maxAttempts)."
        ),
    )


Quantity = int | str
"""A Kubernetes resource quantity: 2, "500m", "4Gi"."""


class ResourceRequirements(SpecModel):
    """Container resources, as in a pod spec."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class RayHeadSpec(SpecModel):
    resources: ResourceRequirements | None = Field(
        default=None, description="The head container's resources."
    )
    ray_start_params: dict[str, str] = Field(
        default_factory=dict, description="More `ray start` parameters for the head."
    )


class RayWorkersSpec(SpecModel):
    replicas: int = Field(default=1, ge=0, le=1000, description="Worker pods.")
    resources: ResourceRequirements | None = Field(
        default=None, description="Each worker container's resources."
    )
    ray_start_params: dict[str, str] = Field(
        default_factory=dict, description="More `ray start` parameters for the workers."
    )


class RaySpec(SpecModel):
    """Where the batch runs on Kubernetes: a RayCluster WTB creates, or a named one."""

    cluster_name: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        max_length=63,
        description=(
            "Use this existing RayCluster (same namespace) instead of creating one; WTB never "
            "deletes it. Its pods must hold the workflow's code and the database URL."
        ),
    )
    ray_version: str | None = Field(
        default=None, description="The Ray version of the image (KubeRay's rayVersion)."
    )
    head: RayHeadSpec = Field(default_factory=RayHeadSpec)
    workers: RayWorkersSpec = Field(default_factory=RayWorkersSpec)
    actors: int | None = Field(
        default=None, ge=1, le=4096, description="Cell actors; default one per CPU of the cluster."
    )
    ready_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DEADLINE_SECONDS,
        description="How long to wait for the RayCluster to be ready; default: the operator's.",
    )

    @model_validator(mode="after")
    def _named_or_built(self) -> RaySpec:
        built = given_fields(self, ("ray_version", "head", "workers"))
        if self.cluster_name is not None and built:
            fields = ", ".join(sorted(to_camel(f) for f in built))
            raise ValueError(
                f"ray.{fields}: these describe a RayCluster WTB creates; with "
                "ray.clusterName the named cluster is used as it is: remove one or the other"
            )
        return self


class BatchTestSpec(SpecModel):
    workflow_ref: WorkflowRef
    matrix: dict[str, Annotated[list[Name], Field(max_length=MAX_VARIANTS)]] = Field(
        min_length=1,
        max_length=MAX_NODES,
        description=(
            "Per varied node, the variant names to try (`original` is the node's own; a "
            "node inside a subgraph node is named `parent/child`); per varied setting of the "
            "Workflow, its choice names (`original`: none)."
        ),
    )
    fixed: NodeMap | None = Field(
        default=None,
        description=(
            "Nodes replaced in every cell (node -> variant), outside the matrix: they do not "
            "multiply the combinations and are not in their labels."
        ),
    )
    include: list[NodeMap] = Field(
        default_factory=list,
        max_length=MAX_PATTERNS,
        description="Keep only combinations matching one of these (node -> variant) patterns.",
    )
    exclude: list[NodeMap] = Field(
        default_factory=list,
        max_length=MAX_PATTERNS,
        description="Drop combinations matching one of these (node -> variant) patterns.",
    )
    baseline: NodeMap | None = Field(
        default=None,
        description="The combination others are compared with; default: every node `original`.",
    )
    dataset: DatasetSpec
    repeats: int = Field(default=1, ge=1, le=1000)
    evaluators: list[EvaluatorSpec] = Field(min_length=1, max_length=MAX_EVALUATORS)
    primary_metric: str = Field(
        max_length=MAX_NAME, description="Name of the evaluator that ranks combinations."
    )
    concurrency: int = Field(default=8, ge=1, le=4096, description="Cells run at once.")
    isolation: Literal["shared", "cell"] | None = Field(
        default=None,
        description=(
            "What the graph's node objects are shared by. `shared` (the default): each "
            "combination's graph is built once per process and its nodes serve every cell, "
            "concurrently, as in a production server, so they must be thread-safe. `cell`: "
            "the graph factory and variant factories run again and the graph is compiled "
            "for every attempt of every cell, as in a fresh process."
        ),
    )
    timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        le=MAX_DEADLINE_SECONDS,
        allow_inf_nan=False,
        description="Per attempt of a cell (at most 7 days).",
    )
    retry: RetrySpec = Field(default_factory=RetrySpec)
    evaluator_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DEADLINE_SECONDS,
        allow_inf_nan=False,
        description=(
            "How long a `python` evaluator may take on one cell (default 60 s); one that "
            "overruns is abandoned and its metric recorded as an evaluator error."
        ),
    )
    invoke: InvocationSpec | None = Field(
        default=None,
        description="What every invocation of this BatchTest gets, over the Workflow's "
        "`invoke` (context, configurable, recursionLimit, tags, metadata).",
    )
    alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="Significance level of the verdicts (Holm)."
    )
    ray: RaySpec = Field(
        default_factory=RaySpec, description="Kubernetes runs: the Ray cluster the cells run on."
    )
    backoff_limit: int = Field(
        default=2,
        ge=0,
        le=20,
        description=(
            "Kubernetes runs: times a failed Ray job is submitted again; cells already "
            "recorded are not run again."
        ),
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DEADLINE_SECONDS,
        description=(
            "The whole run's deadline, from its start: a run not finished by then stops "
            "(on Kubernetes the BatchTest fails with reason DeadlineExceeded and its Ray job "
            "is stopped); recorded cells stay recorded. Unset: no deadline."
        ),
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Kubernetes runs: delete the RayCluster WTB created this many seconds after the run "
            "finished (0: at once); unset keeps it."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> BatchTestSpec:
        for node, variants in self.matrix.items():
            if not variants:
                raise ValueError(f"matrix.{node} lists no variant; add at least `original`")
            dupes = duplicates(variants)
            if dupes:
                raise ValueError(f"matrix.{node} repeats {', '.join(dupes)}; list each once")
        for node, variant in (self.fixed or {}).items():
            if node in self.matrix:
                raise ValueError(
                    f"fixed.{node}: node {node!r} is also in the matrix; a node is either "
                    "fixed (one variant in every cell) or varied: remove it from one of them"
                )
            if variant == ORIGINAL:
                raise ValueError(
                    f"fixed.{node}: `{ORIGINAL}` is what a node not named anywhere runs; "
                    "remove it, or name a variant"
                )
        names = [e.name for e in self.evaluators]
        dupes = duplicates(names)
        if dupes:
            raise ValueError(f"evaluator names must be unique; repeated: {', '.join(dupes)}")
        if self.primary_metric not in names:
            raise ValueError(
                f"primaryMetric {self.primary_metric!r} is not an evaluator name; "
                f"choose one of: {', '.join(names)}"
            )
        return self

    def evaluator(self, name: str) -> EvaluatorSpec:
        for e in self.evaluators:
            if e.name == name:
                return e
        raise KeyError(name)


Phase = Literal["Pending", "Provisioning", "Running", "Succeeded", "Failed"]


class FailureGroupStatus(StatusModel):
    """Failed cells of one combination that failed the same way (error type, node, first
    line of the message), in a BatchTest's status: bounded, no tracebacks
    (`wtb results NAME --failures` shows them)."""

    combination: str = Field(description="Label of the combination.")
    error_type: str = Field(description="The exception's class, or Timeout.")
    node: str | None = Field(
        default=None,
        description="The node the cells failed in (parent/child in a subgraph), or hung in "
        "for a timeout; unset when they failed outside every node.",
    )
    message: str = Field(description="The first line of the error message, truncated.")
    count: int = Field(description="Failed cells in the group.")
    example_case: str = Field(description="A case whose cell failed this way.")


class BatchTestStatus(StatusModel):
    phase: Phase | None = None
    observed_generation: int | None = None
    run_id: str | None = Field(default=None, description="The run's key in the result store.")
    ray_cluster: str | None = Field(default=None, description="The RayCluster the run uses.")
    submission_id: str | None = Field(
        default=None, description="The Ray job of the current attempt (recorded before submitting)."
    )
    job_attempts: int | None = Field(default=None, description="Ray jobs submitted for this run.")
    message: str | None = Field(default=None, description="What is happening, or what failed.")
    total: int | None = None
    completed: int | None = None
    failed: int | None = None
    interrupted: int | None = Field(
        default=None,
        description="Cells stopped at an interrupt() waiting for a human: not successes.",
    )
    progress: str | None = Field(default=None, description="done/total, for printer columns.")
    best: str | None = Field(default=None, description="Label of the best combination.")
    score: str | None = Field(default=None, description="Primary metric of the best combination.")
    started_at: str | None = None
    finished_at: str | None = None
    matrix: ComparisonMatrix | None = None
    failures: list[FailureGroupStatus] | None = Field(
        default=None,
        description="Why cells failed: the largest failure groups (at most 5 per "
        "combination, 20 in all); interrupted cells are not failures.",
    )
    failure_groups_left_out: int | None = Field(
        default=None, description="Failure groups not listed in `failures` (the bound)."
    )
    conditions: list[Condition] = Field(default_factory=list)


class BatchTest(SpecModel):
    """A variant matrix x a data set of test cases x repeats x evaluators, and its verdicts."""

    api_version: Literal["wtb.dev/v1alpha1"] = "wtb.dev/v1alpha1"
    kind: Literal["BatchTest"] = "BatchTest"
    metadata: ObjectMeta
    spec: BatchTestSpec
    status: BatchTestStatus | None = None
