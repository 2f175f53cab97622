"""Ray runner throughput: WTB's RayRunner against hand-written Ray code and physical limits.

Everything runs in ONE private local Ray instance, started once (`ray_connection(None)`):

1. Trivial graph (`bench/trivial`): cells/s of `run_batch` with a RayRunner (fresh SQLite
   file each round) against a hand-written `ray.util.ActorPool` of the same number of
   actors, each compiling the graph once and calling `graph.invoke`, driven by
   `map_unordered` over the same inputs. Both sides start fresh actors every round; the
   start-up (run start -> first result) is reported apart, and every rate is given with
   and without it.
2. I/O-bound graph (`bench/io_bound`: a node awaits a 50 ms sleep, like an LLM call) at
   concurrency 64: cells/s against the physical limit concurrency / latency; for context,
   hand-written async actors with as many cells in flight, and a plain asyncio loop in
   this process (no Ray), whose CPU per cell shows what LangGraph alone costs.
3. The I/O-bound run recording into PostgreSQL through PgBouncer (transaction pooling)
   against the same run recording into SQLite, with the peak number of server
   connections to the run's database sampled from `pg_stat_activity` during the run.

Rounds are interleaved (baseline, candidate, ...); figures are medians (min-max).

    python bench/ray_throughput.py [--cells 2000] [--rounds 3] [--actors 2] [--quick]
                                   [--trivial-concurrency 2 4] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trivial_workload import (
    GRAPH_FACTORY,
    TRIVIAL_DIR,
    Spread,
    case_rows,
    check_complete,
    prepare_trivial,
    prepare_workload,
    table,
    write_cases,
)

BENCH_DIR = Path(__file__).resolve().parent
IO_DIR = BENCH_DIR / "io_bound"
IO_FACTORY = "io_graph:build_graph"
TESTS_DIR = BENCH_DIR.parent / "tests"

TRIVIAL_TARGET = 0.9
IO_TARGET = 0.8
IO_CONCURRENCY = 64
QUICK_CELLS = 500
SAMPLE_EVERY_S = 0.02


@dataclass(frozen=True)
class RunTiming:
    cells: int
    startup_s: float  # run start -> first result: actors started, graphs built, one cell
    total_s: float  # the whole run (for WTB: run_batch, recording included)

    @property
    def rate(self) -> float:
        """Cells/s including actor start-up."""
        return self.cells / self.total_s

    @property
    def steady_rate(self) -> float:
        """Cells/s once the first result is in (actor start-up excluded)."""
        return (self.cells - 1) / (self.total_s - self.startup_s)


# -- hand-written baselines ----------------------------------------------------------------


class PlainGraphActor:
    """What a user would write: compile the graph once, `graph.invoke` per call."""

    def __init__(self, factory: str, directory: str) -> None:
        sys.path.insert(0, directory)
        from wtb.importing import import_object

        self._graph = import_object(factory, where="bench")().compile()

    def ready(self) -> int:
        return os.getpid()

    def invoke(self, inputs: dict[str, Any]) -> Any:
        return self._graph.invoke(inputs)


class PlainAsyncGraphActor:
    """The async counterpart: an async actor awaiting `graph.ainvoke` per call."""

    def __init__(self, factory: str, directory: str) -> None:
        sys.path.insert(0, directory)
        from wtb.importing import import_object

        self._graph = import_object(factory, where="bench")().compile()

    async def ready(self) -> int:
        return os.getpid()

    async def ainvoke(self, inputs: dict[str, Any]) -> Any:
        return await self._graph.ainvoke(inputs)


def actor_cpus(actors: int) -> float:
    """The CPUs WTB's runner reserves per actor, so both sides are scheduled alike."""
    from wtb.runners.ray_runner import cluster_cpus

    return min(1.0, cluster_cpus() / actors)


