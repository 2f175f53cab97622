"""Errors WTB raises for user mistakes: each names where the mistake is and how to fix it."""

from __future__ import annotations


class WtbError(Exception):
    """Base of every error WTB reports to a user (no traceback, exit code 2 in the CLI)."""


class ManifestError(WtbError):
    """A manifest, data set or referenced code is wrong.

    `where` locates the mistake (file, document, resource, field path); `fix` says what to do.
    """

    def __init__(self, message: str, *, where: str = "", fix: str = "") -> None:
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class ManifestErrors(WtbError):
    """Several manifest errors found in one pass, reported together."""

    def __init__(self, errors: list[ManifestError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.render() for e in errors))


def yaml_problem(exc: Exception) -> tuple[str, str]:
    """(", line N" or "", what is wrong) of a PyYAML error, for a ManifestError."""
    mark = getattr(exc, "problem_mark", None)
    line = f", line {mark.line + 1}" if mark is not None else ""
    return line, str(getattr(exc, "problem", None) or exc)


class StorageError(WtbError):
    """The result store cannot be reached or is not in the expected shape."""


class ClusterError(WtbError):
    """The Ray cluster cannot be reached, or WTB's workers cannot start on it."""
