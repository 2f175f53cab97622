"""Which failures are transient, and how long to wait before the next attempt."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from wtb.api.batchtest import RetrySpec
from wtb.domain import NOT_THE_CELLS_FAULT, WORKER_LOST, WORKER_STOPPED, Attempt

# Exception class names (anywhere in the MRO) that mean "try again": network and
# provider hiccups as raised by httpx, requests, openai, anthropic, google and botocore.
_TRANSIENT_NAMES = frozenset(
    {
        "TimeoutError",
        "ConnectionError",
        "RateLimitError",
        "APITimeoutError",
        "APIConnectionError",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableError",
        "TooManyRequests",
        "ResourceExhausted",
        "ThrottlingException",
        "ConnectTimeout",
        "ReadTimeout",
        "ConnectError",
        "RemoteProtocolError",
        "TransportError",
    }
)
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Never transient, whatever `transientErrors` says of a base class: the graph looped to its
# recursion limit, and would again.
_NEVER_TRANSIENT = frozenset({"GraphRecursionError"})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    extra_transient: frozenset[str] = frozenset()
    retry_timeouts: bool = False
    """Whether an attempt that overran the cell's deadline is tried again."""
    scale: float = 1.0
    """Multiplies every delay (WTB_RETRY_BACKOFF_SCALE); 0 makes tests fast."""

    @classmethod
    def from_spec(cls, spec: RetrySpec, *, scale: float = 1.0) -> RetryPolicy:
        return cls(
            max_attempts=spec.max_attempts,
            backoff_seconds=spec.backoff_seconds,
            max_backoff_seconds=spec.max_backoff_seconds,
            extra_transient=frozenset(spec.transient_errors),
            retry_timeouts=bool(spec.retry_timeouts),
            scale=scale,
        )

    def is_transient(self, exc: BaseException) -> bool:
        if type(exc).__name__ in _NEVER_TRANSIENT:
            return False
        for klass in type(exc).__mro__:
            qualified = f"{klass.__module__}:{klass.__qualname__}"
            if klass.__name__ in _TRANSIENT_NAMES or klass.__name__ in self.extra_transient:
                return True
            if qualified in self.extra_transient:
                return True
        status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
        return isinstance(status, int) and status in _TRANSIENT_STATUS

    def next_delay(self, attempts: Sequence[Attempt]) -> float | None:
        """Seconds before the next attempt after `attempts` (the last one failed), or None
        when the cell is done: its failure is not transient, or its attempts are used up.

        Attempts lost with their worker are not the cell's fault and do not count: one whose
        worker was stopped for another cell's sake is retried at once, one whose worker was
        lost after a backoff that grows with the losses (the runner that loses workers
        bounds how often that may happen).
        """
        last = attempts[-1]
        if last.error_type == WORKER_STOPPED:
            return 0.0
        if last.error_type == WORKER_LOST:
            return self.delay(sum(1 for a in attempts if a.error_type == WORKER_LOST))
        used = sum(1 for a in attempts if a.error_type not in NOT_THE_CELLS_FAULT)
        if last.status == "failed" or used >= self.max_attempts:
            return None
        return self.delay(used)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based): exponential, jittered."""
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2.0 ** (attempt - 1))
        return self.scale * ceiling * random.uniform(0.5, 1.0)
