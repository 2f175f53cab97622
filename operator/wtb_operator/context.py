"""What every handler shares: settings, the Kubernetes client, the result store, and the
times of the last progress write per object (a rate limit, not a record: status and the
database are the record)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from wtb.settings import Settings
from wtb.storage import ResultStore
from wtb_operator.kubeapi import KubeApi


@dataclass
class OperatorContext:
    settings: Settings
    kube: KubeApi
    store: ResultStore
    _progress_written: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def progress_due(self, uid: str, now: float) -> bool:
        """True at most once per `status_seconds` per object."""
        with self._lock:
            last = self._progress_written.get(uid)
            if last is not None and now - last < self.settings.status_seconds:
                return False
            self._progress_written[uid] = now
            return True

    def forget(self, uid: str) -> None:
        with self._lock:
            self._progress_written.pop(uid, None)