def start_actors(
    cls: type, count: int, factory: str, directory: Path, max_concurrency: int = 1
) -> list[Any]:
    import ray

    remote: Any = ray.remote  # its stubs lack the actor options used here
    actor_class = remote(num_cpus=actor_cpus(count), max_concurrency=max_concurrency)(cls)
    handles = [actor_class.remote(factory, str(directory)) for _ in range(count)]
    ray.get([h.ready.remote() for h in handles])
    return handles


def stop_actors(handles: list[Any]) -> None:
    import ray

    for handle in handles:
        ray.kill(handle, no_restart=True)


def time_actor_pool(actors: int, inputs: list[dict[str, Any]]) -> RunTiming:
    """ActorPool.map_unordered over the inputs, one call in flight per actor."""
    from ray.util import ActorPool

    gc.collect()
    started = time.perf_counter()
    handles = start_actors(PlainGraphActor, actors, GRAPH_FACTORY, TRIVIAL_DIR)
    pool = ActorPool(handles)
    first = 0.0
    for _ in pool.map_unordered(lambda actor, item: actor.invoke.remote(item), inputs):
        first = first or time.perf_counter()
    finished = time.perf_counter()
    stop_actors(handles)
    return RunTiming(len(inputs), first - started, finished - started)


def time_async_actors(actors: int, concurrency: int, inputs: list[dict[str, Any]]) -> RunTiming:
    """Async actors keeping `concurrency` calls in flight in all, spread round-robin."""
    import ray

    gc.collect()
    started = time.perf_counter()
    slots = -(-concurrency // actors)
    handles = start_actors(PlainAsyncGraphActor, actors, IO_FACTORY, IO_DIR, slots)
    pending = iter(enumerate(inputs))
    in_flight: list[Any] = []
    first = 0.0
    while True:
        while len(in_flight) < concurrency:
            item = next(pending, None)
            if item is None:
                break
            in_flight.append(handles[item[0] % actors].ainvoke.remote(item[1]))
        if not in_flight:
            break
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        ray.get(ready)
        first = first or time.perf_counter()
    finished = time.perf_counter()
    stop_actors(handles)
    return RunTiming(len(inputs), first - started, finished - started)


def time_local_asyncio(concurrency: int, inputs: list[dict[str, Any]]) -> tuple[RunTiming, float]:
    """No Ray: `graph.ainvoke` in this process, `concurrency` at once. Returns the timing
    and the process's CPU seconds per cell (what LangGraph itself costs per cell)."""
    from wtb.importing import import_object

    graph = import_object(IO_FACTORY, where="bench")().compile()

    async def run_all() -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(item: dict[str, Any]) -> None:
            async with gate:
                await graph.ainvoke(item)

        await asyncio.gather(*(one(item) for item in inputs))

    gc.collect()
    cpu = time.process_time()
    started = time.perf_counter()
    asyncio.run(run_all())
    total = time.perf_counter() - started
    return RunTiming(len(inputs), 0.0, total), (time.process_time() - cpu) / len(inputs)


# -- WTB ------------------------------------------------------------------------------------


class FirstResultClock:
    """A runner around another that notes when the run starts and its first result comes.

    RayRunner starts its actors when its iterator is first advanced, so the time to the
    first result is the actors' start-up (and one cell).
    """

    name = "ray"

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.started = 0.0
        self.first = 0.0

    def run(self, job: Any, cells: Iterable[Any], bus: Any) -> Iterator[Any]:
        self.started = time.perf_counter()
        results = self._inner.run(job, cells, bus)
        try:
            for result in results:
                self.first = self.first or time.perf_counter()
                yield result
        finally:
            results.close()


def time_wtb(
    prepared: Any,
    url: str,
    concurrency: int,
    actors: int,
    during: AbstractContextManager[Any] | None = None,
) -> RunTiming:
    """run_batch with a RayRunner into the store at `url` (opened, and migrated, untimed).

    `during` wraps the timed part (the connection sampler of part 3).
    """
    from wtb.pipeline.execute import run_batch
    from wtb.runners.ray_runner import RayRunner
    from wtb.settings import get_settings
    from wtb.storage import ResultStore

    settings = get_settings()
    clock = FirstResultClock(RayRunner(concurrency, actors=actors))
    with ResultStore.open(url) as store:
        gc.collect()
        with during or nullcontext():
            started = time.perf_counter()
            outcome = run_batch(
                prepared,
                store,
                clock,
                flush_every=settings.flush_every,
                flush_seconds=settings.flush_seconds,
            )
            finished = time.perf_counter()
        check_complete(store, outcome, prepared.plan.total)
    return RunTiming(outcome.recorded_now, clock.first - started, finished - started)


# -- PostgreSQL -------------------------------------------------------------------------------


class ConnectionSampler:
    """Samples, in a thread, how many server connections a database has (this sampler's
    own excluded; it connects to the `postgres` database directly, not through PgBouncer)."""

    def __init__(self, port: int, dbname: str) -> None:
        self._port = port
        self._dbname = dbname
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="pg-sampler", daemon=True)
        self.peak = 0
        self.samples = 0

    def _sample(self) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self._port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            query = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()"
            )
            while True:
                row = conn.execute(query, (self._dbname,)).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                self.samples += 1
                if self._stop.wait(SAMPLE_EVERY_S):
                    return

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_postgres() -> Any:
    """PostgreSQL + PgBouncer (transaction pooling, pool size 4) from the test services."""
    from wtb.importing import import_object

    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    return import_object("services.postgres:start_services", where="bench")()


