"""Verdicts every WTB controller's decisions give, whatever the resource: fail, wait, or just
say something. Frozen data: a decision returns one, the operator performs it (status on a
copy, then the write, then the event), so what to do is tested apart from doing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from wtb.kube import conditions as cond


@dataclass(frozen=True)
class Event:
    """A Kubernetes event: Normal for actions, Warning for failures. Reasons are a closed
    vocabulary (docs/operator.md)."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class SetCondition:
    type: str
    status: cond.Status
    reason: cond.Reason
    message: str = ""


@dataclass(frozen=True)
class Fail:
    """The end of the run: phase Failed, conditions Complete False and Failed True with
    `reason`, and a Warning event. `condition` also says where it failed (Validated,
    ClusterReady) when that condition would otherwise tell an older story."""

    reason: cond.Reason
    message: str
    condition: SetCondition | None = None

    @property
    def event(self) -> Event:
        return Event(self.reason, self.message, warning=True)


@dataclass(frozen=True)
class Wait:
    """Not ready to go on, and it may come right by itself (an object applied later, a cluster
    getting ready): condition `condition` False with `reason`, `message` in status, and a
    Warning event when the reason is new and worth one (`warn`)."""

    condition: str
    reason: cond.Reason
    message: str
    warn: bool = True

    @property
    def event(self) -> Event:
        return Event(self.reason, self.message, warning=True)


@dataclass(frozen=True)
class Note:
    """Nothing to change but status' message (a service that did not answer)."""

    message: str
