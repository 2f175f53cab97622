"""Options that `wtb run` and `wtb driver` share: where and how widely cells run on Ray."""

from __future__ import annotations

import click

RAY_ADDRESS = click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    help="Ray cluster to run on (host:port or ray://host:port) [default: start Ray locally].",
)
ACTORS = click.option(
    "--actors",
    type=click.IntRange(1, 4096),
    help="Ray actors running cells [default: one per CPU of the cluster].",
)
CONCURRENCY = click.option(
    "--concurrency", type=click.IntRange(1, 4096), help="Cells at once [default: the BatchTest's]."
)
