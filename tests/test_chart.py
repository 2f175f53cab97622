"""The Helm chart: it lints and renders, its values reach the operator as WTB_* variables,
no credential is rendered, its CRDs are the generated ones, the Argo CD health check maps
BatchTest phases as documented, and its RBAC grants the operator exactly what it needs on a
real API server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from lupa.lua51 import LuaRuntime
from sqlalchemy.engine import make_url

from chart_rbac import (
    CHART,
    NAMESPACE,
    KubeObject,
    apply_operator_identity,
    client_for_token,
    is_allowed,
    manifests,
    remove_operator_identity,
    render,
)
from services.kube import ControlPlane
from wtb.api import BatchTest
from wtb.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
HEALTH = CHART / "argocd" / "wtb.dev" / "BatchTest"
WEBHOOK_CONFIGURATION = "validate.wtb.dev"

# values path -> (variable, a value to set, what the variable then holds)
VALUE_TO_ENV: dict[str, tuple[str, Any, str]] = {
    "operator.logLevel": ("WTB_LOG_LEVEL", "DEBUG", "DEBUG"),
    "operator.reconcileSeconds": ("WTB_RECONCILE_SECONDS", 7, "7"),
    "operator.statusSeconds": ("WTB_STATUS_SECONDS", 11, "11"),
    "operator.clusterReadyTimeoutSeconds": ("WTB_CLUSTER_READY_TIMEOUT_SECONDS", 90, "90"),
    "operator.statusTopRows": ("WTB_STATUS_TOP_ROWS", 25, "25"),
    "operator.clusterDatabaseSecret": ("WTB_CLUSTER_DATABASE_SECRET", "team-db", "team-db"),
    "operator.clusterDatabaseSecretKey": ("WTB_CLUSTER_DATABASE_SECRET_KEY", "dsn", "dsn"),
    "webhook.port": ("WTB_WEBHOOK_PORT", 8443, "8443"),
    "webhook.checkSeconds": ("WTB_WEBHOOK_CHECK_SECONDS", 4, "4"),
    "operator.maxCombinations": ("WTB_MAX_COMBINATIONS", 50000, "50000"),
    "operator.maxCells": ("WTB_MAX_CELLS", 5000000, "5000000"),
}
# Read by `wtb-operator` itself (it is Kopf's setting), not by the settings object.
OPERATOR_MAIN_VARIABLES = {"WTB_LIVENESS_ENDPOINT"}


def nested(path: str, value: Any) -> dict[str, Any]:
    """{"a": {"b": value}} for "a.b"."""
    result: Any = value
    for key in reversed(path.split(".")):
        result = {key: result}
    out: dict[str, Any] = result
    return out


def objects(values: dict[str, Any] | None = None) -> list[KubeObject]:
    return manifests(render(values))


def only(objs: list[KubeObject], kind: str) -> KubeObject:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def container(objs: list[KubeObject], name: str) -> KubeObject:
    pod = only(objs, "Deployment")["spec"]["template"]["spec"]
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    result: KubeObject = found
    return result


def env(c: KubeObject) -> dict[str, KubeObject]:
    return {e["name"]: e for e in c.get("env", [])}


def env_values(c: KubeObject) -> dict[str, str]:
    return {name: e["value"] for name, e in env(c).items() if "value" in e}


# --- rendering -----------------------------------------------------------------------------


def test_chart_lints_clean() -> None:
    report = helm_python.lint(CHART, {"database": {"host": "db"}}, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_renders_the_operator_objects_and_nothing_else() -> None:
    rendered = render()
    for path, text in rendered.items():
        for doc in yaml.safe_load_all(text):
            if doc:
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
    kinds = sorted(o["kind"] for o in manifests(rendered))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    for obj in manifests(rendered):
        if obj["kind"] in {"ServiceAccount", "Deployment", "Service"}:
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_refuses_to_render_without_a_database_host() -> None:
    with (
        helm_python.Chart.load(CHART) as chart,
        pytest.raises(helm_python.HelmRenderError, match=r"database\.host is required"),
    ):
        chart.render({}, name="wtb", namespace=NAMESPACE)


def test_deployment_runs_the_operator_with_a_pgbouncer_sidecar() -> None:
    objs = objects({"image": {"repository": "registry.example/wtb", "tag": "1.2.3"}})
    deployment = only(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator", "pgbouncer"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False

    operator = container(objs, "operator")
    assert operator["image"] == "registry.example/wtb:1.2.3"
    assert operator["command"] == ["wtb-operator"]
    assert pod["serviceAccountName"] == only(objs, "ServiceAccount")["metadata"]["name"]

    pgbouncer = env_values(container(objs, "pgbouncer"))
    assert pgbouncer["POOL_MODE"] == "transaction"
    assert pgbouncer["LISTEN_ADDR"] == "127.0.0.1"
    assert pgbouncer["DB_HOST"] == "postgres.databases.svc"
    url = make_url(env_values(operator)["WTB_DATABASE_URL"])
    assert (url.host, url.port) == ("127.0.0.1", int(pgbouncer["LISTEN_PORT"]))
    assert (url.username, url.database) == (pgbouncer["DB_USER"], pgbouncer["DB_NAME"])


def test_database_values_reach_pgbouncer_and_the_operator_url() -> None:
    database = {"host": "pg.example", "port": 6543, "name": "results", "user": "bench"}
    objs = objects({"database": database, "pgbouncer": {"port": 7432}})
    pgbouncer = env_values(container(objs, "pgbouncer"))
    assert [pgbouncer[k] for k in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "LISTEN_PORT")] == [
        "pg.example",
        "6543",
        "results",
        "bench",
        "7432",
    ]
    url = env_values(container(objs, "operator"))["WTB_DATABASE_URL"]
    assert url == "postgresql://bench@127.0.0.1:7432/results"


def test_credentials_come_only_from_secret_references() -> None:
    secret = {"name": "pg-credentials", "key": "pw"}
    rendered = render({"database": {"passwordSecret": secret}})
    objs = manifests(rendered)
    assert not [o for o in objs if o["kind"] in {"Secret", "ConfigMap"}]
    operator, pgbouncer = env(container(objs, "operator")), env(container(objs, "pgbouncer"))
    for variables, name in ((operator, "PGPASSWORD"), (pgbouncer, "DB_PASSWORD")):
        assert variables[name] == {"name": name, "valueFrom": {"secretKeyRef": secret}}
    assert make_url(operator["WTB_DATABASE_URL"]["value"]).password is None
    for variables in (operator, pgbouncer):
        for name, e in variables.items():
            if any(word in name for word in ("PASSWORD", "TOKEN", "SECRET_KEY")):
                assert "value" not in e or name == "WTB_CLUSTER_DATABASE_SECRET_KEY", name


@pytest.mark.parametrize("path", sorted(VALUE_TO_ENV))
def test_each_value_sets_its_variable(path: str) -> None:
    variable, value, expected = VALUE_TO_ENV[path]
    operator = env_values(container(objects(nested(path, value)), "operator"))
    assert operator[variable] == expected


def test_chart_defaults_are_the_operator_defaults() -> None:
    """A value left alone means what the variable's default means."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for path, (variable, _, _) in VALUE_TO_ENV.items():
        value: Any = defaults
        for key in path.split("."):
            value = value[key]
        field = Settings.model_fields[variable.removeprefix("WTB_").lower()]
        assert value == field.default, path


