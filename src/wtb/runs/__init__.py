"""Runs: what a BatchTest becomes once recorded in the result store. Their identity
(`keys`), their typed spec (`spec`, what a runner needs), and how they are recorded
(`record`). Preparing and executing them is the pipeline's (`wtb.pipeline`).
"""
