"""The attempt protocol: numbering, events, the retry budget and the decision "done, or try
again in N s", in one place for whoever runs an attempt (a worker thread, the asyncio loop,
a Ray actor) and whoever sees it end (the runner, or the Ray driver when a worker is lost).

    protocol = AttemptProtocol(policy, emit, timeout_seconds)
    attempt = protocol.begin(cell, history)      # numbered after `history`; "started" event
    ... run the graph ...
    history = attempt.succeeded()                # or:
    decision = attempt.raised(exc)               # transient or not, by the retry policy
    decision = attempt.timed_out()               # the attempt overran its deadline
    decision = attempt.lost(WORKER_LOST, why)    # its worker died or was stopped
    # decision: Retry(attempts, delay) or GiveUp(attempts); "failed"/"retried" events sent

An attempt ends once: a second ending (a watchdog and the worker racing) is refused.

Whoever runs the graph gives the attempt what watches its nodes (`attempt.nodes = timer`,
a `NodeWatch` such as `wtb.cells.nodes.NodeTimer`): a failed attempt then records the node
its error was raised in, a timed-out one the node it hung in, with the error's traceback
(`wtb.cells.tracebacks`), bounded so that results stay small on their way back from Ray.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol

from wtb import events
from wtb._jsonable import clean_text
from wtb.cells.exits import carried, exit_message, is_code_exit
from wtb.cells.retry import RetryPolicy
from wtb.cells.tracebacks import format_traceback
from wtb.domain import Attempt, AttemptStatus, Cell

EmitEvent = Callable[[events.Event], None]

TIMEOUT: Final = "Timeout"
"""`error_type` of an attempt that overran its deadline."""
MAX_MESSAGE: Final = 2000


@dataclass(frozen=True, slots=True)
class Retry:
    """The cell's last attempt failed transiently: try again after `delay` seconds."""

    attempts: tuple[Attempt, ...]
    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The cell's last attempt failed and there will be no other: the cell has failed."""

    attempts: tuple[Attempt, ...]


Decision = Retry | GiveUp


class NodeWatch(Protocol):
    """What sees an attempt's node runs: which node an error came from, which node is
    still running when the attempt times out."""

    def failed_node(self, exc: BaseException) -> str | None: ...

    def hung_node(self) -> str | None: ...


def describe(exc: BaseException) -> tuple[str, str]:
    """(error type, message) of an exception, the message bounded and printable. The
    workflow's code ending its process (`SystemExit`, `KeyboardInterrupt`, another
    `BaseException`) is told as such, with the exit code (`wtb.cells.exits`)."""
    exc = carried(exc)
    message = clean_text(exit_message(exc) or str(exc) or repr(exc))
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    return type(exc).__name__, message


class AttemptProtocol:
    """Makes the attempts of one process's cells: one per executor or Ray dispatcher."""

    def __init__(self, policy: RetryPolicy, emit: EmitEvent, timeout: float) -> None:
        self.policy = policy
        self.timeout = timeout
        self._emit = emit

    def begin(self, cell: Cell, history: Sequence[Attempt] = ()) -> CellAttempt:
        """Start the cell's next attempt after `history` (its numbering and retry budget
        continue from there)."""
        attempt = self.observe(cell, history, datetime.now(UTC), time.perf_counter())
        attempt.root_run_id = str(uuid.uuid4())
        self._emit(events.Event(events.CELL_ATTEMPT_STARTED, cell.key, {"attempt": attempt.number}))
        return attempt

    def observe(
        self, cell: Cell, history: Sequence[Attempt], started_at: datetime, t0: float
    ) -> CellAttempt:
        """An attempt that started elsewhere (its "started" event sent there), at
        `started_at`, `t0` by `time.perf_counter`: for ending it from here."""
        return CellAttempt(self, cell, tuple(history), len(history) + 1, started_at, t0)

    def _end(self, attempt: CellAttempt, record: Attempt, *, retry: bool) -> Decision:
        self._emit(
            events.Event(
                events.CELL_ATTEMPT_FAILED,
                attempt.cell.key,
                {
                    "attempt": record.number,
                    "status": record.status,
                    "error": record.error_type,
                    "message": record.error_message,
                },
            )
        )
        history = (*attempt.history, record)
        delay = self.policy.next_delay(history) if retry else None
        if delay is None:
            return GiveUp(history)
        self._emit(
            events.Event(
                events.CELL_ATTEMPT_RETRIED,
                attempt.cell.key,
                {"attempt": record.number + 1, "delay_s": delay},
            )
        )
        return Retry(history, delay)


