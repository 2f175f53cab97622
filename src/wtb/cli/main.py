"""`wtb`: run BatchTests locally, show stored results, validate manifests, write the CRDs.

Heavy modules (LangGraph, SQLAlchemy, rich) are imported inside the commands that need
them, so `wtb --help` and `wtb validate` start fast; `wtb run` also holds the garbage
collector back during its start-up (`_hold_collector`).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from wtb.cli.options import ACTORS, CONCURRENCY, RAY_ADDRESS
from wtb.errors import ExitCode, WtbError

if TYPE_CHECKING:
    from wtb.manifests import ManifestSet
    from wtb.pipeline.prepare import PreparedBatch
    from wtb.runners.base import Runner


def _fail(exc: WtbError) -> NoReturn:
    """Report a WtbError and exit 2: at a terminal every error is for the user to act on
    (the batch driver, run again by the operator, tells the retryable ones apart)."""
    click.secho("error: ", fg="red", bold=True, err=True, nl=False)
    click.echo(str(exc), err=True)
    sys.exit(ExitCode.USAGE)


def _load(files: tuple[str, ...]) -> ManifestSet:
    from wtb.pipeline.local import load_files

    return load_files(files)


def _prepare_all(manifests: ManifestSet) -> list[PreparedBatch]:
    from wtb.pipeline.local import prepare_manifests

    return prepare_manifests(manifests)


def _console() -> Any:
    """Standard output; wide when it is a file or a pipe, so the table is not squeezed."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=240)


FILES = click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    required=True,
    help="Manifest file, directory of manifests, or - for stdin. Repeatable.",
)
DATABASE = click.option(
    "--database",
    envvar="WTB_DATABASE_URL",
    help="Result store: sqlite:///path or postgresql://... [default: sqlite in ./.wtb/wtb.db]",
)
OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml", "markdown", "junit"]),
    default="table",
    show_default=True,
    help="markdown: for a CI job summary or a pull request comment; junit: JUnit XML, a "
    "testcase per combination, failing when it is significantly worse than the baseline or "
    "has failed cells.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wtb")
def cli() -> None:
    """WTB, the Workflow Test Bench: batch-test LangGraph workflows over node variants."""


@cli.command()
@FILES
@DATABASE
@OUTPUT
@click.option(
    "--runner",
    type=click.Choice(["inline", "ray"]),
    default="inline",
    show_default=True,
    help="Where cells run: inline = in this process; ray = on Ray actors (a local Ray "
    "instance started for the run, or the cluster at --ray-address).",
)
@RAY_ADDRESS
@ACTORS
@CONCURRENCY
@click.option(
    "--fail-on",
    type=click.Choice(["worse", "never"]),
    default="never",
    show_default=True,
    help="worse: exit 1 when any combination is significantly worse than the baseline.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def run(
    files: tuple[str, ...],
    database: str | None,
    output: str,
    runner: str,
    ray_address: str | None,
    actors: int | None,
    concurrency: int | None,
    fail_on: str,
    quiet: bool,
) -> None:
    """Run BatchTests and print their comparison matrix. Running again resumes."""
    if runner != "ray" and (actors is not None or _given("ray_address")):
        _fail(WtbError("--ray-address and --actors choose where Ray runs: add --runner ray"))
    try:
        with _hold_collector() as started:
            prepared = _prepare_all(_load(files))
            with _runner_factory(runner, ray_address, actors, concurrency) as make_runner:
                code = _run_prepared(
                    prepared, database, output, make_runner, fail_on, quiet, started
                )
    except WtbError as exc:
        _fail(exc)
    sys.exit(code)


_TUNE_COLLECTOR = False
"""Set by `main`, the process's entry point. A caller that runs the commands in its own
process (tests, through click's runner) keeps its garbage collector as it is."""


