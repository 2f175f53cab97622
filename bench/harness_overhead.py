"""Harness overhead: WTB's inline runner against a plain loop of `graph.invoke`.

Both sides run the same trivial three-node graph over the same inputs. The baseline is
what a user would write by hand: compile once, `graph.invoke(inputs)` in a loop. The
candidate is the public engine API as `wtb run` uses it: prepare -> ResultStore.open (a
fresh SQLite file each round) -> run_batch with an InlineRunner, so it also streams the
plan, scores every cell (exactMatch), and records cells, attempts and audit events.

Measurements are interleaved (baseline, candidate, baseline, candidate, ...) and every
figure is a ratio against the baseline run just before it: this machine is noisy.

    python bench/harness_overhead.py [--cells 2000] [--rounds 5] [--concurrency 1 2 4]
    python bench/harness_overhead.py --profile    # where a WTB run spends its time
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trivial_workload import (
    Spread,
    case_rows,
    check_complete,
    compiled_graph,
    prepare_trivial,
    table,
    write_cases,
)

TARGET_RATIO = 0.8
NOISE = 0.05


@dataclass(frozen=True)
class WtbTiming:
    setup_s: float  # prepare + ResultStore.open (schema migration on a fresh file)
    run_s: float  # run_batch: the cells, scored and recorded


def time_baseline(graph: Any, inputs: list[dict[str, Any]]) -> float:
    gc.collect()
    started = time.perf_counter()
    for item in inputs:
        graph.invoke(item)
    return time.perf_counter() - started


def time_wtb(cases_file: Path, workdir: Path, concurrency: int, tag: str) -> WtbTiming:
    from wtb.pipeline.execute import run_batch
    from wtb.runners import InlineRunner
    from wtb.settings import get_settings
    from wtb.storage import ResultStore

    settings = get_settings()
    url = f"sqlite:///{workdir / f'{tag}.db'}"
    gc.collect()
    started = time.perf_counter()
    prepared = prepare_trivial(cases_file, concurrency=concurrency)
    with ResultStore.open(url) as store:
        opened = time.perf_counter()
        outcome = run_batch(
            prepared,
            store,
            InlineRunner(concurrency),
            flush_every=settings.flush_every,
            flush_seconds=settings.flush_seconds,
        )
        finished = time.perf_counter()
        check_complete(store, outcome, prepared.plan.total)
    return WtbTiming(setup_s=opened - started, run_s=finished - opened)


def time_thread_hop(graph: Any, inputs: list[dict[str, Any]]) -> float:
    """The plain loop, but each invoke handed to a one-thread pool and waited for."""
    with ThreadPoolExecutor(1) as pool:
        gc.collect()
        started = time.perf_counter()
        for item in inputs:
            pool.submit(graph.invoke, item).result()
        return time.perf_counter() - started


def time_asyncio_hop(graph: Any, inputs: list[dict[str, Any]]) -> float:
    """The plain loop as an asyncio task awaiting run_in_executor (how graphs with async
    parts hand sync work to threads; sync-only graphs no longer pay it)."""

    async def loop_over(pool: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        for item in inputs:
            await loop.run_in_executor(pool, graph.invoke, item)

    with ThreadPoolExecutor(1) as pool:
        gc.collect()
        started = time.perf_counter()
        asyncio.run(loop_over(pool))
        return time.perf_counter() - started


def time_runner_only(prepared: Any, concurrency: int, sink: list[Any] | None = None) -> float:
    """The inline runner and cell executor alone (graph, scoring, events): no store."""
    from wtb.events import EventBus
    from wtb.runners import InlineRunner

    bus = EventBus()
    if sink is not None:
        bus.subscribe(sink.append)
    gc.collect()
    started = time.perf_counter()
    for result in InlineRunner(concurrency).run(prepared.job, prepared.plan.iter_cells(), bus):
        if sink is not None:
            sink.append(result)
    return time.perf_counter() - started


def time_record_only(prepared: Any, workdir: Path, items: list[Any], tag: str) -> float:
    """ResultStore.record alone: the same results and events, in the writer's batch size."""
    from wtb.events import Event
    from wtb.settings import get_settings
    from wtb.storage import ResultStore

    every = get_settings().flush_every
    results = [i for i in items if not isinstance(i, Event)]
    events = [i for i in items if isinstance(i, Event)]
    per_batch = max(1, len(events) // max(1, len(results) // every))
    with ResultStore.open(f"sqlite:///{workdir / f'{tag}.db'}") as store:
        run_id = store.begin_run(prepared.run_info).id
        gc.collect()
        started = time.perf_counter()
        for i, start in enumerate(range(0, len(results), every)):
            store.record(
                run_id,
                results[start : start + every],
                events[i * per_batch : (i + 1) * per_batch],
            )
        return time.perf_counter() - started


def breakdown(
    cases_file: Path, workdir: Path, graph: Any, inputs: list[dict[str, Any]], rounds: int
) -> None:
    """Where a cell's time goes, by taking parts away (no profiler distortion).

    Interleaved per round: the plain loop, the same loop with a thread hand-off per
    invoke (plain and through asyncio, as the runner hands sync graphs to its pool), the
    runner alone, the store alone (recording the runner's results), and the whole
    run_batch; all at concurrency 1.
    """
    n = len(inputs)
    prepared = prepare_trivial(cases_file, concurrency=1)
    parts: dict[str, list[float]] = {
        "loop": [],
        "hop": [],
        "asyncio": [],
        "runner": [],
        "record": [],
        "run_batch": [],
    }
    for r in range(rounds):
        parts["loop"].append(time_baseline(graph, inputs) / n * 1e6)
        parts["hop"].append(time_thread_hop(graph, inputs) / n * 1e6)
        parts["asyncio"].append(time_asyncio_hop(graph, inputs) / n * 1e6)
        items: list[Any] = []
        parts["runner"].append(time_runner_only(prepared, 1, items) / n * 1e6)
        parts["record"].append(time_record_only(prepared, workdir, items, f"rec{r}") / n * 1e6)
        parts["run_batch"].append(time_wtb(cases_file, workdir, 1, f"bd{r}").run_s / n * 1e6)
    loop = Spread.of(parts["loop"]).median
    rows: list[list[str]] = []
    labels = {
        "loop": "plain loop of graph.invoke",
        "hop": "  same, each invoke via a 1-thread pool",
        "asyncio": "  same, asyncio + run_in_executor",
        "runner": "InlineRunner alone (no store)",
        "record": "ResultStore.record alone",
        "run_batch": "run_batch (everything)",
    }
    for key, label in labels.items():
        spread = Spread.of(parts[key])
        rows.append([label, spread.show(".0f"), f"{spread.median - loop:+.0f}"])
    print(f"\nBreakdown at concurrency 1, {n} cells, {rounds} rounds; microseconds per cell")
    print(table(["", "us/cell median (min-max)", "vs loop"], rows))
    med = {key: Spread.of(values).median for key, values in parts.items()}
    coupling = med["run_batch"] - med["runner"] - med["record"]
    print(
        "run_batch - runner - record = coupling (plan lookups, writer, thread hand-offs): "
        f"{coupling:+.0f} us/cell"
    )


def profile_wtb(cases_file: Path, workdir: Path, concurrency: int, top: int) -> None:
    """cProfile one WTB run in every thread (runner loop, cell workers, writer, caller).

    Python 3.11 profiles one thread per profiler, so each thread started during the run
    gets its own (threading.setprofile), and their statistics are merged. Times are each
    thread's CPU time (time.thread_time): waiting on a lock or a queue does not count.
    """
    profilers: list[cProfile.Profile] = []

    def start_in_thread(frame: Any, event: str, arg: Any) -> None:
        profiler = cProfile.Profile(time.thread_time)
        profilers.append(profiler)
        profiler.enable()

    main_profiler = cProfile.Profile(time.thread_time)
    threading.setprofile(start_in_thread)
    main_profiler.enable()
    try:
        timing = time_wtb(cases_file, workdir, concurrency, "profile")
    finally:
        main_profiler.disable()
        threading.setprofile(None)
    stats = pstats.Stats(main_profiler)
    for profiler in profilers:
        stats.add(profiler)
    print(
        f"profiled run: {timing.run_s:.2f} s in run_batch (slowed by profiling), "
        f"{len(profilers)} threads besides the caller's"
    )
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats(order).print_stats(top)
        print(f"\n--- cProfile, all threads merged, sorted by {order} ---")
        print(out.getvalue().split("\n\n", 1)[-1].rstrip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--cells", type=int, default=2000, help="cells (cases) per run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: a breakdown by parts (at concurrency 1), then cProfile of one run",
    )
    parser.add_argument("--top", type=int, default=25, help="rows of the profile to print")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="wtb-bench-") as tmp:
        workdir = Path(tmp)
        cases_file = write_cases(workdir / "cases.jsonl", args.cells)
        inputs = [row["inputs"] for row in case_rows(args.cells)]
        graph = compiled_graph()
        if args.profile:
            warm_up(graph, inputs, workdir)
            breakdown(cases_file, workdir, graph, inputs, args.rounds)
            profile_wtb(cases_file, workdir, args.concurrency[0], args.top)
            return
        run_rounds(args, workdir, cases_file, graph, inputs)


