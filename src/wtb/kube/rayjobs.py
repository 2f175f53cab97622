"""A small client of the Ray job API (the dashboard's REST endpoints, as KubeRay uses them):
submit with a caller-chosen submission id, read a job's status, stop it.

The operator talks to Ray only through this: it needs no Ray installation, and it never
connects to the cluster as a Ray driver.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
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


class RayJobClient:
    def __init__(self, dashboard_url: str, *, timeout: float = 10.0) -> None:
        self._base = dashboard_url.rstrip("/")
        self._timeout = timeout

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
        request = urllib.request.Request(  # noqa: S310 (the dashboard URL KubeRay publishes)
            f"{self._base}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as reply:  # noqa: S310
                payload = reply.read()
        except urllib.error.HTTPError as exc:
            if missing_ok and exc.code == HTTPStatus.NOT_FOUND:
                return None
            detail = exc.read().decode(errors="replace")[:500]
            raise RayJobError(
                f"{method} {path}: HTTP {exc.code}: {detail}", status=exc.code
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RayJobError(f"the Ray job API at {self._base} does not answer: {exc}") from exc
        return json.loads(payload) if payload else None

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
