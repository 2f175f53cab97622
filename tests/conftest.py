"""Session services and per-test databases for the storage tests (and anyone who needs them).

`store_url` runs a test against SQLite, PostgreSQL directly, and PostgreSQL through
PgBouncer (transaction pooling), each time on a fresh, empty database.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from services.kube import REPO_ROOT, ControlPlane, namespace, start_control_plane
from services.kuberay_standin import KubeRayStandIn
from services.postgres import PostgresServices, start_services
from services.ray_head import RayHead, start_ray_head
from services.support import ServiceError
from wtb.runners.ray_session import RAY_ENV_DEFAULTS

_DATABASES = itertools.count()
# Images the KubeRay stand-in can "pull": a directory stands for each image's contents.
EXAMPLE_IMAGES = {"wtb-example-rag:0.1.0": REPO_ROOT / "examples" / "rag"}
_URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "pgbouncer": "pgbouncer_url"}


@pytest.fixture(scope="session")
def postgres_services() -> Iterator[PostgresServices]:
    """PostgreSQL and PgBouncer, started once for the session when a test first needs them."""
    try:
        services = start_services()
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield services
    finally:
        services.stop()


@contextmanager
def _fresh_database(services: PostgresServices) -> Iterator[str]:
    name = f"wtb_test_{os.getpid()}_{next(_DATABASES)}"
    services.create_database(name)
    try:
        yield name
    finally:
        services.drop_database(name)


@pytest.fixture
def postgres_url(postgres_services: PostgresServices) -> Iterator[str]:
    """A fresh database, connected to directly."""
    with _fresh_database(postgres_services) as name:
        yield postgres_services.url(name)


@pytest.fixture
def pgbouncer_url(postgres_services: PostgresServices) -> Iterator[str]:
    """A fresh database, reached through PgBouncer in transaction pooling mode."""
    with _fresh_database(postgres_services) as name:
        yield postgres_services.url(name, through_pgbouncer=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'wtb.db'}"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("pgbouncer", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest) -> str:
    """The same test on every backend: SQLite, PostgreSQL, PostgreSQL through PgBouncer."""
    url: str = request.getfixturevalue(_URL_FIXTURES[request.param])
    return url


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """A Ray head (2 CPUs), started once for the session when a test first needs it."""
    try:
        head = start_ray_head(tmp_path_factory.mktemp("ray"))
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="session")
def ray_cluster(ray_head: RayHead) -> Iterator[RayHead]:
    """This test process connected to the session's Ray head as a driver."""
    import ray

    os.environ.update(RAY_ENV_DEFAULTS)
    ray.init(address=ray_head.address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield ray_head
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A Kubernetes control plane with our CRDs and KubeRay's RayCluster CRD, started once
    for the session when a test first needs it (or the cluster of WTB_TEST_KUBECONFIG)."""
    try:
        plane = start_control_plane(tmp_path_factory.mktemp("kube"))
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def kube_namespace(kube: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted after it (with everything in it)."""
    with kube.api_client() as api, namespace(api, request.node.name) as name:
        yield name


@pytest.fixture(scope="session")
def kuberay(
    kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeRayStandIn]:
    """The KubeRay stand-in, watching every namespace of `kube`. It knows EXAMPLE_IMAGES;
    a test adds its own with `kuberay.register_image(name, directory)`."""
    with kube.api_client() as api:
        # A short directory name: Ray's socket paths beneath it are limited in length.
        standin = KubeRayStandIn(api, tmp_path_factory.mktemp("kr"), dict(EXAMPLE_IMAGES))
        standin.start()
        try:
            yield standin
        finally:
            standin.stop()