@contextmanager
def _hold_collector() -> Iterator[Callable[[], None]]:
    """No garbage collection during start-up; the callable it gives marks the end of it.

    Start-up (WTB's modules, the manifests, the user's graph and LangGraph, SQLAlchemy, the
    plan) allocates a few hundred thousand objects and frees almost nothing, yet each full
    collection scans them all, several times during start-up and again as the interpreter
    exits: much of a small run's time. At the end of start-up everything made so far is
    frozen (it lives as long as the process, so no collection scans it again, the one at
    exit included; acyclic objects are still freed as usual) and the collector resumes.
    """
    if not _TUNE_COLLECTOR or not gc.isenabled():
        yield lambda: None
        return

    def started() -> None:
        if not gc.isenabled():
            gc.freeze()
            gc.enable()

    gc.disable()
    try:
        yield started
    finally:
        gc.enable()


def _given(parameter: str) -> bool:
    """Whether the option was given on the command line (not from the environment)."""
    source = click.get_current_context().get_parameter_source(parameter)
    return source is click.core.ParameterSource.COMMANDLINE


@contextmanager
def _runner_factory(
    runner: str, ray_address: str | None, actors: int | None, concurrency: int | None
) -> Iterator[Callable[[], Runner]]:
    """How to make the chosen runner, inside whatever it needs (a Ray connection)."""
    from wtb.pipeline.local import runner_factory

    with runner_factory(runner, ray_address, actors, concurrency) as make:
        yield make


def _run_prepared(
    prepared: list[PreparedBatch],
    database: str | None,
    output: str,
    make_runner: Callable[[], Runner],
    fail_on: str,
    quiet: bool,
    started: Callable[[], None],
) -> int:
    from rich.console import Console

    from wtb.cli.render import as_data, dump, matrix_table
    from wtb.comparison.stored import matrix_for_run
    from wtb.settings import get_settings
    from wtb.storage import ResultStore, default_sqlite_url
    from wtb.variant_matrix import combination_label, fixed_label

    settings = get_settings()
    url = database or settings.database_url or default_sqlite_url()
    out = _console()
    err = Console(stderr=True)
    documents: list[dict[str, Any]] = []
    gate_failed = False
    with ResultStore.open(url, retry_seconds=settings.store_retry_seconds) as store:
        started()
        for item in prepared:
            name = item.batch.metadata.name
            plan = item.plan
            _print_warnings(item)
            if output == "table":
                err.print(
                    f"[bold]{name}[/]: {len(plan.combinations)} combinations"
                    f" x {len(plan.cases)} cases"
                    f" x {plan.repeats} repeats = {plan.total} cells"
                    f" (baseline: {combination_label(plan.baseline)})"
                    + (
                        f"; in every cell: {fixed}"
                        if (fixed := fixed_label(item.batch.spec))
                        else ""
                    )
                )
            try:
                outcome = _run_with_progress(
                    item,
                    store,
                    make_runner(),
                    quiet or not err.is_terminal,
                    err,
                    settings.flush_every,
                    settings.flush_seconds,
                )
            except KeyboardInterrupt:
                stopped = store.get_run(item.run_info.run_key)
                done = store.progress(stopped.id).done if stopped else 0
                err.print(
                    f"\ninterrupted: {done}/{plan.total} cells recorded; "
                    "run the same command again to finish the rest"
                )
                return ExitCode.INTERRUPTED
            matrix = matrix_for_run(store, outcome.run_id, item.batch.spec, plan.baseline)
            progress = store.progress(outcome.run_id)
            if output == "table":
                resumed = (
                    f", {outcome.recorded_before} already recorded"
                    if outcome.recorded_before
                    else ""
                )
                err.print(
                    f"{outcome.recorded_now} cells run in {outcome.seconds:.1f} s{resumed}; "
                    f"{progress.failed} failed"
                    + (f", {progress.interrupted} interrupted" if progress.interrupted else "")
                    + f"; run {outcome.run_key}"
                )
                out.print(matrix_table(name, matrix, out.width))
            else:
                documents.append(
                    as_data(
                        name,
                        outcome.run_key,
                        matrix,
                        {
                            "total": progress.total,
                            "done": progress.done,
                            "succeeded": progress.succeeded,
                            "failed": progress.failed,
                            "interrupted": progress.interrupted,
                        },
                    )
                )
            if any(row.verdict == "worse" for row in matrix.rows):
                gate_failed = True
    if documents:
        click.echo(dump(documents, output))
    if fail_on == "worse" and gate_failed:
        err.print("[red]--fail-on worse: a combination is significantly worse than the baseline[/]")
        return ExitCode.INCOMPLETE
    return 0


