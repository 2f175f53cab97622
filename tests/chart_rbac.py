"""The Helm chart as tests use it: rendered offline with helm-python-sdk, and the operator's
identity (ServiceAccount, ClusterRole, ClusterRoleBinding) applied to a test API server, so
that the operator can run with exactly the permissions the chart grants.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from services.support import ServiceError, wait_until

CHART = Path(__file__).resolve().parents[1] / "charts" / "wtb"
RELEASE = "wtb"
NAMESPACE = "wtb-system"
DATABASE_HOST = "postgres.databases.svc"
"""`database.host` has no default (the chart refuses to render without it)."""

TOKEN_SECONDS = 7200
BINDING_SECONDS = 30.0
IDENTITY_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")

KubeObject = dict[str, Any]


def render(
    values: Mapping[str, Any] | None = None,
    *,
    namespace: str = NAMESPACE,
    release: str = RELEASE,
) -> dict[str, str]:
    """The chart's templates rendered with `values` (and a database host unless given)."""
    merged: dict[str, Any] = copy.deepcopy(dict(values or {}))
    merged.setdefault("database", {}).setdefault("host", DATABASE_HOST)
    with helm_python.Chart.load(CHART) as chart:
        return chart.render(merged, name=release, namespace=namespace)


def manifests(rendered: Mapping[str, str]) -> list[KubeObject]:
    """Every object in the rendered templates, in template order."""
    objects: list[KubeObject] = []
    for text in rendered.values():
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def operator_identity(namespace: str) -> list[KubeObject]:
    """The chart's ServiceAccount, ClusterRole and ClusterRoleBinding for an operator in
    `namespace`. Cluster-scoped names carry the namespace, so identities of several test
    namespaces live side by side."""
    rendered = render({"fullnameOverride": f"wtb-{namespace}"}, namespace=namespace)
    return [obj for obj in manifests(rendered) if obj["kind"] in IDENTITY_KINDS]


def apply_operator_identity(api_client: client.ApiClient, namespace: str) -> str:
    """Create the operator's identity in `namespace` (idempotent), wait until the API server
    authorizes it, and return a token of its ServiceAccount (TokenRequest)."""
    core = client.CoreV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    identity = operator_identity(namespace)
    for obj in identity:
        _apply(core, rbac, namespace, obj)
    account = next(o["metadata"]["name"] for o in identity if o["kind"] == "ServiceAccount")
    request = client.AuthenticationV1TokenRequest(
        # No audiences: the API server's own.
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS)
    )
    reply = core.create_namespaced_service_account_token(account, namespace, request)
    if reply.status is None or not reply.status.token:
        raise ServiceError(f"TokenRequest for {namespace}/{account} returned no token")
    token = reply.status.token
    with client_for_token(api_client, token) as as_operator:
        # RBAC reaches the authorizer through an informer: a new binding takes a moment.
        wait_until(
            lambda: is_allowed(as_operator, "list", "batchtests", group="wtb.dev"),
            f"the operator's ClusterRoleBinding in {namespace} to take effect",
            BINDING_SECONDS,
        )
    return token


def remove_operator_identity(api_client: client.ApiClient, namespace: str) -> None:
    """Delete the cluster-scoped part of the identity (the namespace takes the rest)."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    for obj in operator_identity(namespace):
        name = obj["metadata"]["name"]
        try:
            if obj["kind"] == "ClusterRole":
                rbac.delete_cluster_role(name)
            elif obj["kind"] == "ClusterRoleBinding":
                rbac.delete_cluster_role_binding(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def client_for_token(api_client: client.ApiClient, token: str) -> client.ApiClient:
    """A client for the same server that authenticates with `token` only: the admin's
    credentials (token, refresh hook, client certificate) are not carried over."""
    base = api_client.configuration
    configuration = client.Configuration(
        host=base.host,
        api_key={"BearerToken": token},
        api_key_prefix={"BearerToken": "Bearer"},
    )
    configuration.verify_ssl = base.verify_ssl
    configuration.ssl_ca_cert = base.ssl_ca_cert
    return client.ApiClient(configuration)


def is_allowed(
    api_client: client.ApiClient,
    verb: str,
    resource: str,
    *,
    group: str = "",
    subresource: str = "",
    namespace: str = "",
    name: str = "",
) -> bool:
    """Whether the client's own identity may do this (SelfSubjectAccessReview);
    `namespace` "" asks for all namespaces, as a cluster-wide watch does."""
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource or None,
                namespace=namespace or None,
                name=name or None,
            )
        )
    )
    reply = client.AuthorizationV1Api(api_client).create_self_subject_access_review(review)
    return reply.status is not None and reply.status.allowed


def _apply(
    core: client.CoreV1Api, rbac: client.RbacAuthorizationV1Api, namespace: str, obj: KubeObject
) -> None:
    """Create `obj`; an existing cluster-scoped object is replaced (an older chart's rules
    must not linger), an existing ServiceAccount kept."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    # The client sends a plain dict as it is; its signatures only name the model classes.
    body: Any = obj
    try:
        if kind == "ServiceAccount":
            core.create_namespaced_service_account(namespace, body)
        elif kind == "ClusterRole":
            rbac.create_cluster_role(body)
        else:
            rbac.create_cluster_role_binding(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        if kind == "ClusterRole":
            rbac.replace_cluster_role(name, body)
        elif kind == "ClusterRoleBinding":
            rbac.replace_cluster_role_binding(name, body)
