"""The Python API, for notebooks and scripts: `wtb.run` and `wtb.load`.

`wtb.run` goes through the steps `wtb run` takes (`wtb.pipeline.local`: load and prepare
the manifests, make the runner, `run_batch` into the result store), and `wtb.load` finds a
recorded run as `wtb results` does. Both give `RunResults`: the comparison matrix, the
stored cells, and a pandas DataFrame of them where pandas is installed.

    import wtb
    [results] = wtb.run("examples/rag/")
    results.matrix.rows[0].verdict
    df = wtb.load("rag-variants").to_pandas()
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from wtb.api.comparison import ComparisonMatrix

if TYPE_CHECKING:
    from wtb.storage.records import StoredCell

__all__ = ["RunResults", "load", "run"]

PathLike = str | os.PathLike[str]


class RunResults:
    """A recorded run: its key, its comparison matrix, its cells (read from the store on
    each call, streamed) and those cells as a DataFrame."""

    def __init__(self, run_key: str, matrix: ComparisonMatrix, database: str) -> None:
        self.run_key = run_key
        self.matrix = matrix
        self.database = database
        """The result store's URL (where `cells()` reads)."""

    def __repr__(self) -> str:
        return f"RunResults({self.run_key!r}, {len(self.matrix.rows)} combinations)"

    def cells(self) -> Iterator[StoredCell]:
        """Every recorded cell of the run, in recording order, streamed from the store."""
        from wtb.storage import ResultStore

        with ResultStore.open_for_reading(self.database) as store:
            found = store.get_run(self.run_key)
            if found is None:
                from wtb.errors import WtbError
                from wtb.storage.engine import redact

                raise WtbError(f"run {self.run_key} is no longer in {redact(self.database)}")
            yield from store.iter_cells(found.id)

    def to_pandas(self) -> Any:
        """A pandas DataFrame with a row per cell and the columns of `wtb export`
        (`wtb.runs.export`). Needs pandas: `pip install 'wtb[pandas]'`."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "RunResults.to_pandas needs pandas: pip install 'wtb[pandas]' "
                "(or pip install pandas)"
            ) from exc
        from wtb.runs.export import cell_table
        from wtb.storage import ResultStore

        with ResultStore.open_for_reading(self.database) as store:
            found = store.get_run(self.run_key)
            if found is None:
                from wtb.errors import WtbError
                from wtb.storage.engine import redact

                raise WtbError(f"run {self.run_key} is no longer in {redact(self.database)}")
            table = cell_table(store, found)
            return pd.DataFrame.from_records(list(table.rows), columns=table.names)


def _paths(files_or_paths: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(files_or_paths, str | os.PathLike):
        return [os.fspath(files_or_paths)]
    return [os.fspath(p) for p in files_or_paths]


def run(
    files_or_paths: PathLike | Sequence[PathLike],
    *,
    database: str | None = None,
    runner: str = "inline",
    concurrency: int | None = None,
) -> list[RunResults]:
    """Run the BatchTests in manifest files or directories, as `wtb run -f ...` does (a run
    recorded already resumes), and give each one's results, in the order of the files.

    `database`: the result store's URL (default: WTB_DATABASE_URL, else SQLite in
    ./.wtb/wtb.db); `runner`: "inline" (this process) or "ray" (a local Ray, or the cluster
    at RAY_ADDRESS); `concurrency`: cells at once (default: each BatchTest's).
    Raises `wtb.errors.WtbError` for what `wtb run` reports as an error.
    """
    from wtb.comparison.stored import matrix_for_run
    from wtb.pipeline.execute import run_batch
    from wtb.pipeline.local import database_url, open_store, prepare_files, runner_factory
    from wtb.settings import get_settings

    settings = get_settings()
    url = database_url(database)
    prepared = prepare_files(_paths(files_or_paths))
    done = []
    with runner_factory(runner, concurrency=concurrency) as make_runner, open_store(url) as store:
        for item in prepared:
            outcome = run_batch(
                item,
                store,
                make_runner(),
                flush_every=settings.flush_every,
                flush_seconds=settings.flush_seconds,
            )
            matrix = matrix_for_run(store, outcome.run_id, item.batch.spec, item.plan.baseline)
            done.append(RunResults(outcome.run_key, matrix, url))
    return done


def load(
    name_or_run_key: str, *, database: str | None = None, namespace: str | None = None
) -> RunResults:
    """A recorded run: a run key as `wtb results` lists them, or a BatchTest's name (its
    newest run; `namespace` narrows it). Raises `wtb.errors.WtbError` when none matches."""
    from wtb.pipeline.local import database_url
    from wtb.runs.lookup import find_run, stored_matrix
    from wtb.storage import ResultStore

    url = database_url(database)
    with ResultStore.open_for_reading(url) as store:
        found = find_run(store, name_or_run_key, namespace)
        return RunResults(found.run_key, stored_matrix(store, found), url)
