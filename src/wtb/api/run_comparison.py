"""Two recorded runs compared: per combination present in both, the paired per-case delta
of one metric (`wtb compare`). The statistics are the comparison matrix's."""

from __future__ import annotations

from pydantic import Field

from wtb.api._base import StatusModel
from wtb.api.comparison import DeltaSummary, Interval, Verdict

MAX_LISTED_CASES = 20
"""Case ids listed per side of `onlyInBase` / `onlyInCandidate` / `changedCases` (all are
counted)."""


class ComparedRun(StatusModel):
    run: str = Field(description="The run key.")
    batch_test: str = Field(description="namespace/name of its BatchTest.")
    status: str
    created_at: str
    cases: int = Field(description="Cases with a value of the metric in the run.")
    combinations: int = Field(description="Combinations recorded in the run.")


class OnlyIn(StatusModel):
    """What one run has and the other lacks: nothing of it is compared."""

    cases: int = 0
    case_ids: list[str] = Field(
        default_factory=list, description=f"The first {MAX_LISTED_CASES}, sorted."
    )
    combinations: list[str] = Field(default_factory=list, description="Their labels.")


class RunDeltaRow(StatusModel):
    """One combination present in both runs."""

    combination: dict[str, str]
    label: str
    base: Interval = Field(description="The base run's mean over the paired cases.")
    candidate: Interval = Field(description="The candidate run's mean over the paired cases.")
    delta: DeltaSummary = Field(description="candidate - base, paired by case id; n: pairs.")
    verdict: Verdict = Field(description="Of the candidate against the base.")
    unpaired: int = Field(
        default=0,
        description="Cases of this combination with a value in one run only (not compared).",
    )


class RunComparison(StatusModel):
    metric: str
    higher_is_better: bool
    ci_method: str = Field(
        default="t",
        description="The interval of the means and deltas: wilson (every per-case value 0 "
        "or 1), score (all in [0, 1]: the bounded score interval), or t.",
    )
    confidence: float = 0.95
    alpha: float = 0.05
    correction: str = "holm"
    base: ComparedRun
    candidate: ComparedRun
    paired_cases: int = Field(description="Case ids with a value in both runs.")
    only_in_base: OnlyIn
    only_in_candidate: OnlyIn
    changed_cases: OnlyIn = Field(
        default_factory=OnlyIn,
        description="Case ids in both runs whose inputs or expected values differ: paired "
        "all the same (same id), but the runs did not see the same case.",
    )
    rows: list[RunDeltaRow] = Field(description="Best candidate first.")
