"""Driver memory: peak RSS of the process running a batch, as the batch grows 10x.

Each size runs in a fresh subprocess (peak RSS only grows, so sizes must not share a
process): the trivial graph through the public engine API (prepare -> ResultStore.open
on a fresh SQLite file -> run_batch, InlineRunner), then ru_maxrss of that process. A
setup-only child (prepare and open, no cell) measured in the same run is the floor.

By default the data set stays the same (1,000 cases) and repeats make the cells: that
isolates what the engine keeps per cell (plan, results, events), which must be nothing.
With --grow cases the data set itself grows instead; cases are held in memory by design
(see wtb.dataset), so that growth is expected and reported separately.

    python bench/driver_memory.py [--quick] [--grow repeats|cases] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trivial_workload import prepare_trivial, table, write_cases

TARGET_GROWTH_MB = 50
FULL_SIZES = (10_000, 100_000)
QUICK_SIZES = (2_000, 20_000)
FIXED_CASES = 1_000


def child(cells: int, grow: str, concurrency: int) -> None:
    """Run one batch of `cells` cells (0: setup only) and print what it measured as JSON."""
    from wtb.pipeline.execute import run_batch
    from wtb.runners import InlineRunner
    from wtb.storage import ResultStore

    if grow == "repeats":
        cases, repeats = FIXED_CASES, max(1, cells // FIXED_CASES)
    else:
        cases, repeats = max(1, cells), 1
    with tempfile.TemporaryDirectory(prefix="wtb-bench-") as tmp:
        workdir = Path(tmp)
        prepared = prepare_trivial(
            write_cases(workdir / "cases.jsonl", cases), repeats=repeats, concurrency=concurrency
        )
        started = time.perf_counter()
        recorded = 0
        with ResultStore.open(f"sqlite:///{workdir / 'wtb.db'}") as store:
            if cells:
                recorded = run_batch(prepared, store, InlineRunner(concurrency)).recorded_now
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(
        json.dumps(
            {
                "cells": recorded,
                "cases": cases,
                "repeats": repeats,
                "peak_mb": peak_kb / 1024,
                "seconds": time.perf_counter() - started,
            }
        )
    )


def measure(cells: int, grow: str, concurrency: int) -> dict[str, float]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(cells),
        "--grow",
        grow,
        "--concurrency",
        str(concurrency),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child for {cells} cells failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    parser.add_argument("--grow", choices=["repeats", "cases"], default="repeats")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child, args.grow, args.concurrency)
        return

    small, large = QUICK_SIZES if args.quick else FULL_SIZES
    rows: list[list[str]] = []
    peaks: dict[int, float] = {}
    for cells in (0, small, large):
        found = measure(cells, args.grow, args.concurrency)
        peaks[cells] = found["peak_mb"]
        label = "setup only (prepare + open)" if cells == 0 else f"{int(found['cells']):,} cells"
        shape = f"{int(found['cases']):,} cases x {int(found['repeats'])} repeats" if cells else "-"
        rate = f"{found['cells'] / found['seconds']:.0f}" if cells else "-"
        rows.append([label, shape, f"{found['peak_mb']:.1f}", rate])
        print(f"measured {label}", flush=True)
    growth = peaks[large] - peaks[small]
    print(
        f"\nDriver peak RSS (ru_maxrss), trivial graph, SQLite, inline runner at "
        f"concurrency {args.concurrency}, data set grows by {args.grow}"
    )
    print(table(["", "shape", "peak RSS MB", "cells/s"], rows))
    verdict = "meets" if growth < TARGET_GROWTH_MB else "MISSES"
    print(
        f"\ngrowth {small:,} -> {large:,} cells: {growth:+.1f} MB "
        f"(target < {TARGET_GROWTH_MB} MB: {verdict}); "
        f"above the setup-only floor at {large:,}: {peaks[large] - peaks[0]:+.1f} MB"
    )


if __name__ == "__main__":
    main()
