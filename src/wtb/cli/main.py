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
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from wtb.cli.options import ACTORS, CONCURRENCY, RAY_ADDRESS
from wtb.errors import ExitCode, RunDeadlineExceeded, Terminated, WtbError

if TYPE_CHECKING:
    from wtb.api.comparison import ComparisonMatrix
    from wtb.comparison.gates import FailOn
    from wtb.manifests import ManifestSet
    from wtb.pipeline.execute import RunOutcome
    from wtb.pipeline.prepare import CaseSelection, PreparedBatch
    from wtb.runners.base import Runner
    from wtb.storage.records import RunProgress
    from wtb.storage.store import ResultStore


def _fail(exc: WtbError) -> NoReturn:
    """Report a WtbError and exit 2: at a terminal every error is for the user to act on
    (the batch driver, run again by the operator, tells the retryable ones apart)."""
    click.secho("error: ", fg="red", bold=True, err=True, nl=False)
    click.echo(str(exc), err=True)
    # A run stopped at its deadline says so by its code (5); it is not a mistake in input.
    sys.exit(ExitCode.DEADLINE if isinstance(exc, RunDeadlineExceeded) else ExitCode.USAGE)


def _load(files: tuple[str, ...]) -> ManifestSet:
    from wtb.pipeline.local import load_files

    return load_files(files)


