"""Connect to a Ray cluster, or start a private local Ray instance for one run."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from wtb.errors import ClusterError, WtbError

RAY_ENV_DEFAULTS = {
    # Left unset, a local ray.init() turns token authentication on and writes a token that
    # every later Ray process on the machine then silently requires.
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def apply_ray_env_defaults() -> None:
    """Set WTB's Ray defaults in this process's environment, keeping values already set."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


_CONNECT_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """Refuse an address nothing answers at, at once: Ray itself would retry for minutes.

    `auto` and addresses that are not host:port are left to Ray.
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), _CONNECT_TIMEOUT_S):
            return
    except OSError as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address}: {exc.strerror or exc}",
            fix="check --ray-address (or RAY_ADDRESS): the head's GCS address (host:port, "
            "port 6379 by default) or ray://host:10001 for Ray Client; leave it out to start "
            "Ray locally",
        ) from exc


@contextmanager
def ray_connection(address: str | None) -> Iterator[None]:
    """Attach to the cluster at `address` (host:port or ray://...), or start a local Ray
    instance with its own temporary directory, stopped and removed on exit.

    When this process is already connected (a caller that manages Ray itself), it is
    used as it is and left connected.
    """
    apply_ray_env_defaults()
    try:
        import ray
    except ImportError as exc:
        # A setup mistake, not an outage: running again will not install it.
        raise WtbError(
            "the Ray runner needs Ray, which is not installed", fix="pip install 'wtb[ray]'"
        ) from exc

    if ray.is_initialized():
        yield
        return
    if address:
        _check_reachable(address)
    temp_dir = None if address else tempfile.mkdtemp(prefix="wtb-ray-")
    try:
        try:
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    _temp_dir=temp_dir,
                )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise ClusterError(
                f"cannot connect to {where}: {exc}",
                fix="check --ray-address (or RAY_ADDRESS), or leave it out to start Ray "
                "locally for the run",
            ) from exc
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
