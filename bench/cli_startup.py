"""CLI start-up: wall time of `wtb --help` and `wtb validate`, against Python's own start-up.

Every command runs as a fresh subprocess, interleaved round by round with two baselines
measured in the same run: `python -c pass` (the interpreter) and
`python -c "import langgraph.graph"` (validating imports the user's graph, which imports
LangGraph, so that import is the user's cost, not WTB's). Then `python -X importtime`
shows which packages `wtb --help` imports: it must not import the heavy ones.

    python bench/cli_startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from trivial_workload import Spread, table

TARGET_S = 1.0
REPO = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_HELP = ("langgraph", "sqlalchemy", "rich", "pydantic_settings")


def wtb_command() -> list[str]:
    """The installed `wtb` script beside this interpreter, else `python -m wtb`."""
    script = Path(sys.executable).parent / "wtb"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "wtb"]


def commands() -> dict[str, list[str]]:
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import langgraph.graph'": [sys.executable, "-c", "import langgraph.graph"],
        "wtb --help": [*wtb_command(), "--help"],
        "wtb validate -f examples/rag/": [*wtb_command(), "validate", "-f", "examples/rag/"],
    }


def wall(command: list[str], expect: str = "") -> float:
    """Seconds `command` takes as a fresh process; stops the benchmark when it fails or
    its output (stdout and stderr) lacks `expect`: its time would not be comparable."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.decode()}")
    if expect not in done.stdout.decode() + done.stderr.decode():
        raise SystemExit(f"{' '.join(command)} did not print {expect!r}:\n{done.stderr.decode()}")
    return elapsed


def timer(command: list[str], expect: str = "") -> Callable[[int], float]:
    """A measure for `interleaved`: the same command every round."""
    return lambda _round: wall(command, expect)


def interleaved(measures: dict[str, Callable[[int], float]], rounds: int) -> dict[str, list[float]]:
    """Each measure once per round (given the round's number), the order rotated round by
    round so that none always runs first or right after the same one."""
    names = list(measures)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(measures[name](r))
    return times


def imported_modules(command: list[str]) -> dict[str, int]:
    """Self import time in microseconds of every module `python <command>` imports, from
    -X importtime."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    modules: dict[str, int] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|")
        modules[name.strip()] = int(self_us)
    return modules


def import_times(command: list[str]) -> dict[str, int]:
    """Self import time in microseconds per top-level package, from -X importtime."""
    totals: dict[str, int] = defaultdict(int)
    for name, self_us in imported_modules(command).items():
        totals[name.split(".")[0]] += self_us
    return dict(totals)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    runs = commands()
    names = list(runs)
    for name in names:  # warm the file system cache; not counted
        wall(runs[name])
    times = interleaved({name: timer(runs[name]) for name in names}, args.rounds)
    median = {name: statistics.median(values) for name, values in times.items()}

    print(f"CLI start-up, wall time of a fresh process, {args.rounds} interleaved rounds")
    rows = [[name, Spread.of([t * 1000 for t in times[name]]).show(".0f")] for name in names]
    print(table(["command", "ms median (min-max)"], rows))
    help_own = median["wtb --help"] - median["python -c pass"]
    validate_own = (
        median["wtb validate -f examples/rag/"] - median["python -c 'import langgraph.graph'"]
    )
    print(f"\nwtb --help beyond the interpreter:           {help_own * 1000:+.0f} ms")
    print(f"wtb validate beyond importing LangGraph:     {validate_own * 1000:+.0f} ms")
    for label, value in (
        ("wtb --help", median["wtb --help"]),
        ("wtb validate, WTB's own part", validate_own),
    ):
        verdict = "meets" if value < TARGET_S else "MISSES"
        print(f"target: {label} under {TARGET_S:g} s: {value:.2f} s, {verdict}")

    imported = import_times(["-m", "wtb", "--help"])
    heavy = sorted(imported.items(), key=lambda kv: kv[1], reverse=True)[:10]
    print("\n`wtb --help` imports, heaviest top-level packages (self time, -X importtime):")
    print(table(["package", "ms"], [[name, f"{us / 1000:.1f}"] for name, us in heavy]))
    found = [name for name in FORBIDDEN_IN_HELP if name in imported]
    print(
        f"must not import {', '.join(FORBIDDEN_IN_HELP)}: "
        + (f"IMPORTS {', '.join(found)}" if found else "none imported (ok)")
    )

    # What validate imports beyond LangGraph: where WTB's own part of its time goes.
    langgraph = import_times(["-c", "import langgraph.graph"])
    validate = import_times(["-m", "wtb", "validate", "-f", "examples/rag/"])
    extra = {name: us - langgraph.get(name, 0) for name, us in validate.items()}
    heavy = sorted(extra.items(), key=lambda kv: kv[1], reverse=True)[:10]
    print("\n`wtb validate` imports beyond `import langgraph.graph` (self time, -X importtime):")
    print(table(["package", "ms"], [[name, f"{us / 1000:.1f}"] for name, us in heavy]))


if __name__ == "__main__":
    main()
