"""The pipeline every face shares: prepare a run (check, plan), execute it (a runner's
results into the store), and drive a recorded run to completion (the batch driver).

The CLI, the Ray job driver and the operator each enter here at one point; none of them
re-implements a step.
"""