# -- the three parts --------------------------------------------------------------------------


def rate_cells(runs: list[RunTiming]) -> list[str]:
    """Start-up, rate including it and rate excluding it, as table cells."""
    return [
        Spread.of([r.startup_s * 1000 for r in runs]).show(".0f"),
        Spread.of([r.rate for r in runs]).show(".0f"),
        Spread.of([r.steady_rate for r in runs]).show(".0f"),
    ]


def baseline_row(label: str, bases: list[RunTiming]) -> list[str]:
    return [label, *rate_cells(bases), "1", "1"]


def ratio_row(label: str, runs: list[RunTiming], bases: list[RunTiming]) -> list[str]:
    return [
        label,
        *rate_cells(runs),
        Spread.of([r.rate / b.rate for r, b in zip(runs, bases, strict=True)]).show(),
        Spread.of([r.steady_rate / b.steady_rate for r, b in zip(runs, bases, strict=True)]).show(),
    ]


RATIO_HEADERS = [
    "",
    "start-up ms",
    "cells/s incl. start-up",
    "cells/s excl. start-up",
    "ratio incl.",
    "ratio excl.",
]


def trivial_part(args: argparse.Namespace, workdir: Path) -> None:
    n = args.cells
    inputs = [row["inputs"] for row in case_rows(n)]
    cases_file = write_cases(workdir / "trivial.jsonl", n)
    prepared = {c: prepare_trivial(cases_file, concurrency=c) for c in args.trivial_concurrency}
    time_actor_pool(args.actors, inputs[:200])  # warm-up: first imports, first actors
    warm = prepare_trivial(write_cases(workdir / "warm.jsonl", 200))
    time_wtb(warm, f"sqlite:///{workdir / 'warm.db'}", args.actors, args.actors)

    bases: list[RunTiming] = []
    runs: dict[int, list[RunTiming]] = {c: [] for c in args.trivial_concurrency}
    for r in range(args.rounds):
        for c in args.trivial_concurrency:
            bases.append(time_actor_pool(args.actors, inputs))
            url = f"sqlite:///{workdir / f'trivial-r{r}c{c}.db'}"
            runs[c].append(time_wtb(prepared[c], url, c, args.actors))
        print(f"trivial: round {r + 1}/{args.rounds} done", flush=True)

    print(
        f"\n1. Trivial graph on Ray: {n} cells, {args.actors} actors on both sides, "
        f"{args.rounds} rounds; median (min-max). Ratios are WTB / ActorPool of the same round."
    )
    per_setting = len(args.trivial_concurrency)
    rows = [baseline_row("hand-written ActorPool (1 call in flight per actor)", bases)]
    for i, c in enumerate(args.trivial_concurrency):
        mine = bases[i::per_setting]
        rows.append(ratio_row(f"WTB RayRunner via run_batch, concurrency {c}", runs[c], mine))
    print(table(RATIO_HEADERS, rows))
    print(
        "start-up = run start to first result (actors started, graph built, one cell); "
        "'excl.' rates count from the first result on."
    )
    for c in args.trivial_concurrency:
        mine = bases[args.trivial_concurrency.index(c) :: per_setting]
        steady = Spread.of(
            [r.steady_rate / b.steady_rate for r, b in zip(runs[c], mine, strict=True)]
        )
        whole = Spread.of([r.rate / b.rate for r, b in zip(runs[c], mine, strict=True)])
        verdict = "meets" if steady.median >= TRIVIAL_TARGET else "BELOW"
        print(
            f"target ratio >= {TRIVIAL_TARGET}: concurrency {c}: {steady.median:.2f} excl. "
            f"start-up ({verdict}), {whole.median:.2f} incl. start-up"
        )


