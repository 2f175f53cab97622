"""What per-node figures cost: the trivial graph invoked with WTB's invocation config,
without and with the NodeTimer callback handler (and the root run id) that every cell
attempt now carries.

Rounds are interleaved (without, with, without, ...) and each "with" round is compared
with the "without" round just before it: this machine is noisy.

    python bench/node_timer_overhead.py [--invocations 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import uuid
from typing import Any

from trivial_workload import compiled_graph
from wtb.cells.nodes import NodeTimer


def _config(*, timed: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "run_name": "wtb:bench:answer=original",
        "tags": ["wtb"],
        "metadata": {"wtb_run": "bench", "wtb_cell": "c", "wtb_attempt": 1},
    }
    if timed:
        config["run_id"] = uuid.uuid4()
        config["callbacks"] = [NodeTimer()]
    return config


def _round(graph: Any, n: int, *, timed: bool) -> float:
    gc.collect()
    started = time.perf_counter()
    for i in range(n):
        graph.invoke({"text": f"a b c {i}"}, _config(timed=timed))
    return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--invocations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    graph = compiled_graph()
    _round(graph, 200, timed=True)  # warm up
    plain, timed = [], []
    for _ in range(args.rounds):
        plain.append(_round(graph, args.invocations, timed=False))
        timed.append(_round(graph, args.invocations, timed=True))
    extra = [t - p for p, t in zip(plain, timed, strict=True)]
    ratios = [t / p for p, t in zip(plain, timed, strict=True)]
    print(
        f"per invocation: without {statistics.median(plain) * 1e6:.0f} us, "
        f"with {statistics.median(timed) * 1e6:.0f} us; "
        f"extra {statistics.median(extra) * 1e6:.0f} us "
        f"(median ratio {statistics.median(ratios):.3f}, rounds {args.rounds})"
    )


if __name__ == "__main__":
    main()