def _prepare_all(
    manifests: ManifestSet, select: CaseSelection | None = None
) -> list[PreparedBatch]:
    from wtb.pipeline.local import prepare_manifests

    return prepare_manifests(manifests, select)


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
    multiple=True,
    default=["failed"],
    show_default=True,
    callback=lambda ctx, param, value: _fail_on_option(value),
    help="What fails the run (repeatable or comma-separated): failed = a cell failed or "
    "was interrupted (exit 4); worse = a combination significantly worse than the baseline "
    "(exit 1); METRIC<X or METRIC>X = a combination's mean of METRIC below or above X "
    "(exit 1); never. Giving it replaces the default, so keep failed in the list to keep "
    "that gate. A baseline with no successful cell fails every gate but never (exit 4).",
)
@click.option(
    "--rerun",
    type=click.Choice(["failed", "all"]),
    default=None,
    help="Run again this run's failed cells (or all of them), without reusing results; "
    "earlier attempts are kept, the new ones numbered after them.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Smoke run: only the first N cases (a run of its own, keyed apart).",
)
@click.option(
    "--cases",
    "case_ids",
    default=None,
    help="Smoke run: only these cases (ID[,ID...]; a run of its own, keyed apart).",
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
    fail_on: FailOn,
    rerun: str | None,
    limit: int | None,
    case_ids: str | None,
    quiet: bool,
) -> None:
    """Run BatchTests and print their comparison matrix. Running again resumes; results
    earlier runs recorded with the same code, settings and case are reused.

    Exits 0 when no gate of --fail-on failed; docs/cli.md lists every exit code."""
    if runner != "ray" and (actors is not None or _given("ray_address")):
        _fail(WtbError("--ray-address and --actors choose where Ray runs: add --runner ray"))
    try:
        with _hold_collector() as started, _sigterm_stops():
            prepared = _prepare_all(_load(files), _case_selection(limit, case_ids))
            _check_fail_on(fail_on, prepared)
            with _runner_factory(runner, ray_address, actors, concurrency) as make_runner:
                code = _run_prepared(
                    prepared, database, output, make_runner, fail_on, quiet, started, rerun
                )
    except WtbError as exc:
        _fail(exc)
    except SystemExit as exc:  # WTB's own exits are below; this is the workflow's code
        _fail(_code_exited(exc))
    except (KeyboardInterrupt, Terminated) as exc:  # before any cell ran (or between runs)
        code = _stopped_early(exc)
    sys.exit(code)


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """While `wtb run` runs, SIGTERM stops it as Ctrl-C does (raised in the main thread,
    which runs no cell); the previous handler is restored after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped_early(exc: BaseException) -> int:
    """Ctrl-C or SIGTERM before the cells ran: say so; 130 or 143."""
    terminated = isinstance(exc, Terminated)
    click.echo(
        f"\n{'terminated' if terminated else 'interrupted'}: nothing more was run; "
        "run the same command again to finish",
        err=True,
    )
    return ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED


def _code_exited(exc: SystemExit) -> WtbError:
    """The workflow's code called sys.exit() while WTB imported or built it (cells never
    let it through: there it is a failed cell)."""
    return WtbError(
        f"the workflow's code called sys.exit({exc.code!r}) while WTB imported or built it "
        "(its graph factory, a variant, an evaluator or a module they import); no cell ran",
        fix="do not call sys.exit() at import time or in a factory: raise an exception "
        "that says what is wrong, or guard the script part with "
        "if __name__ == '__main__'",
    )


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


def _fail_on_option(values: tuple[str, ...]) -> FailOn:
    from wtb.comparison.gates import parse_fail_on

    try:
        return parse_fail_on(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_fail_on(fail_on: FailOn, prepared: list[PreparedBatch]) -> None:
    """Every metric a --fail-on threshold names is an evaluator of every BatchTest run."""
    from wtb.comparison.gates import unknown_metrics

    for item in prepared:
        names = [e.name for e in item.batch.spec.evaluators]
        for threshold in unknown_metrics(fail_on, names):
            raise WtbError(
                f"--fail-on {threshold}: BatchTest {item.batch.metadata.name} has no metric "
                f"{threshold.metric!r} (its evaluators: {', '.join(names)})",
                fix=f"name one of its evaluators, e.g. --fail-on "
                f"'{names[0]}{threshold.op}{threshold.value:g}', or add an evaluator "
                f"named {threshold.metric} to the BatchTest",
            )


def _gate(fail_on: FailOn, name: str, matrix: ComparisonMatrix, progress: RunProgress) -> int:
    """Tell what makes the run's verdicts unreliable and which gates failed (on stderr, so
    -o json stays parseable); the exit code the gates call for."""
    from wtb.comparison.gates import breaches, exit_code

    # click, not rich: a line a CI log can grep, never wrapped at the terminal's width.
    for warning in matrix.warnings:
        click.secho("warning: ", fg="yellow", bold=True, err=True, nl=False)
        click.echo(f"{name}: {warning}", err=True)
    found = breaches(
        fail_on,
        matrix,
        failed=progress.failed,
        interrupted=progress.interrupted,
        total=progress.total,
    )
    for breach in found:
        click.secho(f"{name}: {breach.message}", fg="red", err=True)
    if not fail_on.failed and (progress.failed or progress.interrupted):
        click.echo(
            f"{name}: {progress.failed} failed, {progress.interrupted} interrupted cells "
            "allowed (--fail-on does not list failed)",
            err=True,
        )
    return int(exit_code(found))


def _run_prepared(
    prepared: list[PreparedBatch],
    database: str | None,
    output: str,
    make_runner: Callable[[], Runner],
    fail_on: FailOn,
    quiet: bool,
    started: Callable[[], None],
    rerun: str | None = None,
) -> int:
    from rich.console import Console

    from wtb.cli.render import as_data, dump, matrix_table, progress_data
    from wtb.comparison.stored import matrix_for_run
    from wtb.settings import get_settings
    from wtb.storage import ResultStore, default_sqlite_url
    from wtb.variant_matrix import combination_label, fixed_label

    settings = get_settings()
    url = database or settings.database_url or default_sqlite_url()
    out = _console()
    err = Console(stderr=True)
    documents: list[dict[str, Any]] = []
    codes = [0]
    machine = output != "table"
    with (
        _user_output_to_stderr() if machine else nullcontext(),
        ResultStore.open(url, retry_seconds=settings.store_retry_seconds) as store,
    ):
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
            if rerun is not None:
                _forget_for_rerun(store, item, rerun, err if output == "table" else None)
            try:
                outcome = _run_with_progress(
                    item,
                    store,
                    make_runner(),
                    quiet or not err.is_terminal,
                    err,
                    settings.flush_every,
                    settings.flush_seconds,
                    reuse=rerun is None,
                )
            except (KeyboardInterrupt, Terminated) as stopped_by:
                stopped = store.get_run(item.run_info.run_key)
                done = store.progress(stopped.id).done if stopped else 0
                terminated = isinstance(stopped_by, Terminated)
                err.print(
                    f"\n{'terminated' if terminated else 'interrupted'}: "
                    f"{done}/{plan.total} cells recorded; "
                    "run the same command again to finish the rest"
                )
                return ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED
            matrix = matrix_for_run(store, outcome.run_id, item.batch.spec, plan.baseline)
            progress = store.progress(outcome.run_id)
            if output == "table":
                err.print(_summary_line(store, item, outcome, progress))
                _print_failures(err, store, outcome.run_id, progress.failed)
                out.print(matrix_table(name, matrix, out.width))
            else:
                document = as_data(
                    name,
                    outcome.run_key,
                    matrix,
                    progress_data(progress, store.reused_span(outcome.run_id).cells),
                )
                documents.append(_with_failures(document, store, outcome.run_id))
            codes.append(_gate(fail_on, name, matrix, progress))
    if documents:
        click.echo(dump(documents, output))
    return max(codes)


@contextmanager
def _user_output_to_stderr() -> Iterator[None]:
    """While cells run, what user code prints goes to stderr, so that the machine output
    (`-o json|yaml|markdown|junit`) written to stdout afterwards stays parseable: sys.stdout
    for every thread, and file descriptor 1 (C extensions, subprocesses) when stdout is a
    real file."""
    real = sys.stdout
    saved: int | None = None
    fd = -1
    try:
        fd = real.fileno()
        real.flush()
        saved = os.dup(fd)
        os.dup2(sys.stderr.fileno(), fd)
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's buffer)
        saved = None
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        finally:
            sys.stdout = real
            if saved is not None:
                os.dup2(saved, fd)
                os.close(saved)


def _case_selection(limit: int | None, case_ids: str | None) -> CaseSelection | None:
    """The cases of a smoke run (`--limit`, `--cases`), None for the full run."""
    if limit is None and case_ids is None:
        return None
    from wtb.pipeline.prepare import CaseSelection

    ids = tuple(dict.fromkeys(i.strip() for i in (case_ids or "").split(",") if i.strip()))
    if case_ids is not None and not ids:
        raise WtbError("--cases names no case", fix="give case ids: --cases ID[,ID...]")
    return CaseSelection(limit=limit, ids=ids)


def _forget_for_rerun(
    store: ResultStore, item: PreparedBatch, rerun: str, console: Any | None
) -> None:
    """`--rerun failed|all`: delete the run's failed (or all) cells so that they run again;
    their attempts stay (the new ones are numbered after them)."""
    run = store.get_run(item.run_info.run_key)
    if run is None:
        return
    statuses = ("failed",) if rerun == "failed" else None
    forgotten = store.forget_cells(run.id, statuses)
    if console is not None:
        console.print(f"--rerun {rerun}: {forgotten} cells of run {run.run_key} to run again")


def _summary_line(
    store: ResultStore, item: PreparedBatch, outcome: RunOutcome, progress: RunProgress
) -> str:
    """`12 cells run in 3.1 s, 276 reused from runs of 2026-12-01 14:02-14:10; 0 failed`."""
    parts = [f"{outcome.recorded_now} cells run in {outcome.seconds:.1f} s"]
    span = store.reused_span(outcome.run_id)
    if span.cells and span.first is not None and span.last is not None:
        first, last = span.first.astimezone(), span.last.astimezone()
        until = f"{last:%H:%M}" if first.date() == last.date() else f"{last:%Y-%m-%d %H:%M}"
        when = f"{first:%Y-%m-%d %H:%M}" + ("" if until == f"{first:%H:%M}" else f"-{until}")
        parts.append(f"{span.cells} reused from runs of {when}")
    earlier = outcome.recorded_before - (span.cells - outcome.reused_now)
    if earlier > 0:
        parts.append(f"{earlier} already recorded")
    smoke = f"; smoke run: {len(item.plan.cases)} of {item.all_cases} cases" if item.smoke else ""
    return (
        ", ".join(parts)
        + f"; {progress.failed} failed"
        + (f", {progress.interrupted} interrupted" if progress.interrupted else "")
        + f"; run {outcome.run_key}"
        + smoke
    )


def _run_with_progress(
    item: PreparedBatch,
    store: Any,
    runner: Any,
    quiet: bool,
    console: Any,
    every: int,
    seconds: float,
    *,
    reuse: bool = True,
) -> Any:
    from wtb.pipeline.execute import run_batch

    if quiet:
        return run_batch(item, store, runner, flush_every=every, flush_seconds=seconds, reuse=reuse)
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
            item,
            store,
            runner,
            on_progress=on_progress,
            flush_every=every,
            flush_seconds=seconds,
            reuse=reuse,
        )


def _print_warnings(item: PreparedBatch) -> None:
    """The warnings raised while the graph and its variants were built, each naming the
    node and variant (on stderr, so that `-o json` output stays parseable)."""
    for warning in item.warnings:
        click.secho("warning: ", fg="yellow", bold=True, err=True, nl=False)
        click.echo(str(warning), err=True)


@cli.command()
@FILES
@click.option(
    "--schema-only",
    is_flag=True,
    help="Import nothing and call no factory: check the manifests and data sets against the "
    "resources' schema and the matrix rules only. Use it for manifests you do not trust.",
)
def validate(files: tuple[str, ...], schema_only: bool) -> None:
    """Check manifests without running cells. By default this imports your workflow's code
    (the graph factory, the variants, the evaluators) and calls its factories, as `wtb run`
    does: use --schema-only for untrusted manifests."""
    from wtb.variant_matrix import fixed_label

    if schema_only:
        _validate_schema_only(files)
        return
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


def _validate_schema_only(files: tuple[str, ...]) -> None:
    from wtb.cli.schema_check import check_without_code
    from wtb.manifests import load_manifests
    from wtb.variant_matrix import fixed_label

    try:
        # Not through wtb.pipeline: it loads LangGraph, and nothing here needs it.
        manifests = load_manifests(list(files))
        checked = check_without_code(manifests)
    except WtbError as exc:
        _fail(exc)
    for (ns, wf_name), _ in manifests.workflows.items():
        click.echo(f"ok  Workflow {ns}/{wf_name} (schema only: its code was not imported)")
    for item in checked:
        plan = item.plan
        click.echo(
            f"ok  BatchTest {item.batch.metadata.namespace}/{item.batch.metadata.name}: "
            f"{len(plan.combinations)} combinations x {len(plan.cases)} cases"
            f" x {plan.repeats} repeats = {plan.total} cells"
            + (f"; in every cell: {fixed}" if (fixed := fixed_label(item.batch.spec)) else "")
            + " (schema only)"
        )
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
@click.option(
    "--failures",
    "with_failures",
    is_flag=True,
    help="Why cells failed instead of the matrix: failed cells grouped per combination by "
    "error, node and first line of the message, each with an example and its traceback.",
)
@click.option(
    "--cases",
    "by_case",
    is_flag=True,
    help="Case by case instead of the matrix: each combination's outcome per case, the "
    "flips against the baseline, flaky cases and evaluator errors.",
)
@click.option("--flipped", is_flag=True, help="With --cases: only the cases a candidate flipped.")
@DATABASE
@OUTPUT
def results(
    name: str | None,
    namespace: str | None,
    run_key: str | None,
    with_cells: bool,
    with_failures: bool,
    by_case: bool,
    flipped: bool,
    database: str | None,
    output: str,
) -> None:
    """Print a stored run's matrix (the newest run of NAME), or list the runs."""
    from rich.console import Console

    from wtb.cli.render import as_data, cells_data, dump, matrix_table, progress_data
    from wtb.comparison.stored import matrix_for_run
    from wtb.runs.record import recorded_spec
    from wtb.settings import get_settings
    from wtb.storage import ResultStore, default_sqlite_url
    from wtb.variant_matrix import baseline_of

    try:
        url = database or get_settings().database_url or default_sqlite_url()
        with ResultStore.open_for_reading(url) as store:
            if run_key:
                found = store.get_run(run_key)
                runs = [found] if found else []
            else:
                runs = store.find_runs(namespace=namespace, name=name)
            if not runs:
                click.echo("no stored run matches", err=True)
                sys.exit(ExitCode.INCOMPLETE)
            if name is None and run_key is None:
                _list_runs(store, runs)
                return
            chosen = runs[0]
            if with_failures:
                _show_failures(store, chosen, output)
                return
            spec = recorded_spec(chosen).batch
            if by_case or flipped:
                _print_cases(store, chosen, output, flipped=flipped)
                return
            matrix = matrix_for_run(store, chosen.id, spec, baseline_of(spec))
            p = store.progress(chosen.id)
            for warning in matrix.warnings:
                click.secho("warning: ", fg="yellow", bold=True, err=True, nl=False)
                click.echo(f"{chosen.name}: {warning}", err=True)
            if output == "table":
                Console(stderr=True).print(
                    f"run {chosen.run_key}: {p.done}/{p.total} cells, {p.failed} failed"
                    + (f", {p.interrupted} interrupted" if p.interrupted else "")
                )
                console = _console()
                console.print(matrix_table(chosen.name, matrix, console.width))
            else:
                reused = store.reused_span(chosen.id).cells
                document = as_data(chosen.name, chosen.run_key, matrix, progress_data(p, reused))
                if with_cells:
                    document["cells"] = cells_data(
                        store.iter_cells(chosen.id), store.root_run_ids(chosen.id)
                    )
                click.echo(dump([document], output))
    except WtbError as exc:
        _fail(exc)


