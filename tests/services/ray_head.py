"""A real Ray head for tests: `ray start --head --block` from the project's environment.

It listens on free loopback ports with its own temporary directory, runs with
`RAY_AUTH_MODE=disabled`, and is stopped through its own process group: never `ray stop`,
which would stop every Ray process on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.support import ServiceError, free_port, wait_until
from wtb.runners.ray_session import RAY_ENV_DEFAULTS

START_SECONDS = 90.0
STOP_SECONDS = 5.0
START_ATTEMPTS = 2
STARTED_LINE = "Ray runtime started."
"""What `ray start` prints once its raylet registered: until then the head may still fail
(Ray gives the raylet 30 s, which an overloaded machine can exceed)."""
TIMED_OUT_LINE = "timed out during startup"


def ray_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for Ray processes: the project's interpreter first on PATH (a job's
    entrypoint runs with the head's PATH), auth off, no usage stats, no inherited address."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_ENV_DEFAULTS)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra or {})
    return env


@dataclass
class RayHead:
    process: subprocess.Popen[bytes]
    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    client_port: int

    @property
    def address(self) -> str:
        """What `ray.init(address=...)` and `--ray-address` take."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """The job API's endpoint (JobSubmissionClient)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise ServiceError(
                f"ray start exited with {self.process.returncode}: {self.log_tail()}"
            )
        if STARTED_LINE not in self.log_tail(lines=200):
            return False
        try:
            with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2) as reply:  # noqa: S310
                return bool(json.load(reply).get("ray_version"))
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        log = self.temp_dir / "ray-start.log"
        return (
            "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
        )

    def stop(self) -> None:
        """Stop the head and everything it started: its process group, then whatever is
        left of its session (workers)."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_SECONDS)
        _signal_session(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _signal_session(sid: int, sig: signal.Signals) -> None:
    """Signal every process of the session `ray start` began: Ray puts each worker in a
    process group of its own, but they all stay in that session."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), sig)


def _launch(
    temp_dir: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """`ray start --block ARGS` in a session of its own, on free loopback ports, with its
    own temporary directory, logging to ray-start.log there. `env` is added to
    `ray_environment()`; `cwd` is the working directory of the head and its workers."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--block",
        "--node-ip-address=127.0.0.1",
        *args,
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    with (temp_dir / "ray-start.log").open("wb") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ray_environment(dict(env or {})),
            cwd=cwd,
            start_new_session=True,
        )


def start_ray_head(
    temp_dir: Path,
    *,
    num_cpus: int = 2,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    extra_args: Sequence[str] = (),
    ports: tuple[int, int, int] | None = None,
) -> RayHead:
    """Start a head and wait until its job API answers (about 8 s, 11 s cold). `env`,
    `cwd` and `extra_args` (more `ray start` options) shape it like a pod would; `ports`
    (GCS, dashboard, Ray client) are free ones unless given: a head restarted as a pod is,
    behind the same Service."""
    gcs, dashboard, ray_client = ports or (free_port(), free_port(), free_port())
    for attempt in range(1, START_ATTEMPTS + 1):
        process = _launch(
            temp_dir,
            "--head",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={ray_client}",
            f"--num-cpus={num_cpus}",
            *extra_args,
            env=env,
            cwd=cwd,
        )
        head = RayHead(process, temp_dir, gcs, dashboard, ray_client)
        try:
            wait_until(head._answers, "the Ray head's job API", START_SECONDS)
        except ServiceError as exc:
            head.stop()
            if attempt < START_ATTEMPTS and TIMED_OUT_LINE in str(exc):
                continue  # the machine was too busy for Ray's fixed 30 s: once more
            raise
        except BaseException:
            head.stop()
            raise
        return head
    raise AssertionError("unreachable")


@dataclass
class RayNode:
    """A second Ray node joined to a head, on this machine: for node-loss drills."""

    process: subprocess.Popen[bytes]
    temp_dir: Path

    def kill(self) -> None:
        """Lose the node at once: SIGKILL to its raylet and every worker it started."""
        _signal_session(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start_ray_node(head: RayHead, temp_dir: Path, *, num_cpus: int = 2) -> RayNode:
    """Join a worker node to `head` (its own session and temporary directory). The caller
    waits until the cluster lists it."""
    process = _launch(temp_dir, f"--address={head.address}", f"--num-cpus={num_cpus}")
    return RayNode(process, temp_dir)


def cell_actor_pids(head: RayHead) -> list[int]:
    """Process ids of WTB's live cell actors on the cluster (Ray's state API)."""
    from ray.util.state import list_actors

    actors = list_actors(
        address=head.dashboard_url,
        filters=[("class_name", "=", "CellActor"), ("state", "=", "ALIVE")],
    )
    return [a.pid for a in actors if a.pid]
