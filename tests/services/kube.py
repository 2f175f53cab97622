"""A real Kubernetes control plane for the operator tests, in controller-runtime's envtest style.

etcd, kube-apiserver and kube-controller-manager (garbage collector and namespace
controllers only: there are no nodes, so no pods) run on free loopback ports with their own
data and certificate directories, RBAC on, an admin token in `system:masters`. Our CRDs
(`crds/`) and KubeRay's RayCluster CRD are installed *before* the controller manager starts:
its garbage collector only notices kinds that exist at start (or at its 30 s resync).

The binaries come from `scripts/envtest` (KUBEBUILDER_ASSETS, or a per-user cache it builds
once). With `WTB_TEST_KUBECONFIG` set, nothing is started: the cluster it names is used, our
CRDs and the RayCluster CRD are installed if absent, and `stop()` leaves it alone.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import urllib3
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client, config

from services.support import ServiceError, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG_ENV = "WTB_TEST_KUBECONFIG"
KUBERAY_CRDS_ENV = "WTB_KUBERAY_CRDS"
RAYCLUSTER_CRD_FILE = "ray.io_rayclusters.yaml"
ENVTEST_SECONDS = 1800.0  # a first build of the binaries takes about 5 minutes
READY_SECONDS = 60.0
ESTABLISHED_SECONDS = 60.0
GC_SYNC_SECONDS = 60.0
STOP_SECONDS = 10.0
REQUEST_TIMEOUT = "15s"
"""The API server's limit for a request (1 minute by default): with etcd down, a request
fails with 504 after this long, which the fault drills wait for."""
LOG_TAIL_LINES = 30
# Printed by the garbage collector once it watches every resource it found at start.
GC_SYNCED_LINE = "all resource monitors have synced"

KubeObject = dict[str, Any]


def _log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class _Process:
    """One control-plane binary, in a session of its own, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    argv: list[str] = field(default_factory=list)

    @classmethod
    def launch(cls, name: str, argv: list[str], log: Path, *, append: bool = False) -> _Process:
        with log.open("ab" if append else "wb") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(name, process, log, list(argv))

    def relaunch(self) -> None:
        """Start it again with the same arguments (same ports, same data), after a stop."""
        self.process = _Process.launch(self.name, self.argv, self.log, append=True).process

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise ServiceError(
                f"{self.name} exited with {self.process.returncode}:\n{_log_tail(self.log)}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()


@dataclass
class ControlPlane:
    """A Kubernetes API server to test against, and how to reach it.

    `owns_processes` is False when the cluster came from WTB_TEST_KUBECONFIG; `admin_token`
    is then the kubeconfig user's token, or "" when it authenticates otherwise.
    """

    kubeconfig: Path
    server: str
    admin_token: str
    owns_processes: bool
    work_dir: Path
    cluster_entry: KubeObject = field(repr=False)
    processes: list[_Process] = field(default_factory=list, repr=False)

    def api_client(self) -> client.ApiClient:
        """An admin client: the kubeconfig's identity for a cluster of WTB_TEST_KUBECONFIG
        (which may use certificates or exec plugins), the admin token for our own."""
        if not self.owns_processes:
            admin: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.kubeconfig)
            )
            return admin
        return self.api_client_for_token(self.admin_token)

    def api_client_for_token(self, token: str) -> client.ApiClient:
        """A client that authenticates with `token` and nothing else. Its Configuration is
        built explicitly: one copied after `load_kube_config` keeps a hook that puts the
        kubeconfig's token back on every request."""
        configuration = client.Configuration(
            host=self.server,
            api_key={"BearerToken": token},
            api_key_prefix={"BearerToken": "Bearer"},
        )
        if self.cluster_entry.get("insecure-skip-tls-verify"):
            # The test server's self-signed certificate: every request would warn.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            configuration.verify_ssl = False
        elif "certificate-authority-data" in self.cluster_entry:
            authority = base64.b64decode(self.cluster_entry["certificate-authority-data"])
            configuration.ca_cert_data = authority.decode()
        return client.ApiClient(configuration)

    def kubeconfig_for_token(self, token: str, path: Path) -> Path:
        """Write a kubeconfig holding only `token` (e.g. a ServiceAccount's) and return it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(_kubeconfig(self.cluster_entry, token)))
        path.chmod(0o600)
        return path

    # --- faults (drills): only for a control plane of our own ------------------------------

    def _own(self, name: str) -> _Process:
        if not self.owns_processes:
            raise ServiceError(f"{name} is not ours to stop: the cluster of {KUBECONFIG_ENV}")
        (found,) = [p for p in self.processes if p.name == name]
        return found

    def stop_etcd(self) -> None:
        """etcd dies (SIGKILL): the API server stays up and answers with errors."""
        etcd = self._own("etcd")
        etcd.process.kill()
        etcd.process.wait()

    def start_etcd(self) -> None:
        """etcd again, on its data directory and ports; returns once the API server is ready."""
        self._own("etcd").relaunch()
        self.wait_ready()

    def restart_api_server(self) -> None:
        """The API server crashes (SIGKILL: every watch and connection to it ends at once)
        and starts again on the same port and etcd; returns once it is ready."""
        api_server = self._own("kube-apiserver")
        api_server.process.kill()
        api_server.process.wait()
        api_server.relaunch()
        self.wait_ready()

    def wait_ready(self) -> None:
        _wait_ready(self.server, self.admin_token, self.processes)

    def stop(self) -> None:
        """Stop the processes this control plane started (newest first), by their own PIDs."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def start_control_plane(work_dir: Path) -> ControlPlane:
    """Start (or, with WTB_TEST_KUBECONFIG, attach to) a control plane with the CRDs
    installed and Established. Raises ServiceError with the failing process's log tail."""
    work_dir.mkdir(parents=True, exist_ok=True)
    crd_files = [
        *sorted((REPO_ROOT / "crds").glob("*.yaml")),
        kuberay_crds_dir() / RAYCLUSTER_CRD_FILE,
    ]
    external = os.environ.get(KUBECONFIG_ENV)
    if external:
        plane = _attach(Path(external), work_dir)
        install_crds(plane.api_client(), crd_files)
        return plane
    return _start_own(envtest_binaries(), work_dir, crd_files)