def warm_up(graph: Any, inputs: list[dict[str, Any]], workdir: Path) -> None:
    """First imports, first compile, first SQLite file: kept out of every figure."""
    time_baseline(graph, inputs[:200])
    time_wtb(write_cases(workdir / "warm.jsonl", 200), workdir, 1, "warm")


def run_rounds(
    args: argparse.Namespace,
    workdir: Path,
    cases_file: Path,
    graph: Any,
    inputs: list[dict[str, Any]],
) -> None:
    n = args.cells
    warm_up(graph, inputs, workdir)

    base_rates: list[float] = []
    rates: dict[int, list[float]] = {c: [] for c in args.concurrency}
    ratios: dict[int, list[float]] = {c: [] for c in args.concurrency}
    e2e_ratios: dict[int, list[float]] = {c: [] for c in args.concurrency}
    setups: list[float] = []
    for r in range(args.rounds):
        # Rotate the order of the concurrency settings so none always follows another.
        order = (
            args.concurrency[r % len(args.concurrency) :]
            + args.concurrency[: r % len(args.concurrency)]
        )
        for c in order:
            base = n / time_baseline(graph, inputs)
            timing = time_wtb(cases_file, workdir, c, f"r{r}c{c}")
            rate = n / timing.run_s
            e2e = n / (timing.setup_s + timing.run_s)
            base_rates.append(base)
            rates[c].append(rate)
            ratios[c].append(rate / base)
            e2e_ratios[c].append(e2e / base)
            setups.append(timing.setup_s * 1000)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    print(
        f"\nHarness overhead: {n} cells (1 combination x {n} cases x 1 repeat, exactMatch), "
        f"{args.rounds} interleaved rounds; median (min-max)"
    )
    rows = [["plain loop of graph.invoke", Spread.of(base_rates).show(".0f"), "1", "-"]]
    for c in args.concurrency:
        rows.append(
            [
                f"WTB inline, concurrency {c}",
                Spread.of(rates[c]).show(".0f"),
                Spread.of(ratios[c]).show(),
                Spread.of(e2e_ratios[c]).show(),
            ]
        )
    print(
        table(
            ["", "cells/s (run_batch)", "ratio vs loop", "ratio incl. prepare+open"],
            rows,
        )
    )
    print(
        f"\nprepare + ResultStore.open (fresh SQLite, migrations): "
        f"{Spread.of(setups).show('.0f')} ms per run"
    )
    print(
        f"targets: ratio >= {TARGET_RATIO} (run_batch against the plain loop), and on this "
        f"CPU-bound graph no concurrency slower than 1 (beyond {NOISE:.0%} noise)"
    )
    one = Spread.of(ratios[min(args.concurrency)]).median
    for c in args.concurrency:
        median = Spread.of(ratios[c]).median
        verdict = "meets" if median >= TARGET_RATIO else "BELOW"
        slower = " SLOWER than the lowest concurrency" if median < one * (1 - NOISE) else ""
        print(f"  concurrency {c}: {median:.2f} {verdict} the target{slower}")


if __name__ == "__main__":
    main()
