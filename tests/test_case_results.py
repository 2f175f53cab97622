"""The case-by-case read model (`wtb.comparison.cases`) and `wtb results --cases`, over a
run recorded by the real engine: flips both ways, flaky cases, failures, evaluator errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from casemix import CASES, REPEATS, TOY, Recorded, record_casemix
from wtb.cli.main import cli
from wtb.comparison.cases import CaseComparison, case_comparison, case_comparison_for_run
from wtb.runs.record import recorded_spec
from wtb.storage import ResultStore
from wtb.variant_matrix import baseline_of, expand_combinations

ODD = {"c1", "c3", "c5"}
EVEN = {"c0", "c2", "c4"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(TOY))
        return record_casemix(tmp_path_factory.mktemp("casemix"), "read-model")


def _comparison(recorded: Recorded) -> CaseComparison:
    spec = recorded_spec(recorded.run).batch
    with ResultStore.open(recorded.url) as store:
        return case_comparison_for_run(
            store, recorded.run.id, spec, baseline_of(spec), expand_combinations(spec)
        )


def _flips(comparison: CaseComparison, label: str, kind: str) -> set[str]:
    key = next(k for k, v in comparison.labels.items() if v == label)
    return {row.case_id for row in comparison.rows if row.flips.get(key) == kind}


def test_pass_rule_and_outcomes(recorded: Recorded) -> None:
    comparison = _comparison(recorded)
    assert comparison.binary is True
    assert comparison.pass_threshold == 1.0
    assert next(iter(comparison.labels.values())) == "answer=odd"  # the baseline first
    assert [row.case_id for row in comparison.rows] == [f"c{i}" for i in range(CASES)]
    for row in comparison.rows:
        assert row.baseline is not None
        assert row.baseline.runs == REPEATS
        assert row.baseline.passes is (row.case_id in EVEN)
        assert row.baseline.primary == (1.0 if row.case_id in EVEN else 0.0)
    # The representative repeat's output is kept: the odd variant reverses odd questions.
    c1 = comparison.rows[1]
    assert c1.baseline is not None
    assert c1.baseline.output is not None
    assert c1.baseline.output["answer"] == "1q"


def test_flips_both_ways(recorded: Recorded) -> None:
    comparison = _comparison(recorded)
    assert _flips(comparison, "answer=original", "newly passing") == ODD
    assert _flips(comparison, "answer=original", "newly failing") == set()
    assert _flips(comparison, "answer=even", "newly passing") == ODD
    assert _flips(comparison, "answer=even", "newly failing") == EVEN
    # The failing variant: c2 raises in every repeat, so it no longer passes.
    assert _flips(comparison, "answer=boom", "newly failing") == {"c2"}
    assert _flips(comparison, "answer=boom", "newly passing") == ODD
    boom = next(k for k, v in comparison.labels.items() if v == "answer=boom")
    c2 = comparison.rows[2].candidates[boom]
    assert (c2.failed, c2.succeeded, c2.status, c2.output) == (REPEATS, 0, "failed", None)
    assert c2.error is not None
    assert c2.error.startswith("ValueError: no answer for 'q2'")
    summary = comparison.summaries[boom]
    assert (summary.newly_failing, summary.newly_passing, summary.passing) == (1, 3, 5)
    assert {row.case_id for row in comparison.flipped()} == ODD | EVEN


def test_flaky_cases(recorded: Recorded) -> None:
    comparison = _comparison(recorded)
    flaky = next(k for k, v in comparison.labels.items() if v == "answer=flaky")
    for row in comparison.rows:
        outcome = row.candidates[flaky]
        # One repeat wrong, the other right: the outcome varies and the case does not pass.
        assert outcome.flaky is True
        assert outcome.primary == 0.5
        assert outcome.passes is False
        assert row.flaky is True
    assert _flips(comparison, "answer=flaky", "newly failing") == EVEN
    assert _flips(comparison, "answer=flaky", "newly passing") == set()
    assert comparison.summaries[flaky].flaky == CASES
    # Deterministic variants are never flaky.
    others = [k for k, v in comparison.labels.items() if v != "answer=flaky"]
    assert not any(comparison.outcome(row, k).flaky for row in comparison.rows for k in others)  # type: ignore[union-attr]


def test_evaluator_errors(recorded: Recorded) -> None:
    comparison = _comparison(recorded)
    for row in comparison.rows:
        for outcome in row.outcomes():
            expected = REPEATS if row.case_id == "c3" and outcome.succeeded else 0
            assert outcome.evaluator_errors.get("picky", 0) == expected
    c3 = comparison.rows[3].baseline
    assert c3 is not None
    assert c3.evaluator_messages["picky"] == "RuntimeError: picky evaluator refuses c3"
    assert all(s.evaluator_errors == REPEATS for s in comparison.summaries.values())


def test_score_threshold_for_non_binary_metrics(recorded: Recorded) -> None:
    """With a primary metric that is not 0/1, a case passes from a mean of 0.5."""
    with ResultStore.open(recorded.url) as store:
        cells = list(store.iter_cells(recorded.run.id))
    halved = [
        dataclasses.replace(c, metrics={"correct": 0.6}) if c.case_id == "c1" else c for c in cells
    ]
    comparison = case_comparison(
        halved,
        primary_metric="correct",
        higher_is_better=True,
        baseline=(("answer", "odd"),),
    )
    assert comparison.binary is False
    assert comparison.pass_threshold == 0.5
    c1 = comparison.rows[1]
    assert c1.baseline is not None
    assert c1.baseline.passes is True  # 0.6 >= 0.5, every repeat succeeded


def test_results_cases_cli(recorded: Recorded) -> None:
    runner = CliRunner()
    table = runner.invoke(
        cli, ["results", "casemix", "--cases", "--flipped", "--database", recorded.url]
    )
    assert table.exit_code == 0, table.output
    assert "newly failing" in table.stdout
    assert "newly passing" in table.stdout
    assert "answer=odd (baseline)" in table.stdout
    data = runner.invoke(
        cli, ["results", "casemix", "--cases", "--database", recorded.url, "-o", "json"]
    )
    assert data.exit_code == 0, data.output
    (document,) = json.loads(data.stdout)  # always a list of documents
    assert document["baseline"] == "answer=odd"
    assert len(document["cases"]) == CASES
    c2 = document["cases"][2]
    assert c2["candidates"]["answer=boom"]["flip"] == "newly failing"
    assert c2["candidates"]["answer=boom"]["status"] == "failed"
    summaries = {s["label"]: s for s in document["combinations"]}
    assert summaries["answer=even"]["newlyFailing"] == 3
    flipped = runner.invoke(
        cli,
        ["results", "casemix", "--cases", "--flipped", "--database", recorded.url, "-o", "yaml"],
    )
    assert flipped.exit_code == 0
    assert "case: c0" in flipped.stdout