def _run_with_progress(
    item: PreparedBatch,
    store: Any,
    runner: Any,
    quiet: bool,
    console: Any,
    every: int,
    seconds: float,
) -> Any:
    from wtb.pipeline.execute import run_batch

    if quiet:
        return run_batch(item, store, runner, flush_every=every, flush_seconds=seconds)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("cells", total=item.plan.total)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return run_batch(
            item, store, runner, on_progress=on_progress, flush_every=every, flush_seconds=seconds
        )


def _print_warnings(item: PreparedBatch) -> None:
    """The warnings raised while the graph and its variants were built, each naming the
    node and variant (on stderr, so that `-o json` output stays parseable)."""
    for warning in item.warnings:
        click.secho("warning: ", fg="yellow", bold=True, err=True, nl=False)
        click.echo(str(warning), err=True)


@cli.command()
@FILES
def validate(files: tuple[str, ...]) -> None:
    """Check manifests (schema and semantics, importing the workflow code) without running."""
    from wtb.variant_matrix import fixed_label

    try:
        manifests = _load(files)
        prepared = _prepare_all(manifests) if manifests.batchtests else []
    except WtbError as exc:
        _fail(exc)
    for (ns, wf_name), _ in manifests.workflows.items():
        click.echo(f"ok  Workflow {ns}/{wf_name}")
    for item in prepared:
        plan = item.plan
        click.echo(
            f"ok  BatchTest {item.batch.metadata.namespace}/{item.batch.metadata.name}: "
            f"{len(plan.combinations)} combinations x {len(plan.cases)} cases"
            f" x {plan.repeats} repeats"
            f" = {plan.total} cells"
            + (f"; in every cell: {fixed}" if (fixed := fixed_label(item.batch.spec)) else "")
        )
        _print_warnings(item)
    for execution, _ in manifests.executions:
        click.echo(f"ok  Execution {execution.metadata.namespace}/{execution.metadata.name}")


@cli.command()
@click.argument("name", required=False)
@click.option("-n", "--namespace", default=None, help="Namespace of the BatchTest.")
@click.option("--run", "run_key", default=None, help="A run key (as `wtb results` lists them).")
@click.option(
    "--cells",
    "with_cells",
    is_flag=True,
    help="With -o json/yaml: every cell too, with its attempts' root run ids (to find its "
    "trace) and its per-node figures.",
)
@DATABASE
@OUTPUT
def results(
    name: str | None,
    namespace: str | None,
    run_key: str | None,
    with_cells: bool,
    database: str | None,
    output: str,
) -> None:
    """Print a stored run's matrix (the newest run of NAME), or list the runs."""
    from rich.console import Console

    from wtb.cli.render import as_data, cells_data, dump, matrix_table
    from wtb.comparison.stored import matrix_for_run
    from wtb.runs.record import recorded_spec
    from wtb.settings import get_settings
    from wtb.storage import ResultStore, default_sqlite_url
    from wtb.variant_matrix import baseline_of

    try:
        url = database or get_settings().database_url or default_sqlite_url()
        with ResultStore.open(url) as store:
            if run_key:
                found = store.get_run(run_key)
                runs = [found] if found else []
            else:
                runs = store.find_runs(namespace=namespace, name=name)
            if not runs:
                click.echo("no stored run matches", err=True)
                sys.exit(1)
            if name is None and run_key is None:
                for r in runs:
                    p = store.progress(r.id)
                    click.echo(
                        f"{r.run_key}  {r.status:<9}  {p.done}/{p.total}"
                        f"  {r.created_at:%Y-%m-%d %H:%M}"
                    )
                return
            chosen = runs[0]
            spec = recorded_spec(chosen).batch
            matrix = matrix_for_run(store, chosen.id, spec, baseline_of(spec))
            p = store.progress(chosen.id)
            if output == "table":
                Console(stderr=True).print(
                    f"run {chosen.run_key}: {p.done}/{p.total} cells, {p.failed} failed"
                    + (f", {p.interrupted} interrupted" if p.interrupted else "")
                )
                console = _console()
                console.print(matrix_table(chosen.name, matrix, console.width))
            else:
                progress = {
                    "total": p.total,
                    "done": p.done,
                    "succeeded": p.succeeded,
                    "failed": p.failed,
                    "interrupted": p.interrupted,
                }
                document = as_data(chosen.name, chosen.run_key, matrix, progress)
                if with_cells:
                    document["cells"] = cells_data(
                        store.iter_cells(chosen.id), store.root_run_ids(chosen.id)
                    )
                click.echo(dump([document], output))
    except WtbError as exc:
        _fail(exc)