def io_part(args: argparse.Namespace, workdir: Path) -> None:
    from wtb.importing import import_object

    n = args.cells
    latency_s: float = import_object("io_graph:LATENCY_S", where="bench")
    limit = IO_CONCURRENCY / latency_s
    inputs = [row["inputs"] for row in case_rows(n)]
    prepared = prepare_workload(
        IO_DIR, write_cases(workdir / "io.jsonl", n), concurrency=IO_CONCURRENCY
    )
    warm = prepare_workload(
        IO_DIR, write_cases(workdir / "io-warm.jsonl", 200), concurrency=IO_CONCURRENCY
    )
    time_async_actors(args.actors, IO_CONCURRENCY, inputs[:200])
    time_wtb(warm, f"sqlite:///{workdir / 'io-warm.db'}", IO_CONCURRENCY, args.actors)

    local: list[RunTiming] = []
    cpu_per_cell: list[float] = []
    hand: list[RunTiming] = []
    runs: list[RunTiming] = []
    for r in range(args.rounds):
        timing, cpu_s = time_local_asyncio(IO_CONCURRENCY, inputs)
        local.append(timing)
        cpu_per_cell.append(cpu_s * 1e6)
        hand.append(time_async_actors(args.actors, IO_CONCURRENCY, inputs))
        url = f"sqlite:///{workdir / f'io-r{r}.db'}"
        runs.append(time_wtb(prepared, url, IO_CONCURRENCY, args.actors))
        print(f"I/O-bound: round {r + 1}/{args.rounds} done", flush=True)

    print(
        f"\n2. I/O-bound graph ({latency_s * 1000:.0f} ms per cell) on Ray: {n} cells, "
        f"concurrency {IO_CONCURRENCY}, {args.actors} actors, {args.rounds} rounds; "
        f"ratios against the physical limit {IO_CONCURRENCY} / {latency_s:g} s = "
        f"{limit:.0f} cells/s"
    )
    rows = []
    for label, timings in (
        (f"no Ray: asyncio in one process, {IO_CONCURRENCY} at once", local),
        (f"hand-written async actors, {IO_CONCURRENCY} in flight", hand),
        ("WTB RayRunner via run_batch (SQLite)", runs),
    ):
        rows.append(
            [
                label,
                Spread.of([t.startup_s * 1000 for t in timings]).show(".0f"),
                Spread.of([t.rate for t in timings]).show(".0f"),
                Spread.of([t.steady_rate for t in timings]).show(".0f"),
                Spread.of([t.rate / limit for t in timings]).show(),
                Spread.of([t.steady_rate / limit for t in timings]).show(),
            ]
        )
    print(table(RATIO_HEADERS, rows))
    cpu = Spread.of(cpu_per_cell)
    print(
        f"LangGraph's own CPU per cell (no Ray, one process): {cpu.show('.0f')} us: "
        f"{IO_CONCURRENCY} / {latency_s:g} s = {limit:.0f} cells/s would need "
        f"{limit * cpu.median / 1e6:.1f} CPUs for the graph alone ({os.cpu_count()} here)"
    )
    steady = Spread.of([t.steady_rate / limit for t in runs]).median
    whole = Spread.of([t.rate / limit for t in runs]).median
    verdict = "meets" if steady >= IO_TARGET else "BELOW"
    print(
        f"target >= {IO_TARGET} of the limit: WTB {steady:.2f} excl. start-up ({verdict}), "
        f"{whole:.2f} incl. start-up"
    )


