"""A small client of the Ray job API (the dashboard's REST endpoints, as KubeRay uses them):
submit with a caller-chosen submission id, read a job's status, stop it.

The operator talks to Ray only through this: it needs no Ray installation, and it never
connects to the cluster as a Ray driver.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from wtb.errors import ClusterError

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class RayJobError(ClusterError):
    """The job API refused a request or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status of a refusal; None when the API did not answer."""


@dataclass(frozen=True)
class JobInfo:
    submission_id: str
    status: str
    message: str
    driver_exit_code: int | None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


MAX_REPLY_BYTES = 1 << 20
"""The largest reply the client reads (1 MiB): a job's status is a few hundred bytes."""


class RayJobClient:
    """Every call has a deadline for the whole exchange (`deadline`, 30 s), not only per
    socket read (`timeout`, 10 s): a dashboard that drips bytes is cut off at the deadline,
    and a reply over `max_bytes` is refused."""

    def __init__(
        self,
        dashboard_url: str,
        *,
        timeout: float = 10.0,
        deadline: float = 30.0,
        max_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self._base = dashboard_url.rstrip("/")
        self._timeout = min(timeout, deadline)
        self._deadline = deadline
        self._max_bytes = max_bytes

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        missing_ok: bool = False,
    ) -> Any:
        """The JSON reply; None for a job the cluster does not know, with `missing_ok`."""
        data = None if body is None else json.dumps(body).encode()
        status, payload = self._exchange(method, path, data)
        if status == HTTPStatus.NOT_FOUND and missing_ok:
            return None
        if status >= HTTPStatus.BAD_REQUEST:
            detail = payload.decode(errors="replace")[:500]
            raise RayJobError(f"{method} {path}: HTTP {status}: {detail}", status=status)
        try:
            return json.loads(payload) if payload else None
        except ValueError as exc:
            raise RayJobError(
                f"{method} {path}: the Ray job API at {self._base} answered with no JSON: "
                f"{payload[:200].decode(errors='replace')!r}"
            ) from exc

    def _connection(self) -> http.client.HTTPConnection:
        parts = urllib.parse.urlsplit(self._base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RayJobError(f"{self._base!r} is not an http(s) URL of a Ray dashboard")
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=self._timeout)
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=self._timeout)

    def _exchange(self, method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        """One request and its whole reply within `deadline` seconds: a timer shuts the
        socket down at the deadline, whatever read is blocked on it."""
        prefix = urllib.parse.urlsplit(self._base).path
        conn = self._connection()
        expired = threading.Event()

        def cut() -> None:
            expired.set()
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(self._deadline, cut)
        timer.daemon = True
        timer.start()
        try:
            conn.request(
                method, f"{prefix}{path}", body=data, headers={"Content-Type": "application/json"}
            )
            reply = conn.getresponse()
            declared = reply.getheader("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
                raise self._too_large(method, path)
            chunks: list[bytes] = []
            size = 0
            while chunk := reply.read1(65536):
                size += len(chunk)
                if size > self._max_bytes:
                    raise self._too_large(method, path)
                chunks.append(chunk)
            if expired.is_set():
                raise OSError("cut off")
            return reply.status, b"".join(chunks)
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set():
                raise RayJobError(
                    f"{method} {path}: the Ray job API at {self._base} did not finish answering "
                    f"within {self._deadline:g} s (the deadline of one call); check the Ray "
                    "head's dashboard (its pod, its load)"
                ) from exc
            raise RayJobError(f"the Ray job API at {self._base} does not answer: {exc}") from exc
        finally:
            timer.cancel()
            conn.close()

    def _too_large(self, method: str, path: str) -> RayJobError:
        return RayJobError(
            f"{method} {path}: the Ray job API at {self._base} answered with more than "
            f"{self._max_bytes} bytes, the most this client reads; is the dashboard URL right?"
        )

    def submit(
        self,
        submission_id: str,
        entrypoint: str,
        *,
        metadata: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> bool:
        """Submit the job (with `env` set for its driver and actors); False when a job with
        this id exists already (submitted before)."""
        if self.info(submission_id) is not None:
            return False
        body: dict[str, Any] = {
            "entrypoint": entrypoint,
            "submission_id": submission_id,
            "metadata": metadata or {},
        }
        if env:
            body["runtime_env"] = {"env_vars": env}
        try:
            self._call("POST", "/api/jobs/", body)
        except RayJobError as exc:
            # Submitted by someone else since `info` looked: Ray refuses a second job of
            # that id (HTTP 400), saying so only in its message.
            if exc.status == HTTPStatus.BAD_REQUEST and "already exists" in str(exc):
                return False
            raise
        return True

    def info(self, submission_id: str) -> JobInfo | None:
        """The job's status; None when the cluster does not know it."""
        data = self._call("GET", f"/api/jobs/{submission_id}", missing_ok=True)
        if data is None:
            return None
        code = data.get("driver_exit_code")
        return JobInfo(
            submission_id=submission_id,
            status=str(data.get("status", "")),
            message=str(data.get("message") or ""),
            driver_exit_code=int(code) if code is not None else None,
        )

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the job; False when it was not running."""
        data = self._call("POST", f"/api/jobs/{submission_id}/stop", missing_ok=True)
        return bool((data or {}).get("stopped"))
