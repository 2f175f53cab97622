"""`wtb run` of a one-case BatchTest, beyond what importing LangGraph costs.

A whole small run is mostly start-up: the cell itself takes milliseconds. The workload is
the trivial BatchTest (`bench/trivial/`) with a data set of one case, copied to a temporary
directory, run as `wtb run -f <dir> -q --database sqlite:///<file>` in a fresh process:

- into a **new database**: a fresh SQLite file every round, so the schema is created;
- into an **existing database**: one file migrated and used by a warm-up run, and a case
  edited every round (a new run key), so the run is new and its cell really runs, as when a
  user runs again after changing the data set.

Both interleave round by round with `python -c "import langgraph.graph"`: the user's
graph imports LangGraph, so that import is the user's cost, not WTB's. The figure is the
difference of medians (the range: of the same round's differences). Then `python -X
importtime` shows what each run imports beyond LangGraph.

`--unheld` adds the existing-database run as a caller embedding the CLI makes it (the
click group called in-process), whose garbage collector `wtb` leaves alone: the
difference is what holding the collector during start-up saves (`wtb.cli.main`).

    python bench/run_startup.py [--rounds 9] [--unheld]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from cli_startup import imported_modules, interleaved, timer, wall, wtb_command
from trivial_workload import TRIVIAL_DIR, Spread, table, write_cases

TARGET_S = 0.3
BASELINE = "python -c 'import langgraph.graph'"
NEW = "wtb run, new database"
EXISTING = "wtb run, existing database"
UNHELD = "wtb run, existing database, collector not held"
CLICK_GROUP = "import sys; from wtb.cli.main import cli; cli(sys.argv[1:], prog_name='wtb')"
"""`wtb` as a caller embedding the CLI runs it: `wtb.cli.main.main`, the process's entry
point, is what holds the garbage collector back during start-up."""
RAN_ONE_CELL = "1 cells run in"
"""What `wtb run` prints when its one cell ran (not resumed from an earlier run)."""
WATCHED = ("alembic", "sqlalchemy.orm", "sqlalchemy.dialects.postgresql", "pydantic_settings")


def workload(directory: Path) -> Path:
    """A copy of the trivial workload in `directory`, with a one-case data set."""
    directory.mkdir(parents=True)
    for name in ("batchtest.yaml", "workflow.yaml", "trivial_graph.py"):
        shutil.copy(TRIVIAL_DIR / name, directory / name)
    write_cases(directory / "cases.jsonl", 1)
    return directory


def run_args(directory: Path, database: Path) -> list[str]:
    return ["run", "-f", str(directory), "-q", "--database", f"sqlite:///{database}"]


def beyond(modules: dict[str, int], baseline: dict[str, int]) -> list[tuple[str, int]]:
    """Top-level packages of `modules` not in `baseline`, by self import time."""
    totals: dict[str, int] = {}
    for name, self_us in modules.items():
        if name not in baseline:
            top = name.split(".")[0]
            totals[top] = totals.get(top, 0) + self_us
    return sorted(totals.items(), key=lambda kv: kv[1], reverse=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--unheld",
        action="store_true",
        help="also time the existing-database run through the click group called in-process, "
        "which leaves the garbage collector as it is: what holding it saves",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="wtb-run-startup-") as tmp:
        root = Path(tmp)
        fresh_dir = workload(root / "fresh")
        edited_dir = workload(root / "edited")
        existing_db = root / "existing.db"
        edits = itertools.count(1)
        baseline = [sys.executable, "-c", "import langgraph.graph"]
        wtb = wtb_command()

        def into_new(r: int) -> float:
            return wall([*wtb, *run_args(fresh_dir, root / f"new-{r}.db")], RAN_ONE_CELL)

        def into_existing(command: list[str]) -> Callable[[int], float]:
            def measure(_round: int) -> float:
                write_cases(edited_dir / "cases.jsonl", 1, first=next(edits))  # a new run key
                return wall([*command, *run_args(edited_dir, existing_db)], RAN_ONE_CELL)

            return measure

        # Warm the file system cache (and create and migrate the existing database).
        wall(baseline)
        into_new(-1)
        wall([*wtb, *run_args(edited_dir, existing_db)], RAN_ONE_CELL)
        measures = {BASELINE: timer(baseline), NEW: into_new, EXISTING: into_existing(wtb)}
        if args.unheld:
            measures[UNHELD] = into_existing([sys.executable, "-c", CLICK_GROUP])
        times = interleaved(measures, args.rounds)

        print(f"`wtb run` of a one-case BatchTest, {args.rounds} interleaved rounds")
        rows = [[name, Spread.of([t * 1000 for t in times[name]]).show(".0f")] for name in times]
        print(table(["command", "ms median (min-max)"], rows))
        print()
        for name in [name for name in times if name != BASELINE]:
            own = statistics.median(times[name]) - statistics.median(times[BASELINE])
            paired = Spread.of([a - b for a, b in zip(times[name], times[BASELINE], strict=True)])
            verdict = "meets" if own <= TARGET_S else "MISSES"
            print(
                f"{name} beyond importing LangGraph: {own * 1000:+.0f} ms"
                f" (same-round differences {paired.low * 1000:+.0f} to {paired.high * 1000:+.0f});"
                f" target <= {TARGET_S * 1000:.0f} ms: {verdict}"
            )

        langgraph = imported_modules(["-c", "import langgraph.graph"])
        write_cases(edited_dir / "cases.jsonl", 1, first=next(edits))
        for name, args_ in (
            (NEW, run_args(fresh_dir, root / "imports.db")),
            (EXISTING, run_args(edited_dir, existing_db)),
        ):
            modules = imported_modules(["-m", "wtb", *args_])
            imports = beyond(modules, langgraph)
            print(f"\n{name}: imports beyond `import langgraph.graph` (self time, -X importtime):")
            print(table(["package", "ms"], [[top, f"{us / 1000:.1f}"] for top, us in imports[:10]]))
            print(
                "imports "
                + ", ".join(
                    f"{watched}: {'yes' if any(m.startswith(watched) for m in modules) else 'no'}"
                    for watched in WATCHED
                )
            )


if __name__ == "__main__":
    main()