@dataclass(eq=False)
class CellAttempt:
    """One attempt of one cell, from its start to its one ending."""

    protocol: AttemptProtocol
    cell: Cell
    history: tuple[Attempt, ...]
    """The cell's attempts before this one."""
    number: int
    started_at: datetime
    t0: float
    root_run_id: str | None = None
    """The root run id its graph invocation is given (`begin`); None when observed."""
    nodes: NodeWatch | None = None
    """What watches the attempt's node runs (set by whoever invokes the graph); None when
    the attempt is observed from elsewhere (its node then unknown)."""
    _ended: bool = field(default=False, repr=False)

    def graph_starts(self) -> None:
        """The graph starts now: the attempt's duration is measured from here.

        Called by whoever invokes the graph, in the thread that invokes it, so that what
        came before (a worker thread's queue behind other cells, building the config) is
        not counted as the variant's latency. An attempt that never gets this far (it
        timed out in the queue) keeps its start: its duration is the time it waited.
        """
        self.started_at = datetime.now(UTC)
        self.t0 = time.perf_counter()

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    def _claim(self) -> None:
        # Who may end an attempt is settled before (a watchdog's claim, one driver thread):
        # this catches a bug, it does not arbitrate a race.
        if self._ended:
            raise RuntimeError(f"attempt {self.number} of cell {self.cell.key} ended twice")
        self._ended = True

    def _record(
        self,
        status: AttemptStatus,
        error_type: str,
        message: str,
        node: str | None = None,
        traceback: str | None = None,
    ) -> Attempt:
        self._claim()
        return Attempt(
            self.number,
            status,
            self.started_at,
            self.elapsed_ms(),
            error_type,
            message,
            self.root_run_id,
            node=node,
            traceback=traceback,
        )

    def _node(self, exc: BaseException | None) -> str | None:
        """The node `exc` came from, or (None: a timeout) the node still running."""
        if self.nodes is None:
            return None
        try:
            return self.nodes.hung_node() if exc is None else self.nodes.failed_node(exc)
        except Exception:  # a watch that fails must not lose the attempt's record
            return None

    def succeeded(self, *, interrupted: bool = False) -> tuple[Attempt, ...]:
        """The cell's attempts, this successful one last: the graph returned without
        raising. `interrupted` when it returned stopped at an interrupt: the attempt is
        over and not retried, and its event says so (the cell is then `interrupted`)."""
        self._claim()
        data: dict[str, object] = {"attempt": self.number}
        if interrupted:
            data["interrupted"] = True
        self.protocol._emit(events.Event(events.CELL_ATTEMPT_SUCCEEDED, self.cell.key, data))
        record = Attempt(
            self.number,
            "succeeded",
            self.started_at,
            self.elapsed_ms(),
            root_run_id=self.root_run_id,
        )
        return (*self.history, record)

    def raised(self, exc: BaseException) -> Decision:
        """The graph raised `exc`: retried when the policy calls it transient. The code
        ending its process (`wtb.cells.exits`) is never transient."""
        transient = not is_code_exit(exc) and self.protocol.policy.is_transient(exc)
        status: AttemptStatus = "transient" if transient else "failed"
        error_type, message = describe(exc)
        node = self._node(exc)
        record = self._record(status, error_type, message, node, format_traceback(carried(exc)))
        return self.protocol._end(self, record, retry=True)

    def timed_out(self, message: str | None = None) -> Decision:
        """The attempt overran its deadline (`message` says how, when not the plain case):
        tried again only when the policy retries timeouts (`retry.retryTimeouts`)."""
        text = message or f"attempt exceeded {self.protocol.timeout:g} s"
        record = self._record("timeout", TIMEOUT, text, self._node(None))
        return self.protocol._end(self, record, retry=self.protocol.policy.retry_timeouts)

    def lost(self, error_type: str, message: str, *, give_up: bool = False) -> Decision:
        """The attempt's worker was lost or stopped (`error_type` WORKER_LOST or
        WORKER_STOPPED): not the cell's fault, so it costs none of its budget; `give_up`
        when the runner will not try it again all the same."""
        record = self._record("transient", error_type, message[:MAX_MESSAGE])
        return self.protocol._end(self, record, retry=not give_up)
