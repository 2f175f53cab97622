"""What the operator decides, as pure functions and small clients: names, the RayCluster it
builds, the checks it can make without user code (`checks`), conditions, status, the Ray job
API, and the reconcile step's decisions: typed views of what a step observed (`observed`),
the decisions (`decide`) and their verdicts (`verdicts`), and the status each verdict gives,
computed on a copy (`status_copy`, `transitions`).

The Kopf handlers in `wtb_operator` only read the cluster, call these and perform what they
decide.
"""
