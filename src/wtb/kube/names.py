"""Names the operator derives from a BatchTest: decided before the side effect they name,
and the same on every retry, so a restarted operator finds what it made instead of making
a second one."""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
"""RayCluster names become Service names (`<name>-head-svc`): DNS labels."""
MAX_LABEL_VALUE = 63

_NOT_IN_LABEL = re.compile(r"[^a-z0-9-]")

LABEL_BATCHTEST = "wtb.dev/batchtest"
LABEL_GENERATION = "wtb.dev/generation"
ANNOTATION_SPEC_HASH = "wtb.dev/spec-hash"


def _short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def raycluster_name(batchtest: str) -> str:
    """The RayCluster WTB creates for a BatchTest. KubeRay refuses a name that is not a
    DNS-1035 label (a letter first, no dots), which a BatchTest's name (a DNS subdomain) may
    be; and `<name>-head-svc` must still fit a label. A name that had to change gets a hash
    of the original, so two BatchTests never share a RayCluster."""
    label = _NOT_IN_LABEL.sub("-", batchtest)
    if not label[:1].isalpha():
        label = f"bt-{label}"
    budget = MAX_NAME - len("-head-svc")
    if label == batchtest and len(label) + len("-ray") <= budget:
        return f"{label}-ray"
    return f"{label[: budget - 13].rstrip('-')}-{_short_hash(batchtest)}-ray"


def label_value(text: str) -> str:
    """`text` as a label value (at most 63 characters): a longer one is cut and given a hash
    of the whole, so it still tells objects apart."""
    if len(text) <= MAX_LABEL_VALUE:
        return text
    return f"{text[: MAX_LABEL_VALUE - 9].rstrip('-._')}-{_short_hash(text)}"


def submission_id(uid: str, generation: int, attempt: int) -> str:
    """The Ray job of one attempt: a retried submission of the same attempt is refused by Ray
    as a duplicate, never run twice."""
    return f"wtb-{uid[:8]}-g{generation}-{attempt}"
