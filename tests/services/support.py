"""What every test service and test polls and fails with: one error type, free ports, and
waits with a deadline (never a bare sleep)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

READY_SECONDS = 30.0
_POLL_S = 0.05


class ServiceError(RuntimeError):
    """A test service cannot be started, or a wait ran out; the message says what."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], what: str, seconds: float = READY_SECONDS) -> None:
    """Poll `check` until it returns True, or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise ServiceError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(_POLL_S)


def holds(check: Callable[[], bool], *, seconds: float) -> bool:
    """True when `check` stays true for `seconds` (polled): to see that nothing happens."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not check():
            return False
        threading.Event().wait(0.2)
    return check()
