"""Finding a recorded run by what a user types; its comparison matrix; two runs compared.

A reference is a run key as `wtb results` lists them (`namespace/name:digest`), or a
BatchTest's name (`name`, or `namespace/name`), meaning its newest run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wtb.api.comparison import ComparisonMatrix
from wtb.api.run_comparison import RunComparison
from wtb.comparison.across_runs import RunSide, compare_stored_runs
from wtb.comparison.stored import matrix_for_run
from wtb.errors import WtbError
from wtb.runs.record import recorded_spec
from wtb.storage.records import RunRecord
from wtb.variant_matrix import baseline_of

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore


def find_run(store: ResultStore, reference: str, namespace: str | None = None) -> RunRecord:
    """The run `reference` names: a run key, else the newest run of the BatchTest of that
    name (`namespace/name` or `name`, then in `namespace` when given, in any otherwise).

    Raises WtbError naming the fix when no run matches, or when a bare name matches
    BatchTests in several namespaces and no namespace was given."""
    found = store.get_run(reference)
    if found is not None:
        return found
    name = reference
    if ":" not in reference and "/" in reference:
        given, name = reference.split("/", 1)
        if namespace is not None and namespace != given:
            raise WtbError(
                f"{reference!r} names namespace {given!r}, but -n gives {namespace!r}",
                fix="drop -n, or the namespace in the name",
            )
        namespace = given
    runs = [] if ":" in reference else store.find_runs(namespace=namespace, name=name)
    if not runs:
        raise WtbError(
            f"no stored run is {reference!r}"
            + (f" in namespace {namespace!r}" if namespace else ""),
            fix="give a run key or a BatchTest name as `wtb results` lists them "
            "(and the --database they were recorded in)",
        )
    namespaces = sorted({r.namespace for r in runs})
    if len(namespaces) > 1:
        raise WtbError(
            f"BatchTests named {name!r} ran in several namespaces: {', '.join(namespaces)}",
            fix="choose one with -n NAMESPACE (or write NAMESPACE/NAME)",
        )
    return runs[0]


def stored_matrix(store: ResultStore, run: RunRecord) -> ComparisonMatrix:
    """The comparison matrix of a recorded run, from the spec it was recorded with."""
    spec = recorded_spec(run).batch
    return matrix_for_run(store, run.id, spec, baseline_of(spec))


def run_side(run: RunRecord) -> RunSide:
    """A recorded run with the spec and cases it was recorded with, for `compare_stored_runs`."""
    spec = recorded_spec(run)
    return RunSide(run=run, spec=spec.batch, cases=spec.cases)


def compare_recorded(
    store: ResultStore, base: RunRecord, candidate: RunRecord, *, metric: str | None = None
) -> RunComparison:
    """Compare two recorded runs (see `wtb.comparison.across_runs`)."""
    return compare_stored_runs(store, run_side(base), run_side(candidate), metric=metric)
