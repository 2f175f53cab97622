"""A throwaway PostgreSQL cluster and a PgBouncer in transaction pooling mode.

Started once per test session in a temporary directory, on free loopback ports, stopped
by their own pids. Both refuse to run as root, so as root they run as the `postgres` user
(created by the Debian package) through `runuser`. Missing binaries are an error naming
the Debian package to install, never a skip: these tests are part of the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from services.support import ServiceError, free_port, wait_until

POSTGRES_LIB = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"


def find_postgres_bin() -> Path:
    """The bin directory of the newest PostgreSQL server installed by Debian's packages."""
    versions = [
        d for d in POSTGRES_LIB.glob("*/bin") if (d / "initdb").exists() and d.parent.name.isdigit()
    ]
    if not versions:
        raise ServiceError(
            f"no PostgreSQL server binaries (initdb, pg_ctl) under {POSTGRES_LIB}: "
            "install the Debian package 'postgresql'"
        )
    return max(versions, key=lambda d: int(d.parent.name))


def find_pgbouncer() -> Path:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None:
        raise ServiceError("no pgbouncer binary: install the Debian package 'pgbouncer'")
    return Path(found)


def _as_service_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    # runuser lives in /usr/sbin, which a minimal PATH may lack.
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    return [runuser or "runuser", "-u", SUPERUSER, "--", *argv]


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(_as_service_user(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ServiceError(f"{what} failed ({done.returncode}): {done.stderr or done.stdout}")


def _accepts(port: int, dbname: str) -> bool:
    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=port,
            user=SUPERUSER,
            dbname=dbname,
            connect_timeout=2,
            prepare_threshold=None,
        ):
            return True
    except psycopg.OperationalError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class PostgresCluster:
    bin_dir: Path
    base: Path
    port: int

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def init(self) -> None:
        _run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            "initdb",
        )

    def start(self) -> None:
        # A test cluster needs no durability across a machine crash: skip fsyncs.
        # `pg_ctl -w` returns once the server accepts connections.
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.base}"
            " -c max_connections=200 -c fsync=off -c synchronous_commit=off"
            " -c full_page_writes=off"
        )
        _run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-o",
                options,
                "start",
            ],
            "pg_ctl start",
        )

    def restart(self) -> None:
        """Restart the server (fast shutdown: open connections are cut), as a fault drill."""
        _run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-m",
                "fast",
                "restart",
            ],
            "pg_ctl restart",
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop"],
                "pg_ctl stop",
            )


@dataclass
class PgBouncer:
    binary: Path
    base: Path
    port: int
    postgres_port: int
    pool_size: int = 4

    @property
    def ini(self) -> Path:
        return self.base / "pgbouncer.ini"

    @property
    def pidfile(self) -> Path:
        return self.base / "pgbouncer.pid"

    def write_config(self) -> None:
        # `*` forwards every database name, so databases created by tests are reachable.
        self.ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.postgres_port} user={SUPERUSER}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.base}\n"
            f"pidfile = {self.pidfile}\n"
            f"logfile = {self.base / 'pgbouncer.log'}\n"
            "auth_type = any\n"
            "pool_mode = transaction\n"
            f"admin_users = {SUPERUSER}\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 200\n"
        )

    def start(self) -> None:
        self.write_config()
        _run([str(self.binary), "-d", str(self.ini)], "pgbouncer")
        wait_until(lambda: _accepts(self.port, "postgres"), "PgBouncer to accept connections")

    def stop(self) -> None:
        if not self.pidfile.exists():
            return
        pid = int(self.pidfile.read_text().strip())
        if _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not _pid_alive(pid), "PgBouncer to stop")


_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass
class PostgresServices:
    """The session's PostgreSQL and PgBouncer, and per-test databases on them."""

    base: Path
    postgres: PostgresCluster
    pgbouncer: PgBouncer

    def url(self, dbname: str, *, through_pgbouncer: bool = False) -> str:
        port = self.pgbouncer.port if through_pgbouncer else self.postgres.port
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/{dbname}"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.postgres.port,
            user=SUPERUSER,
            dbname="postgres",
            autocommit=True,
        )

    def create_database(self, name: str) -> None:
        if not _DB_NAME.fullmatch(name):
            raise ValueError(f"not a plain database name: {name!r}")
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name checked above

    def drop_database(self, name: str) -> None:
        """Drop it, cutting PgBouncer's pooled server connections to it (WITH FORCE)."""
        if not _DB_NAME.fullmatch(name):
            raise ValueError(f"not a plain database name: {name!r}")
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # name checked above

    def restart_postgres(self) -> None:
        """Restart PostgreSQL behind PgBouncer (fault drills): clients see dropped connections."""
        self.postgres.restart()

    def stop(self) -> None:
        try:
            self.pgbouncer.stop()
        finally:
            self.postgres.stop()
            shutil.rmtree(self.base, ignore_errors=True)


def start_services() -> PostgresServices:
    """Start PostgreSQL and PgBouncer in a new temporary directory."""
    bin_dir = find_postgres_bin()
    bouncer_binary = find_pgbouncer()
    # Not under pytest's basetemp: that is private to root, and the servers run as postgres.
    base = Path(tempfile.mkdtemp(prefix="wtb-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(base, user=SUPERUSER, group=SUPERUSER)
    postgres = PostgresCluster(bin_dir=bin_dir, base=base, port=free_port())
    pgbouncer = PgBouncer(
        binary=bouncer_binary, base=base, port=free_port(), postgres_port=postgres.port
    )
    services = PostgresServices(base=base, postgres=postgres, pgbouncer=pgbouncer)
    try:
        postgres.init()
        postgres.start()
        pgbouncer.start()
    except BaseException:
        services.stop()
        raise
    return services