@cli.command()
@click.argument("base")
@click.argument("candidate")
@click.option("-n", "--namespace", default=None, help="Namespace of BatchTests given by name.")
@click.option(
    "--metric",
    default=None,
    help="Compare this metric (an evaluator both runs have) [default: the primary metric, "
    "which must then be the same in both].",
)
@DATABASE
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml", "markdown"]),
    default="table",
    show_default=True,
)
@click.option(
    "--fail-on",
    type=click.Choice(["worse", "never"]),
    default="never",
    show_default=True,
    help="worse: exit 1 when the candidate is significantly worse in any combination.",
)
def compare(
    base: str,
    candidate: str,
    namespace: str | None,
    metric: str | None,
    database: str | None,
    output: str,
    fail_on: str,
) -> None:
    """Is CANDIDATE better than BASE? Two runs compared per case, per combination in both.

    BASE and CANDIDATE are run keys (as `wtb results` lists them) or BatchTest names (their
    newest run). The per-case means of the metric are paired by case id, with the matrix's
    paired test, Holm correction and verdicts; what only one run has is named, not compared.
    """
    try:
        comparison = _compare(base, candidate, namespace, metric, database)
    except WtbError as exc:
        _fail(exc)
    _print_comparison(comparison, output)
    if fail_on == "worse" and any(row.verdict == "worse" for row in comparison.rows):
        click.secho(
            "--fail-on worse: the candidate is significantly worse in a combination",
            fg="red",
            err=True,
        )
        sys.exit(ExitCode.INCOMPLETE)


def _compare(
    base: str, candidate: str, namespace: str | None, metric: str | None, database: str | None
) -> Any:
    from wtb.pipeline.local import database_url
    from wtb.runs.lookup import compare_recorded, find_run
    from wtb.storage import ResultStore

    with ResultStore.open(database_url(database)) as store:
        return compare_recorded(
            store,
            find_run(store, base, namespace),
            find_run(store, candidate, namespace),
            metric=metric,
        )


def _print_comparison(comparison: Any, output: str) -> None:
    """One comparison, one document (not a list: it is not a BatchTest's matrix)."""
    from wtb.cli.render_compare import comparison_markdown, comparison_table, summary_lines

    if output == "table":
        from rich.text import Text

        console = _console()
        for line in summary_lines(comparison):
            console.print(Text(line))
        console.print(comparison_table(comparison))
    elif output == "markdown":
        click.echo(comparison_markdown(comparison), nl=False)
    else:
        document = comparison.model_dump(mode="json", by_alias=True)
        if output == "json":
            import json

            click.echo(json.dumps(document, indent=2))
        else:
            import yaml

            click.echo(yaml.safe_dump(document, sort_keys=False), nl=False)


