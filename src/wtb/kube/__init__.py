"""What the operator decides, as pure functions and small clients: names, the RayCluster it
builds, the checks it can make without user code, conditions, status, and the Ray job API.

The Kopf handlers in `wtb_operator` only read the cluster, call these and write back.
"""
