"""The runner interface: execute a RunSpec's cells somewhere, yield their results."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from wtb.domain import Cell, CellResult
from wtb.events import EventBus
from wtb.runs.spec import RunSpec


class Runner(Protocol):
    """Executes cells with bounded concurrency and yields each result as it completes.

    `cells` is consumed lazily (back-pressure: a runner takes cells as results come back,
    holding a bounded number, and runs at most its concurrency at once); results arrive in
    completion order. Closing the iterator early stops the run.
    Cell-level failures are results; only infrastructure failures raise.
    """

    name: str

    def run(self, job: RunSpec, cells: Iterable[Cell], bus: EventBus) -> Iterator[CellResult]: ...