def test_every_variable_set_is_one_the_operator_reads() -> None:
    operator = env(container(objects(), "operator"))
    known = {f"WTB_{name.upper()}" for name in Settings.model_fields} | OPERATOR_MAIN_VARIABLES
    assert {n for n in operator if n.startswith("WTB_")} - known == set()


def test_webhook_service_reaches_the_webhook_server() -> None:
    objs = objects()
    operator = container(objs, "operator")
    variables = env_values(operator)
    service = only(objs, "Service")
    (port,) = service["spec"]["ports"]
    assert port["port"] == int(variables["WTB_WEBHOOK_PORT"])
    (target,) = [p for p in operator["ports"] if p["name"] == port["targetPort"]]
    assert target["containerPort"] == port["port"]
    pod_labels = only(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert variables["WTB_WEBHOOK_HOST"] == f"{service['metadata']['name']}.{NAMESPACE}.svc"
    assert "WTB_WEBHOOK_CERTFILE" not in variables  # the operator signs its own


def test_webhook_certificate_from_a_tls_secret() -> None:
    objs = objects({"webhook": {"certSecret": "wtb-webhook-tls"}})
    operator = container(objs, "operator")
    variables = env_values(operator)
    pod = only(objs, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v.get("secret")]
    assert volume["secret"]["secretName"] == "wtb-webhook-tls"
    (mount,) = [m for m in operator["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    for variable, file in (("WTB_WEBHOOK_CERTFILE", "tls.crt"), ("WTB_WEBHOOK_KEYFILE", "tls.key")):
        assert variables[variable] == f"{mount['mountPath']}/{file}"


def test_webhook_disabled_drops_its_service_and_permissions() -> None:
    objs = objects({"webhook": {"enabled": False}})
    variables = env_values(container(objs, "operator"))
    assert variables["WTB_WEBHOOK_PORT"] == "0"
    assert "WTB_WEBHOOK_HOST" not in variables
    assert not [o for o in objs if o["kind"] == "Service"]
    groups = {g for rule in only(objs, "ClusterRole")["rules"] for g in rule["apiGroups"]}
    assert "admissionregistration.k8s.io" not in groups


def test_liveness_probe_on_kopfs_health_endpoint() -> None:
    operator = container(objects({"operator": {"livenessPort": 8181}}), "operator")
    assert env_values(operator)["WTB_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8181/healthz"
    probe = operator["livenessProbe"]["httpGet"]
    (port,) = [p for p in operator["ports"] if p["name"] == probe["port"]]
    assert (port["containerPort"], probe["path"]) == (8181, "/healthz")

    without = container(objects({"operator": {"livenessPort": 0}}), "operator")
    assert "livenessProbe" not in without
    assert "WTB_LIVENESS_ENDPOINT" not in env_values(without)


def test_existing_service_account_needs_its_name() -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"serviceAccount\.name is required"):
        render({"serviceAccount": {"create": False}})
    objs = objects({"serviceAccount": {"create": False, "name": "platform-operator"}})
    assert not [o for o in objs if o["kind"] == "ServiceAccount"]
    (subject,) = only(objs, "ClusterRoleBinding")["subjects"]
    assert subject == {
        "kind": "ServiceAccount",
        "name": "platform-operator",
        "namespace": NAMESPACE,
    }


# --- CRDs ----------------------------------------------------------------------------------


def test_chart_crds_are_the_generated_crds() -> None:
    """charts/wtb/crds/ is a copy of crds/ (scripts/chart-crds makes it)."""
    generated = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert generated
    copied = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert copied == generated, "run scripts/chart-crds"
    with helm_python.Chart.load(CHART) as chart:
        assert sorted(Path(c["filename"]).name for c in chart.crds) == sorted(generated)


# --- Argo CD health check ------------------------------------------------------------------

# Stands for a phase of a newer operator: not a BatchTest this version accepts.
FUTURE_PHASE = "unknown-phase.yaml"


def health_cases() -> list[dict[str, Any]]:
    suite = yaml.safe_load((HEALTH / "health_test.yaml").read_text())
    cases: list[dict[str, Any]] = suite["tests"]
    return cases


HealthCheck = Callable[[KubeObject], dict[str, str]]


@pytest.fixture(scope="module")
def health_check() -> HealthCheck:
    """health.lua as Argo CD runs it (gopher-lua: Lua 5.1), a function of the object."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    check: Any = lua.eval("function(obj)\n" + (HEALTH / "health.lua").read_text() + "\nend")

    def run(obj: KubeObject) -> dict[str, str]:
        result = check(lua.table_from(obj, recursive=True))
        return {"status": result["status"], "message": result["message"]}

    return run


@pytest.mark.parametrize("case", health_cases(), ids=lambda c: Path(c["inputPath"]).stem)
def test_argocd_health(case: dict[str, Any], health_check: HealthCheck) -> None:
    obj = yaml.safe_load((HEALTH / case["inputPath"]).read_text())
    assert health_check(obj) == case["healthStatus"]


def test_argocd_health_testdata_are_batchtests() -> None:
    files = sorted((HEALTH / "testdata").glob("*.yaml"))
    assert {Path(c["inputPath"]).name for c in health_cases()} == {f.name for f in files}
    for path in files:
        if path.name != FUTURE_PHASE:
            BatchTest.model_validate(yaml.safe_load(path.read_text()))


def test_argocd_health_covers_every_phase() -> None:
    phases = {
        (yaml.safe_load((HEALTH / c["inputPath"]).read_text()).get("status") or {}).get("phase")
        for c in health_cases()
    }
    schema = yaml.safe_load((ROOT / "crds" / "wtb.dev_batchtests.yaml").read_text())
    status = schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert set(status["properties"]["phase"]["enum"]) <= phases


# --- RBAC on a real API server -------------------------------------------------------------

# (verb, resource, group, subresource, namespaced, name): what the operator does.
NEEDED = [
    *[
        (verb, plural, "wtb.dev", "", namespaced, "")
        for plural in ("batchtests", "workflows")
        for verb, namespaced in (("list", False), ("watch", False), ("get", True), ("patch", True))
    ],
    ("patch", "batchtests", "wtb.dev", "status", True, ""),
    ("patch", "workflows", "wtb.dev", "status", True, ""),
    ("update", "batchtests", "wtb.dev", "finalizers", True, ""),
    *[(verb, "rayclusters", "ray.io", "", True, "") for verb in ("get", "create", "delete")],
    ("create", "events", "", "", True, ""),
    ("list", "customresourcedefinitions", "apiextensions.k8s.io", "", False, ""),
    ("watch", "customresourcedefinitions", "apiextensions.k8s.io", "", False, ""),
    *[
        (verb, kind, "admissionregistration.k8s.io", "", False, name)
        for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
        for verb, name in (("create", ""), ("patch", WEBHOOK_CONFIGURATION))
    ],
]
REFUSED = [
    ("get", "secrets", "", "", True, ""),
    ("list", "secrets", "", "", True, ""),
    ("list", "secrets", "", "", False, ""),
    ("create", "pods", "", "", True, ""),
    ("delete", "batchtests", "wtb.dev", "", True, ""),
    ("update", "batchtests", "wtb.dev", "", True, ""),
    ("patch", "rayclusters", "ray.io", "", True, ""),
    ("patch", "validatingwebhookconfigurations", "admissionregistration.k8s.io", "", False, "x"),
    ("delete", "validatingwebhookconfigurations", "admissionregistration.k8s.io", "", False, ""),
    ("get", "customresourcedefinitions", "apiextensions.k8s.io", "", False, ""),
]


@pytest.fixture
def operator_client(kube: ControlPlane, kube_namespace: str) -> Iterator[client.ApiClient]:
    """A client holding only the token of the chart's ServiceAccount."""
    with kube.api_client() as admin:
        token = apply_operator_identity(admin, kube_namespace)
        try:
            with client_for_token(admin, token) as as_operator:
                yield as_operator
        finally:
            remove_operator_identity(admin, kube_namespace)


@pytest.mark.slow
def test_chart_rbac_grants_what_the_operator_needs_and_no_more(
    operator_client: client.ApiClient, kube_namespace: str
) -> None:
    def allowed(verb: str, resource: str, group: str, sub: str, ns: bool, name: str) -> bool:
        return is_allowed(
            operator_client,
            verb,
            resource,
            group=group,
            subresource=sub,
            namespace=kube_namespace if ns else "",
            name=name,
        )

    assert [n for n in NEEDED if not allowed(*n)] == []
    assert [r for r in REFUSED if allowed(*r)] == []

    # The same verdicts on real requests.
    custom = client.CustomObjectsApi(operator_client)
    listed = custom.list_cluster_custom_object("wtb.dev", "v1alpha1", "batchtests")
    assert isinstance(listed, dict)
    assert "items" in listed
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(operator_client).list_namespaced_secret(kube_namespace)
    assert refused.value.status == 403


@pytest.mark.slow
def test_operator_identity_can_be_applied_twice(kube: ControlPlane, kube_namespace: str) -> None:
    with kube.api_client() as admin:
        try:
            first = apply_operator_identity(admin, kube_namespace)
            second = apply_operator_identity(admin, kube_namespace)
            assert first
            assert second
            bindings = client.RbacAuthorizationV1Api(admin).list_cluster_role_binding()
            subjects = [
                s
                for b in bindings.items
                for s in (b.subjects or [])
                if s.kind == "ServiceAccount" and s.namespace == kube_namespace
            ]
            assert len(subjects) == 1
        finally:
            remove_operator_identity(admin, kube_namespace)
