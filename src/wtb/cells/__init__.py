"""Running one cell: the attempt protocol, its retries and timeouts, and scoring.

Every runner runs cells through `wtb.cells.executor.CellExecutor`; nothing here knows
where a cell runs, nor how results are recorded.
"""