def _list_runs(store: Any, runs: list[Any]) -> None:
    """The runs, one a line, their cells counted truthfully (ok, failed, interrupted)."""
    from wtb.cli.render import run_line

    for r in runs:
        click.echo(run_line(r, store.progress(r.id)))


def _print_failures(err: Any, store: Any, run_id: int, failed: int) -> None:
    """After a run's counts (table output): its failure groups, on stderr."""
    if not failed:
        return
    from rich.console import Console

    from wtb.cli.render import failures_table
    from wtb.comparison.failures import failure_summary

    # Wide when stderr is a file or a pipe (a CI log), so messages are not folded.
    console = err if err.is_terminal else Console(stderr=True, width=240)
    console.print(failures_table(failure_summary(store, run_id)))


def _with_failures(document: dict[str, Any], store: Any, run_id: int) -> dict[str, Any]:
    """A run's -o json/yaml document with its failure groups under `failures`."""
    from wtb.cli.render import failures_data
    from wtb.comparison.failures import failure_summary

    document["failures"] = failures_data(failure_summary(store, run_id))
    return document


def _show_failures(store: Any, run: Any, output: str) -> None:
    """`wtb results NAME --failures`: the groups, then each example's traceback (table),
    or the groups as data."""
    from wtb.cli.render import (
        dump,
        failure_examples,
        failures_data,
        failures_table,
        progress_data,
    )
    from wtb.comparison.failures import failure_summary

    summary = failure_summary(store, run.id)
    p = store.progress(run.id)
    if output != "table":
        document = {
            "batchTest": run.name,
            "run": run.run_key,
            "progress": progress_data(p, store.reused_span(run.id).cells),
            "failures": failures_data(summary),
        }
        click.echo(dump([document], output))
        return
    click.echo(
        f"run {run.run_key}: {p.done}/{p.total} cells, {p.failed} failed"
        + (f", {p.interrupted} interrupted (not failures)" if p.interrupted else ""),
        err=True,
    )
    if not summary.groups:
        click.echo("no failed cells")
        return
    console = _console()
    console.print(failures_table(summary))
    click.echo()
    click.echo(failure_examples(summary))


