"""The WTB operator as a process (`wtb-operator`), as it runs in its pod: its own identity
(a kubeconfig), its own result-store URL, settings from WTB_* variables, logs to a file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from services.support import free_port

STOP_SECONDS = 15.0
WEBHOOK_HOST_ENV = "WTB_TEST_WEBHOOK_HOST"
"""Where the API server reaches this machine: 127.0.0.1 for the test control plane; for a
cluster of WTB_TEST_KUBECONFIG (kind, say) an address of this machine it can reach."""


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    log: Path
    webhook_port: int

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """A normal stop (SIGTERM): Kopf finishes its handlers and removes its webhook
        configuration."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.wait()

    def kill(self) -> None:
        """A crash: SIGKILL, nothing cleaned up."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()


def start_operator(
    kubeconfig: Path,
    database_url: str,
    log: Path,
    *,
    webhook: bool = True,
    env: dict[str, str] | None = None,
) -> OperatorProcess:
    port = free_port() if webhook else 0
    webhook_host = os.environ.get(WEBHOOK_HOST_ENV, "127.0.0.1")
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("WTB_") and k != "KUBECONFIG"
    }
    environment.update(
        {
            "KUBECONFIG": str(kubeconfig),
            "WTB_DATABASE_URL": database_url,
            "WTB_RECONCILE_SECONDS": "0.5",
            "WTB_STATUS_SECONDS": "1",
            "WTB_WEBHOOK_PORT": str(port),
            "WTB_WEBHOOK_HOST": webhook_host,
            "WTB_WEBHOOK_LISTEN": "127.0.0.1" if webhook_host == "127.0.0.1" else "0.0.0.0",  # noqa: S104
            "WTB_LOG_LEVEL": "DEBUG",
            # The test control plane's certificate is self-signed.
            "PYTHONWARNINGS": "ignore:Unverified HTTPS request",
            **(env or {}),
        }
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "wtb-operator")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    return OperatorProcess(process, log, port)
