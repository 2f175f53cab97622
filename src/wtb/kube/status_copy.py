"""A custom resource's status computed on a copy, as KubeRay and cert-manager do: conditions
set by type (each setting says whether it changed, which is what an event is worth), and the
merge patch of what changed since the last write, so an unchanged status is never written.

Generic over WTB's status models (anything with `conditions`); the Kubernetes write itself
is the operator's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, Protocol, Self, TypeVar

from wtb.api._base import Condition
from wtb.kube import conditions as cond


class ConditionedStatus(Protocol):
    """What a status model offers: its conditions, validation, a deep copy, its JSON form."""

    conditions: list[Condition]

    @classmethod
    def model_validate(cls, obj: Any) -> Self: ...

    def model_copy(self, *, deep: bool = False) -> Self: ...

    def model_dump(
        self, *, mode: str = "python", by_alias: bool | None = None, exclude_none: bool = False
    ) -> dict[str, Any]: ...


S = TypeVar("S", bound=ConditionedStatus)

KOPF_KEY = "kopf"
"""Kopf keeps its own progress under status.kopf; it is not WTB's status."""


def read_status(body: Mapping[str, Any], model: type[S]) -> S:
    """The typed status of an API object (empty when it has none), without Kopf's key."""
    raw = dict(body.get("status") or {})
    raw.pop(KOPF_KEY, None)
    return model.model_validate(raw)


def dump_status(status: ConditionedStatus) -> dict[str, Any]:
    """A status as the API server stores it: camelCase, unset fields left out."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusCopy(Generic[S]):
    """The status one step started from (`before`) and the copy it changes (`status`)."""

    def __init__(self, before: S, *, generation: int) -> None:
        self.before = before
        self.status: S = before.model_copy(deep=True)
        self.generation = generation
        self._written = dump_status(before)

    def set_condition(
        self,
        type_: str,
        status: cond.Status,
        reason: cond.Reason,
        message: str = "",
        *,
        now: datetime,
    ) -> bool:
        """Set a condition of this generation; True when its status or reason changed."""
        old = cond.find(self.status.conditions, type_)
        self.status.conditions = cond.set_condition(
            self.status.conditions,
            type_,
            status,
            reason,
            message,
            generation=self.generation,
            now=cond.rfc3339(now),
        )
        return old is None or old.status != status or old.reason != reason

    def patch(self) -> dict[str, Any]:
        """What to send to turn the last status written into this one ({} when equal)."""
        return status_patch(self._written, dump_status(self.status))

    def mark_written(self) -> None:
        """The status as it is now has been written."""
        self._written = dump_status(self.status)


def status_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A merge patch (RFC 7386) turning status `before` into `after`; Kopf's own `kopf` key
    is left alone."""
    return _merge_patch({k: v for k, v in before.items() if k != KOPF_KEY}, after)


def _merge_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The API server merges nested objects key by key, so a key gone from a nested object
    (the matrix's) must be sent as null there too; lists are replaced whole."""
    patch: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            nested = _merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif old != value:
            patch[key] = value
    patch.update({k: None for k in before if k not in after})
    return patch
