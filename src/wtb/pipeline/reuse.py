"""Reusing results: a run's cells whose fingerprint matches a succeeded (or interrupted)
cell of an earlier run of the same BatchTest (same namespace and name, never another
namespace's) are copied into the run instead of being run again.

A result scored with the same evaluators and the same `expected` is copied in the
database (INSERT .. SELECT, one statement per chunk). One scored otherwise is scored again
from its stored output with the run's evaluators, in this process (the CLI's or the batch
driver's, never the operator's), without running the graph; when an evaluator reads the
final state (`$state.`), which is not stored, the cell runs again instead. Failed cells are
never reused: they run again. docs/reruns.md tells the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wtb._iterables import chunked
from wtb.cells.scoring import Scorer, reads_state
from wtb.domain import Cell, CellResult
from wtb.plan import Plan
from wtb.runs.fingerprints import Fingerprinter, expected_digest, scoring_digest
from wtb.runs.spec import RunSpec
from wtb.storage.records import ReuseSource, RunRecord, StoredCell
from wtb.storage.values import is_truncated

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore

_CHUNK = 500
"""Planned cells looked up at a time: bounds memory whatever the run's size."""


@dataclass
class _Scoring:
    """How an earlier run scored its cells: its evaluators' digest and each case's
    `expected`."""

    evaluators: str
    expected: dict[str, str] = field(default_factory=dict)


def _scoring_of(run: RunRecord) -> _Scoring | None:
    """How the run scored its cells; None for a run whose recorded spec this WTB cannot
    read (recorded by another version): it is no source."""
    try:
        spec = RunSpec.from_record(run.spec)
    except (KeyError, TypeError, ValueError):
        return None
    return _Scoring(
        scoring_digest(spec.batch, spec.evaluator_code),
        {c.id: expected_digest(c.expected) for c in spec.cases},
    )


@dataclass
class Reuse:
    """Fills a run with the results of earlier runs whose fingerprints match."""

    job: RunSpec
    fingerprinter: Fingerprinter
    _scorer: Scorer | None = field(default=None, init=False)

    def fingerprint(self) -> Callable[[Cell], str]:
        return self.fingerprinter.cell

    def fill(
        self,
        store: ResultStore,
        run: RunRecord,
        plan: Plan,
        on_reused: Callable[[int], None] | None = None,
    ) -> int:
        """Copy into `run` the results of its unrecorded cells that earlier runs of the
        BatchTest recorded with the same fingerprint; returns how many were reused."""
        earlier = store.earlier_runs(run.id, run.namespace, run.name)
        if not earlier:
            return 0
        mine = scoring_digest(self.job.batch, self.fingerprinter.evaluators)
        # Read a run's spec (its cases) only once one of its cells is a source.
        scorings: dict[int, _Scoring | None] = {}

        def scoring_of(run_id: int) -> _Scoring | None:
            if run_id not in scorings:
                other = store.get_run_by_id(run_id)
                scorings[run_id] = None if other is None else _scoring_of(other)
            return scorings[run_id]

        cases = self.job.case_index()
        can_rescore = not reads_state(self.job)
        reused = 0
        for chunk in chunked(plan.iter_cells(), _CHUNK):
            missing = set(store.missing_keys(run.id, [c.key for c in chunk]))
            if not missing:
                continue
            todo = {c.key: c for c in chunk if c.key in missing}
            fingerprints = self.fingerprinter.cells(todo.values())
            by_print: dict[str, list[ReuseSource]] = {}
            for source in store.reuse_sources(earlier, sorted(set(fingerprints.values()))):
                if scoring_of(source.run_id) is not None:
                    by_print.setdefault(source.fingerprint, []).append(source)
            copy: list[int] = []
            rescore: dict[int, Cell] = {}
            for key, cell in todo.items():
                sources = by_print.get(fingerprints[key], [])
                if not sources:
                    continue
                expected = expected_digest(cases[cell.case_id].expected)

                def same_scoring(source: ReuseSource, expected: str = expected) -> bool:
                    scoring = scoring_of(source.run_id)
                    return (
                        scoring is not None
                        and scoring.evaluators == mine
                        and scoring.expected.get(source.case_id) == expected
                    )

                alike = [s for s in sources if same_scoring(s)]
                if alike:
                    copy.append(alike[0].id)
                elif can_rescore:
                    rescore[sources[0].id] = cell
            done = len(store.copy_cells(run.id, copy))
            if rescore:
                done += self._rescore(store, run, rescore, fingerprints)
            reused += done
            if on_reused and done:
                on_reused(done)
        return reused

    def _rescore(
        self,
        store: ResultStore,
        run: RunRecord,
        cells: dict[int, Cell],
        fingerprints: dict[str, str],
    ) -> int:
        if self._scorer is None:
            self._scorer = Scorer(self.job)
        scorer = self._scorer
        by_key = {c.key: c for c in cells.values()}
        # A truncated output cannot be scored again: such a cell runs again instead.
        results: list[tuple[CellResult, StoredCell]] = [
            (scorer.rescore(by_key[stored.cell_key], stored), stored)
            for stored in store.cells_by_id(list(cells))
            if not is_truncated(stored.output)
        ]
        return len(store.record_reused(run.id, results, fingerprints))
