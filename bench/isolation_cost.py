"""Cost of `isolation: cell`: the trivial batch with the graph built once per process
(`shared`) against built for every cell attempt (`cell`: factory called, variants resolved,
graph compiled again each time).

Both run through the public engine API (prepare -> ResultStore.open on a fresh SQLite file
-> run_batch, InlineRunner), interleaved round by round; the table gives cells/s of each
and the extra time per cell of `cell`. The graph build alone (`VariantGraphs.fresh`) is
timed too: the part of the extra that the user's graph size decides.

    python bench/isolation_cost.py [--cells 1000] [--rounds 5] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from trivial_workload import Spread, check_complete, prepare_trivial, table, write_cases


def time_run(cases_file: Path, workdir: Path, isolation: str, concurrency: int, tag: str) -> float:
    from wtb.pipeline.execute import run_batch
    from wtb.runners import InlineRunner
    from wtb.storage import ResultStore

    prepared = prepare_trivial(cases_file, concurrency=concurrency)
    batch = dataclasses.replace(
        prepared.job, batch=prepared.job.batch.model_copy(update={"isolation": isolation})
    )
    prepared = dataclasses.replace(prepared, job=batch)
    with ResultStore.open(f"sqlite:///{workdir / f'{tag}.db'}") as store:
        gc.collect()
        started = time.perf_counter()
        outcome = run_batch(prepared, store, InlineRunner(concurrency))
        elapsed = time.perf_counter() - started
        check_complete(store, outcome, prepared.plan.total)
    return elapsed


def time_build(cases_file: Path, builds: int) -> float:
    """Seconds per `VariantGraphs.fresh` of the trivial graph's one combination."""
    from wtb.graphs import VariantGraphs

    prepared = prepare_trivial(cases_file)
    graphs = VariantGraphs(prepared.job.workflow)
    combination: Any = prepared.plan.combinations[0]
    graphs.fresh(combination)
    started = time.perf_counter()
    for _ in range(builds):
        graphs.fresh(combination)
    return (time.perf_counter() - started) / builds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cases = write_cases(workdir / "cases.jsonl", args.cells)
        time_run(cases, workdir, "shared", args.concurrency, "warm")
        seconds: dict[str, list[float]] = {"shared": [], "cell": []}
        for r in range(args.rounds):
            for isolation, times in seconds.items():
                times.append(
                    time_run(cases, workdir, isolation, args.concurrency, f"{isolation}{r}")
                )
        build = time_build(cases, 200)
    extra = [
        (c - s) / args.cells * 1000 for s, c in zip(seconds["shared"], seconds["cell"], strict=True)
    ]
    rows = [
        [iso, Spread.of([args.cells / t for t in ts]).show(".0f")] for iso, ts in seconds.items()
    ]
    print(f"{args.cells} cells, concurrency {args.concurrency}, {args.rounds} rounds")
    print(table(["isolation", "cells/s"], rows))
    print(f"extra per cell with `cell`: {Spread.of(extra).show('.2f')} ms")
    print(f"one graph build (VariantGraphs.fresh): {build * 1000:.2f} ms")


if __name__ == "__main__":
    main()