@cli.command()
@click.argument("name", required=False)
@click.option("-n", "--namespace", default=None, help="Namespace of the BatchTest.")
@click.option("--run", "run_key", default=None, help="A run key (as `wtb results` lists them).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "parquet"]),
    default="csv",
    show_default=True,
    help="parquet needs pyarrow: pip install 'wtb[parquet]'.",
)
@click.option(
    "-o",
    "--output",
    "target",
    default="-",
    show_default=True,
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="File to write; - for standard output.",
)
@DATABASE
def export(
    name: str | None,
    namespace: str | None,
    run_key: str | None,
    fmt: str,
    target: str,
    database: str | None,
) -> None:
    """Every cell of a run (the newest of NAME, or --run) as a table: CSV, JSON Lines or
    Parquet, streamed. Columns: run, cell, combination and its axes, case, repeat, status,
    metric.<name> per metric, latency_ms, tokens, cost, error_type, error_message,
    attempts, finished_at, evaluator_errors, output (JSON text)."""
    if name is None and run_key is None:
        _fail(WtbError("give a BatchTest NAME or --run RUN_KEY"))
    try:
        count, key = _export(name, run_key, namespace, fmt, target, database)
    except WtbError as exc:
        _fail(exc)
    where = "standard output" if target == "-" else target
    click.echo(f"{count} cells of run {key} written to {where}", err=True)


def _export(
    name: str | None,
    run_key: str | None,
    namespace: str | None,
    fmt: str,
    target: str,
    database: str | None,
) -> tuple[int, str]:
    from wtb.pipeline.local import database_url
    from wtb.runs.export import export_cells, parquet_module
    from wtb.runs.lookup import find_run
    from wtb.storage import ResultStore

    if fmt == "parquet":
        parquet_module()  # a missing extra is said before anything else is done
        if target == "-" and sys.stdout.isatty():
            raise WtbError("Parquet is binary", fix="write it to a file with -o FILE")
    with ResultStore.open(database_url(database)) as store:
        run = find_run(store, run_key or name or "", None if run_key else namespace)
        if run_key and name is not None and name not in (run.name, f"{run.namespace}/{run.name}"):
            raise WtbError(
                f"run {run.run_key} is of BatchTest {run.namespace}/{run.name}, not {name}",
                fix="drop NAME, or give a run of it with --run",
            )
        if fmt == "parquet":
            out: Any = sys.stdout.buffer if target == "-" else target
            return export_cells(store, run, "parquet", out), run.run_key
        if target == "-":
            return export_cells(store, run, fmt, sys.stdout), run.run_key  # type: ignore[arg-type]
        with open(target, "w", encoding="utf-8", newline="") as file:
            return export_cells(store, run, fmt, file), run.run_key  # type: ignore[arg-type]


@cli.command()
@click.option(
    "-o", "--output-dir", default="crds", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--reference",
    type=click.Path(dir_okay=False),
    help="Also write the Markdown reference of the resources here (docs/resources.md).",
)
def crds(output_dir: str, reference: str | None) -> None:
    """Write the CustomResourceDefinitions generated from the typed models."""
    from wtb.crds import write_crds, write_reference

    for path in write_crds(Path(output_dir)):
        click.echo(str(path))
    if reference is not None:
        click.echo(str(write_reference(Path(reference))))


def _add_driver() -> None:
    from wtb.cli.driver import driver

    cli.add_command(driver)


_add_driver()


def main() -> None:
    global _TUNE_COLLECTOR  # noqa: PLW0603  (only the entry point may set it)
    _TUNE_COLLECTOR = True
    try:
        cli(prog_name="wtb")
    except SystemExit as done:
        threads = sys.modules.get("wtb.cells.threads")  # not loaded: no cell ever ran
        if threads is not None and threads.stuck_threads():
            # Cells that timed out left threads blocked in user code; everything is
            # recorded, so do not wait for them (the interpreter would, at exit).
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        raise
