"""Running manifests in this process: the steps `wtb run` and the Python API (`wtb.run`)
share, so neither implements them twice.

`prepare_files` loads manifest files and prepares every BatchTest among them (each
Workflow's pythonPath put on the Python path first); `runner_factory` makes the chosen
runner inside whatever it needs (a Ray connection); `database_url` and `open_store` pick
and open the result store as every local face does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from wtb.errors import ManifestError
from wtb.pipeline.prepare import CaseSelection, PreparedBatch, prepare

if TYPE_CHECKING:
    from wtb.manifests import ManifestSet
    from wtb.runners.base import Runner
    from wtb.storage.store import ResultStore


def database_url(database: str | None) -> str:
    """The result store's URL: the one given, else WTB_DATABASE_URL, else SQLite in
    ./.wtb/wtb.db."""
    from wtb.settings import get_settings
    from wtb.storage import default_sqlite_url

    return database or get_settings().database_url or default_sqlite_url()


def open_store(database: str | None) -> ResultStore:
    """The result store (see `database_url`), its writes retried as the settings say."""
    from wtb.settings import get_settings
    from wtb.storage import ResultStore

    return ResultStore.open(
        database_url(database), retry_seconds=get_settings().store_retry_seconds
    )


def load_files(files: Sequence[str]) -> ManifestSet:
    from wtb.manifests import load_manifests

    return load_manifests(list(files))


def prepare_files(files: Sequence[str], select: CaseSelection | None = None) -> list[PreparedBatch]:
    """Load the manifests in `files` (files, directories, or - for stdin) and prepare every
    BatchTest among them; raises ManifestError when there is none. `select`: the cases of a
    smoke run (`--limit`, `--cases`), None for the whole data set."""
    return prepare_manifests(load_files(files), select)


def prepare_manifests(
    manifests: ManifestSet, select: CaseSelection | None = None
) -> list[PreparedBatch]:
    """Prepare every BatchTest of loaded manifests (see `prepare_files`)."""
    from wtb.importing import extend_sys_path

    if not manifests.batchtests:
        raise ManifestError(
            "no BatchTest among the files given",
            fix="add a BatchTest manifest to the files given with -f",
        )
    prepared = []
    for batch, source in manifests.batchtests:
        workflow, wf_source = manifests.workflow_for(batch, source)
        # The Workflow's pythonPath (beside its manifest) first, then the manifests' folders.
        wf_where = wf_source.where("Workflow", workflow.metadata.name)
        own = workflow.spec.python_path_under(wf_source.base_dir)
        for i, entry in enumerate(own):
            if not Path(entry).is_dir():
                raise ManifestError(
                    f"no directory {entry}",
                    where=f"{wf_where}: spec.pythonPath[{i}]",
                    fix="give a directory relative to the Workflow manifest's directory",
                )
        path = tuple(
            dict.fromkeys(
                [
                    *own,
                    str(wf_source.base_dir),
                    str(source.base_dir),
                ]
            )
        )
        extend_sys_path(path)
        prepared.append(
            prepare(
                batch,
                workflow,
                base_dir=source.base_dir,
                where=source.where("BatchTest", batch.metadata.name),
                workflow_where=wf_where,
                python_path=path,
                select=select,
            )
        )
    return prepared


@contextmanager
def runner_factory(
    runner: str,
    ray_address: str | None = None,
    actors: int | None = None,
    concurrency: int | None = None,
) -> Iterator[Callable[[], Runner]]:
    """How to make the chosen runner ("inline" or "ray"), inside whatever it needs (a Ray
    connection: the cluster at `ray_address`, or a local Ray started for the run)."""
    from wtb.settings import get_settings

    scale = get_settings().retry_backoff_scale
    if runner == "inline":
        from wtb.runners import InlineRunner

        yield lambda: InlineRunner(concurrency, backoff_scale=scale)
        return
    if runner != "ray":
        from wtb.errors import WtbError

        raise WtbError(f"no runner {runner!r}: choose 'inline' or 'ray'")
    from wtb.runners.ray_runner import RayRunner
    from wtb.runners.ray_session import ray_connection

    with ray_connection(ray_address):
        yield lambda: RayRunner(concurrency, actors=actors, backoff_scale=scale)