def _print_cases(store: Any, run: Any, output: str, *, flipped: bool) -> None:
    """`wtb results --cases`: the run case by case."""
    from wtb.cli.cases import cases_data, cases_table
    from wtb.cli.render import dump
    from wtb.comparison.cases import case_comparison_for_run
    from wtb.runs.record import recorded_spec
    from wtb.variant_matrix import baseline_of, expand_combinations

    spec = recorded_spec(run).batch
    comparison = case_comparison_for_run(
        store, run.id, spec, baseline_of(spec), expand_combinations(spec)
    )
    if output == "table":
        console = _console()
        console.print(cases_table(run.name, comparison, flipped=flipped))
    else:
        click.echo(dump([cases_data(run.name, run.run_key, comparison, flipped=flipped)], output))


def _store_url(database: str | None) -> str:
    from wtb.pipeline.local import database_url

    return database_url(database)


@cli.command()
@click.argument("name", required=False)
@click.option("-n", "--namespace", default=None, help="Namespace of the BatchTest.")
@click.option("--run", "run_key", default=None, help="A run key (as `wtb results` lists them).")
@click.option(
    "-o",
    "--output",
    "path",
    default="report.html",
    show_default=True,
    type=click.Path(dir_okay=False, writable=True),
    help="The HTML file to write (one file: scripts and styles inlined).",
)
@DATABASE
def report(
    name: str | None, namespace: str | None, run_key: str | None, path: str, database: str | None
) -> None:
    """Write a stored run's report (the newest run of NAME) as one self-contained HTML file."""
    from wtb.report.assets import environment, plotly_js
    from wtb.report.html import render_run
    from wtb.report.page import load_run_page
    from wtb.runs.lookup import find_run
    from wtb.storage import ResultStore

    if name is None and run_key is None:
        _fail(WtbError("name a BatchTest or give --run RUN_KEY (`wtb results` lists the runs)"))
    try:
        environment()
        plotly_js()
        with ResultStore.open_for_reading(_store_url(database)) as store:
            run = find_run(store, run_key or name or "", None if run_key else namespace)
            page = render_run(load_run_page(store, run))
        Path(path).write_text(page, encoding="utf-8")
    except WtbError as exc:
        _fail(exc)
    click.echo(f"wrote {path} (run {run.run_key})", err=True)


@cli.command()
@DATABASE
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
def view(database: str | None, host: str, port: int) -> None:
    """Serve the stored runs' reports locally (read-only) until Ctrl-C."""
    from wtb.report.assets import environment, plotly_js
    from wtb.report.server import ViewServer
    from wtb.storage import ResultStore
    from wtb.storage.engine import redact

    url = _store_url(database)
    try:
        environment()
        plotly_js()
        with ResultStore.open_for_reading(url) as store:
            server = ViewServer((host, port), store, database=redact(url), log_requests=True)
            bound_host, bound_port = server.server_address[:2]
            click.echo(f"serving {redact(url)} on http://{bound_host!s}:{bound_port}/", err=True)
            if host not in ("127.0.0.1", "localhost", "::1"):
                click.secho(
                    "warning: no authentication: anyone who reaches this address reads the runs",
                    fg="yellow",
                    err=True,
                )
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
            finally:
                server.server_close()
    except OSError as exc:
        _fail(WtbError(f"cannot listen on {host}:{port}: {exc}"))
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

    with ResultStore.open_for_reading(database_url(database)) as store:
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
    with ResultStore.open_for_reading(database_url(database)) as store:
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
