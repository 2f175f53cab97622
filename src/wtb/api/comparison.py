"""The comparison matrix: what a BatchTest concludes, as the CLI prints it and status holds it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from wtb.api._base import StatusModel

Verdict = Literal[
    "baseline",
    "better",
    "worse",
    "no significant difference",
    "insufficient data",
    "not comparable",
]
"""`not comparable`: the row or the baseline ran cells and none succeeded; whatever its
metrics say (a failed cell may score 0) is not evidence of how the variant does."""


class Interval(StatusModel):
    """A point estimate with its confidence interval (bounds None when not estimable)."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    n: int = 0


class LatencySummary(StatusModel):
    p50: float | None = None
    p95: float | None = None


class NodeSummary(StatusModel):
    """One node of a combination's graph, over the combination's succeeded cells."""

    ms_p50: float | None = Field(
        default=None, description="Median time of the node per cell (its runs added up)."
    )
    calls: float = Field(default=0.0, description="Mean runs of the node per cell.")
    tokens: float | None = Field(
        default=None, description="Mean tokens per cell of the models called in the node."
    )
    cells: int = Field(default=0, description="Succeeded cells in which the node ran.")


class DeltaSummary(StatusModel):
    """Paired difference of the primary metric against the baseline, per case."""

    mean: float | None = None
    low: float | None = None
    high: float | None = None
    n: int = Field(default=0, description="Cases paired with the baseline.")
    p_value: float | None = None
    p_adjusted: float | None = Field(default=None, description="Holm-adjusted p-value.")


class MatrixRow(StatusModel):
    combination: dict[str, str]
    label: str
    baseline: bool = False
    runs: int
    succeeded: int
    interrupted: int = Field(
        default=0,
        description="Cells stopped at an interrupt() with no scripted answer left: not "
        "successes (the success rate counts them as failures), shown apart from failures.",
    )
    success_rate: Interval
    latency_ms: LatencySummary
    tokens: int | None = None
    cost: float | None = None
    metrics: dict[str, Interval] = Field(
        default_factory=dict,
        description="Per metric: the mean over per-case means, n the cases with a value.",
    )
    evaluator_errors: dict[str, int] = Field(
        default_factory=dict,
        description="Per metric: cells whose evaluator raised (or could not read its path); "
        "their value is missing, so the metric's n may be smaller than the cases run.",
    )
    delta: DeltaSummary | None = None
    verdict: Verdict
    flakiness: float | None = Field(
        default=None, description="Share of cases whose outcome differs across repeats."
    )
    nodes: dict[str, NodeSummary] | None = Field(
        default=None,
        description="Per node (a subgraph's as parent/child), the slowest first, at most "
        "16: which node got slower or dearer.",
    )


class ComparisonMatrix(StatusModel):
    primary_metric: str
    higher_is_better: bool
    baseline: str = Field(description="Label of the baseline combination.")
    confidence: float = 0.95
    alpha: float = 0.05
    ci_method: str = Field(
        default="t",
        description="The interval methods used, in short (ciMethods tells which is whose).",
    )
    ci_methods: dict[str, str] = Field(
        default_factory=dict,
        description="Per metric, and for successRate and delta: how its intervals are "
        "computed (t: Student t over per-case means; wilson: Wilson score, values 0 or 1; "
        "score: score interval with the observed dispersion, values in [0, 1]). Intervals "
        "are not adjusted for multiplicity; verdicts are (correction).",
    )
    correction: str = "holm"
    combinations: int = Field(description="Combinations in the batch (rows may hold fewer).")
    fixed: dict[str, str] | None = Field(
        default=None,
        description="Nodes replaced in every cell (node -> variant): the same in every row, "
        "so not in the labels.",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="What makes verdicts unreliable, such as a baseline with no successful "
        "cell (every comparison is then not comparable).",
    )
    rows: list[MatrixRow]
