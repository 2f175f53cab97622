"""Runners execute cells: `inline` in this process; more runners implement the same Protocol."""

from wtb.runners.base import Runner
from wtb.runners.inline import InlineRunner

__all__ = ["InlineRunner", "Runner"]
