"""The operator's Kubernetes client: the custom objects it reads and writes, and status
written as a merge patch (computed by `wtb.kube.status_copy`), with typed errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from wtb.api._base import GROUP, VERSION
from wtb.kube.raycluster import RAY_GROUP, RAY_PLURAL, RAY_VERSION

MERGE_PATCH = "application/merge-patch+json"
PASSING_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers of an API server that is overloaded (429, API Priority and Fairness) or cannot
reach its storage (5xx, etcd down): asking again later is the fix."""
MAX_API_BACKOFF_SECONDS = 30.0
KOPF_ERROR_BACKOFFS = (1, 1, 2, 3, 5, 8, 13, 21, *([30] * 12))
"""Kopf's own requests (watches, discovery, its patches) retry 429s and 5xx this long (about
7 minutes) before the operator gives up and exits: Kopf's default (54 s) ends the operator
under a throttling that lasts a minute, and a restarted operator only adds load."""


def load_api_client() -> client.ApiClient:
    """In a pod: its ServiceAccount; elsewhere: the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class Conflict(Exception):
    """The object changed since it was read: what was decided from it may be stale."""


class Invalid(Exception):
    """The API server refused an object WTB built (HTTP 422): its message says why."""


class Forbidden(Exception):
    """The operator's identity lacks a permission: a chart (RBAC) problem, said plainly."""


def _message(exc: ApiException) -> str:
    """The API server's own message in an error reply."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or "")
    except ValueError:
        return ""


def forbidden_message(exc: ApiException, verb: str, what: str, namespace: str) -> str:
    said = _message(exc)
    return (
        f"forbidden: the operator may not {verb} {what} in namespace {namespace!r}"
        + (f" ({said})" if said else "")
        + "; grant it in the operator's ClusterRole (chart: templates/rbac.yaml)"
    )


@dataclass(frozen=True)
class ApiTrouble:
    """The API server is overloaded or unreachable for now: what to log, and when to try
    again."""

    message: str
    delay: float


def api_trouble(exc: BaseException, *, interval: float, retry: int) -> ApiTrouble | None:
    """Whether `exc` (from the Kubernetes client) is a passing trouble of the API server, and
    how long to wait before the next attempt: the reconcile interval, doubled for each
    failure in a row (`retry`), at most MAX_API_BACKOFF_SECONDS, and never less than a 429's
    Retry-After. None for every other error (a bug, a refusal): those are not retried here."""
    backoff = min(interval * 2 ** min(retry, 16), MAX_API_BACKOFF_SECONDS)
    if isinstance(exc, ApiException):
        if exc.status not in PASSING_STATUSES:
            return None
        said = f"{exc.status} {exc.reason or ''}".strip()
        if exc.status == 429:
            asked = _retry_after(exc.headers)
            delay = max(backoff, min(asked, MAX_API_BACKOFF_SECONDS)) if asked else backoff
            return ApiTrouble(f"the API server is throttling the operator ({said})", delay)
        return ApiTrouble(f"the API server answered {said}", backoff)
    if isinstance(exc, urllib3.exceptions.HTTPError):  # refused, reset, timed out
        return ApiTrouble(f"the API server does not answer ({type(exc).__name__})", backoff)
    return None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """A Retry-After header in seconds (the API server sends whole seconds); None if absent
    or not a number."""
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            try:
                seconds = float(value)
            except ValueError:
                return None
            return seconds if seconds >= 0 else None
    return None


@dataclass
class KubeApi:
    api_client: client.ApiClient

    @property
    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)

    def _guard(self, exc: ApiException, verb: str, what: str, namespace: str) -> None:
        if exc.status == 403:
            raise Forbidden(forbidden_message(exc, verb, what, namespace)) from exc

    def _get(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """A custom object by name; None when there is none."""
        try:
            obj = self._custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            self._guard(exc, "get", f"{plural}.{group}", namespace)
            raise
        return cast(dict[str, Any], obj)

    def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(GROUP, VERSION, "workflows", namespace, name)

    def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        resource_version: str | None = None,
    ) -> str | None:
        """Merge-patch status; with `resource_version`, only if the object has not changed
        since that version (Conflict otherwise). The new resource version; None when the
        object is gone."""
        body: dict[str, Any] = {"status": patch}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            written = self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, body, _content_type=MERGE_PATCH
            )
        except ApiException as exc:
            if exc.status == 404:
                return None  # deleted meanwhile
            if exc.status == 409:
                raise Conflict(f"{plural} {namespace}/{name} changed since it was read") from exc
            self._guard(exc, "patch", f"{plural}.wtb.dev/status", namespace)
            raise
        version = (cast(dict[str, Any], written).get("metadata") or {}).get("resourceVersion")
        return str(version) if version is not None else None

    def get_raycluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(RAY_GROUP, RAY_VERSION, RAY_PLURAL, namespace, name)

    def create_raycluster(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create it; False when one of that name exists already."""
        try:
            self._custom.create_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, namespace, RAY_PLURAL, body
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status == 422:
                raise Invalid(_message(exc)) from exc
            self._guard(exc, "create", "rayclusters.ray.io", namespace)
            raise
        return True

    def delete_raycluster(self, namespace: str, name: str) -> bool:
        """Delete it (its pods go with it); False when it was gone."""
        try:
            self._custom.delete_namespaced_custom_object(
                RAY_GROUP,
                RAY_VERSION,
                namespace,
                RAY_PLURAL,
                name,
                propagation_policy="Background",
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            self._guard(exc, "delete", "rayclusters.ray.io", namespace)
            raise
        return True