def postgres_part(args: argparse.Namespace, workdir: Path) -> None:
    n = args.cells
    prepared = prepare_workload(
        IO_DIR, write_cases(workdir / "pg.jsonl", n), concurrency=IO_CONCURRENCY
    )
    services = start_postgres()
    try:
        port = services.postgres.port
        services.create_database("bench_warm")
        warm_cases = write_cases(workdir / "pg-warm.jsonl", 200)
        warm = prepare_workload(IO_DIR, warm_cases, concurrency=IO_CONCURRENCY)
        warm_url = services.url("bench_warm", through_pgbouncer=True)
        time_wtb(warm, warm_url, IO_CONCURRENCY, args.actors)
        lite: list[RunTiming] = []
        pg: list[RunTiming] = []
        peaks: list[int] = []
        for r in range(args.rounds):
            name = f"bench_r{r}"
            services.create_database(name)
            sampler = ConnectionSampler(port, name)
            for side in ("sqlite", "postgres") if r % 2 == 0 else ("postgres", "sqlite"):
                if side == "sqlite":
                    url = f"sqlite:///{workdir / f'pg-lite-r{r}.db'}"
                    lite.append(time_wtb(prepared, url, IO_CONCURRENCY, args.actors))
                else:
                    url = services.url(name, through_pgbouncer=True)
                    pg.append(time_wtb(prepared, url, IO_CONCURRENCY, args.actors, sampler))
            peaks.append(sampler.peak)
            services.drop_database(name)
            print(f"PostgreSQL: round {r + 1}/{args.rounds} done", flush=True)
    finally:
        services.stop()

    print(
        f"\n3. I/O-bound graph on Ray, recording into PostgreSQL through PgBouncer "
        f"(transaction pooling, pool size {services.pgbouncer.pool_size}) vs SQLite: "
        f"{n} cells, concurrency {IO_CONCURRENCY}, {args.actors} actors, {args.rounds} rounds"
    )
    rows = [
        baseline_row("WTB RayRunner, SQLite", lite),
        ratio_row("WTB RayRunner, PostgreSQL via PgBouncer", pg, lite),
    ]
    print(table(RATIO_HEADERS, rows))
    print(
        f"peak server connections to the run's database (pg_stat_activity, every "
        f"{SAMPLE_EVERY_S * 1000:.0f} ms, sampler excluded): {Spread.of(peaks).show('.0f')}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--cells", type=int, default=2000, help="cells (cases) per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors on every side")
    parser.add_argument(
        "--trivial-concurrency",
        type=int,
        nargs="+",
        help="RayRunner concurrency for the trivial graph [default: 1 and 2 cells per actor]",
    )
    parser.add_argument("--skip-postgres", action="store_true", help="leave out part 3")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_CELLS} cells, 2 rounds (a smoke run)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.rounds = QUICK_CELLS, min(args.rounds, 2)
    args.trivial_concurrency = args.trivial_concurrency or [args.actors, 2 * args.actors]
    sys.path.insert(0, str(IO_DIR))

    from wtb.runners.ray_session import ray_connection

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wtb-bench-") as tmp, ray_connection(None):
        workdir = Path(tmp)
        print(f"local Ray up in {time.perf_counter() - started:.1f} s", flush=True)
        trivial_part(args, workdir)
        io_part(args, workdir)
        if not args.skip_postgres:
            postgres_part(args, workdir)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