def kuberay_crds_dir() -> Path:
    """KubeRay's CRDs: WTB_KUBERAY_CRDS, else `shared/kuberay/` beside the repository."""
    configured = os.environ.get(KUBERAY_CRDS_ENV)
    directory = Path(configured) if configured else REPO_ROOT.parent / "shared" / "kuberay"
    if not (directory / RAYCLUSTER_CRD_FILE).is_file():
        raise ServiceError(
            f"KubeRay's RayCluster CRD ({RAYCLUSTER_CRD_FILE}) is not in {directory}: set "
            f"{KUBERAY_CRDS_ENV} to a directory holding KubeRay's CRDs "
            "(ray-operator/config/crd/bases in ray-project/kuberay)"
        )
    return directory


def envtest_binaries() -> Path:
    """The directory holding etcd, kube-apiserver and kube-controller-manager."""
    try:
        done = subprocess.run(
            [str(REPO_ROOT / "scripts" / "envtest")],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=ENVTEST_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"scripts/envtest took more than {ENVTEST_SECONDS:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ServiceError(f"scripts/envtest failed ({done.returncode}):\n{done.stderr[-3000:]}")
    directory = Path(lines[-1])
    missing = [
        b
        for b in ("etcd", "kube-apiserver", "kube-controller-manager")
        if not (directory / b).exists()
    ]
    if missing:
        raise ServiceError(f"scripts/envtest printed {directory}, which lacks {', '.join(missing)}")
    return directory


def _attach(kubeconfig: Path, work_dir: Path) -> ControlPlane:
    if not kubeconfig.is_file():
        raise ServiceError(f"{KUBECONFIG_ENV}={kubeconfig} is not a file")
    loaded = yaml.safe_load(kubeconfig.read_text())
    context_name = loaded.get("current-context")
    context = _named(loaded.get("contexts", []), context_name, "context")
    cluster_entry = dict(_named(loaded.get("clusters", []), context["cluster"], "cluster"))
    authority = cluster_entry.pop("certificate-authority", None)
    if authority:  # inline it, so that the entry works from any kubeconfig written later
        authority_path = kubeconfig.parent / authority
        cluster_entry["certificate-authority-data"] = base64.b64encode(
            authority_path.read_bytes()
        ).decode()
    user = _named(loaded.get("users", []), context.get("user"), "user")
    return ControlPlane(
        kubeconfig=kubeconfig,
        server=cluster_entry["server"],
        admin_token=str(user.get("token", "")),
        owns_processes=False,
        work_dir=work_dir,
        cluster_entry=cluster_entry,
    )


def _named(entries: list[KubeObject], name: object, what: str) -> KubeObject:
    for entry in entries:
        if entry.get("name") == name:
            found: KubeObject = entry[what]
            return found
    raise ServiceError(f"{KUBECONFIG_ENV}: no {what} named {name!r} in the kubeconfig")


def _start_own(binaries: Path, work_dir: Path, crd_files: list[Path]) -> ControlPlane:
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    token = secrets.token_hex(24)
    cluster_entry: KubeObject = {"server": server, "insecure-skip-tls-verify": True}
    plane = ControlPlane(
        kubeconfig=work_dir / "admin.kubeconfig",
        server=server,
        admin_token=token,
        owns_processes=True,
        work_dir=work_dir,
        cluster_entry=cluster_entry,
    )
    plane.kubeconfig_for_token(token, plane.kubeconfig)
    try:
        etcd = _start_etcd(binaries, work_dir, etcd_port, peer_port)
        plane.processes.append(etcd)
        api_server = _start_api_server(binaries, work_dir, etcd_port, api_port, token)
        plane.processes.append(api_server)
        _wait_ready(server, token, [etcd, api_server])
        try:
            install_crds(plane.api_client(), crd_files)
        except ServiceError as exc:
            raise ServiceError(f"{exc}\nkube-apiserver log:\n{_log_tail(api_server.log)}") from exc
        manager = _Process.launch(
            "kube-controller-manager",
            [
                str(binaries / "kube-controller-manager"),
                f"--kubeconfig={plane.kubeconfig}",
                "--controllers=garbagecollector,namespace",
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
            ],
            work_dir / "kube-controller-manager.log",
        )
        plane.processes.append(manager)
        _wait_gc_synced(manager)
    except BaseException:
        plane.stop()
        raise
    return plane


def _start_etcd(binaries: Path, work_dir: Path, port: int, peer_port: int) -> _Process:
    peer = f"http://127.0.0.1:{peer_port}"
    client_url = f"http://127.0.0.1:{port}"
    return _Process.launch(
        "etcd",
        [
            str(binaries / "etcd"),
            "--name=wtb-test",
            f"--data-dir={work_dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=wtb-test={peer}",
            "--listen-metrics-urls=",
        ],
        work_dir / "etcd.log",
    )


def _start_api_server(
    binaries: Path, work_dir: Path, etcd_port: int, port: int, token: str
) -> _Process:
    pki = work_dir / "pki"
    pki.mkdir(exist_ok=True)
    key, public = _write_service_account_keys(pki)
    token_file = pki / "tokens.csv"
    token_file.write_text(f'{token},admin,admin-uid,"system:masters"\n')
    token_file.chmod(0o600)
    return _Process.launch(
        "kube-apiserver",
        [
            str(binaries / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={pki}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={public}",
            f"--service-account-signing-key-file={key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--token-auth-file={token_file}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            "--endpoint-reconciler-type=none",
            f"--request-timeout={REQUEST_TIMEOUT}",
        ],
        work_dir / "kube-apiserver.log",
    )


def _write_service_account_keys(pki: Path) -> tuple[Path, Path]:
    """The key pair that signs and verifies ServiceAccount tokens (TokenRequest)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key, public = pki / "sa.key", pki / "sa.pub"
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, public


def _wait_ready(server: str, token: str, processes: list[_Process]) -> None:
    """Poll /readyz (about 5 s after etcd starts); a process that dies fails at once."""
    unverified = ssl._create_unverified_context()  # noqa: S323 (the test server's own certificate)
    request = urllib.request.Request(  # noqa: S310 (https, built here)
        f"{server}/readyz", headers={"Authorization": f"Bearer {token}"}
    )

    def ready() -> bool:
        for process in processes:
            process.check_running()
        try:
            with urllib.request.urlopen(request, timeout=2, context=unverified) as reply:  # noqa: S310
                return bool(reply.read() == b"ok")
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_until(ready, "kube-apiserver /readyz", READY_SECONDS)
    except ServiceError as exc:
        (api_server,) = [p for p in processes if p.name == "kube-apiserver"]
        raise ServiceError(f"{exc}\nkube-apiserver log:\n{_log_tail(api_server.log)}") from exc


def _wait_gc_synced(manager: _Process) -> None:
    def synced() -> bool:
        manager.check_running()
        return GC_SYNCED_LINE in manager.log.read_text(errors="replace")

    try:
        wait_until(synced, "the garbage collector to watch every resource", GC_SYNC_SECONDS)
    except ServiceError as exc:
        raise ServiceError(
            f"{exc}\nkube-controller-manager log:\n{_log_tail(manager.log)}"
        ) from exc


def _kubeconfig(cluster_entry: KubeObject, token: str) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "wtb-test", "cluster": cluster_entry}],
        "users": [{"name": "wtb-test", "user": {"token": token}}],
        "contexts": [{"name": "wtb-test", "context": {"cluster": "wtb-test", "user": "wtb-test"}}],
        "current-context": "wtb-test",
    }


# --- CRDs -------------------------------------------------------------------------------


def load_crd(path: Path) -> KubeObject:
    """A CRD manifest, made installable on Kubernetes 1.20: every `x-kubernetes-validations`
    (CEL, 1.25+) removed, as KubeRay's CRDs need."""
    crd: KubeObject = yaml.safe_load(path.read_text())
    _strip_key(crd, "x-kubernetes-validations")
    return crd


def _strip_key(node: object, key: str) -> None:
    if isinstance(node, dict):
        node.pop(key, None)
        for value in node.values():
            _strip_key(value, key)
    elif isinstance(node, list):
        for value in node:
            _strip_key(value, key)


def install_crds(api_client: client.ApiClient, files: list[Path]) -> None:
    """Create each CRD that is absent, then wait until every one is Established.

    CRDs go through the generic object API as plain dicts: the client's typed models would
    re-validate KubeRay's 1 MB schema on the way in and out."""
    crds = client.CustomObjectsApi(api_client)
    group, version, plural = "apiextensions.k8s.io", "v1", "customresourcedefinitions"
    names = []
    for path in files:
        crd = load_crd(path)
        names.append(crd["metadata"]["name"])
        try:
            crds.create_cluster_custom_object(group, version, plural, crd)
        except client.ApiException as exc:
            if exc.status != 409:
                raise ServiceError(
                    f"installing the CRD {path.name}: {exc.status} {exc.body}"
                ) from exc

    def established(name: str) -> Callable[[], bool]:
        def check() -> bool:
            crd = cast(KubeObject, crds.get_cluster_custom_object(group, version, plural, name))
            conditions = crd.get("status", {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        return check

    for name in names:
        wait_until(established(name), f"the CRD {name} to be Established", ESTABLISHED_SECONDS)


# --- namespaces ----------------------------------------------------------------------------


def create_namespace(api_client: client.ApiClient, prefix: str) -> str:
    """Create a namespace named `<prefix>-<random>` (prefix sanitised to DNS-1123)."""
    cleaned = "".join(c if c.isalnum() else "-" for c in prefix.lower()).strip("-")[:40] or "test"
    name = f"{cleaned.rstrip('-')}-{secrets.token_hex(4)}"
    client.CoreV1Api(api_client).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    )
    return name


def delete_namespace(api_client: client.ApiClient, name: str) -> None:
    """Ask for the namespace's deletion; the namespace controller empties it in the
    background (about 5 s), so nothing waits here."""
    try:
        client.CoreV1Api(api_client).delete_namespace(name)
    except client.ApiException as exc:
        if exc.status != 404:
            raise


@contextlib.contextmanager
def namespace(api_client: client.ApiClient, prefix: str) -> Iterator[str]:
    """A fresh namespace for the duration of the block."""
    name = create_namespace(api_client, prefix)
    try:
        yield name
    finally:
        delete_namespace(api_client, name)
