"""The errors WTB reports, what each means for the user, and the exit codes of its commands.

    WtbError                 a problem WTB explains; no traceback       exit 2, not retryable
    ├── ManifestError        a manifest, data set or referenced code is wrong, at `where`;
    │                        `fix` says what to do
    ├── ManifestErrors       several ManifestErrors found in one pass
    ├── RunDeadlineExceeded  the run passed spec.activeDeadlineSeconds                exit 5
    └── UnavailableError     a service failed: running again may well succeed    exit 3, retryable
        ├── StorageError     the result store cannot be reached or is not in shape
        └── ClusterError     the Ray cluster cannot be reached or cannot run WTB's workers
            └── RayJobError  (wtb.kube.rayjobs) the Ray job API refused or did not answer

Each class carries what a caller decides on: `retryable` (a driver that failed with it is
resubmitted; otherwise the BatchTest fails at once) and `exit_code`. A failure of one cell
is never an exception here: it is a recorded result (`wtb.cells`).
"""

from __future__ import annotations

import signal
from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """Exit codes of `wtb` and the batch driver, defined once."""

    OK = 0
    GATE = 1
    """`wtb run`: a verdict gate failed (`--fail-on worse` or a metric threshold); the
    driver: cells are missing; `wtb results`: no stored run matches."""
    USAGE = 2
    """A mistake that running again will not mend: the workflow, the data set, the setup."""
    UNAVAILABLE = 3
    """The database or the Ray cluster failed: running again may well succeed."""
    CELLS_FAILED = 4
    """`wtb run`: cells failed or were interrupted (`--fail-on failed`, the default), or a
    baseline has no successful cell (every gate but `never`)."""
    DEADLINE = 5
    """`wtb run`: the run passed its BatchTest's `activeDeadlineSeconds` and was stopped;
    recorded cells are kept, running again resumes."""
    INTERRUPTED = 128 + signal.SIGINT
    TERMINATED = 128 + signal.SIGTERM

    INCOMPLETE = GATE
    """The batch driver's name for 1: cells are missing (the operator submits it again)."""


class WtbError(Exception):
    """Base of every error WTB reports to a user (no traceback): what is wrong, and `fix`,
    what to do about it, rendered on a line of its own."""

    retryable: ClassVar[bool] = False
    exit_code: ClassVar[ExitCode] = ExitCode.USAGE

    def __init__(self, message: str, *, fix: str = "") -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class ManifestError(WtbError):
    """A manifest, data set or referenced code is wrong.

    `where` locates the mistake (file, document, resource, field path); `fix` says what to do.
    """

    def __init__(self, message: str, *, where: str = "", fix: str = "") -> None:
        self.where = where
        super().__init__(message, fix=fix)

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text}\n  fix: {self.fix}" if self.fix else text


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


class RunDeadlineExceeded(WtbError):
    """A run passed its BatchTest's `spec.activeDeadlineSeconds` and was stopped."""

    exit_code = ExitCode.DEADLINE


class UnavailableError(WtbError):
    """A service WTB depends on failed; nothing is wrong with the user's input."""

    retryable = True
    exit_code = ExitCode.UNAVAILABLE


class StorageError(UnavailableError):
    """The result store cannot be reached or is not in the expected shape."""


class ClusterError(UnavailableError):
    """The Ray cluster cannot be reached, or WTB's workers cannot start on it."""


class Terminated(BaseException):
    """SIGTERM arrived (`wtb run` stopped, a stopped Ray job, a deleted pod): raised in the
    main thread, it unwinds a run as Ctrl-C does, so buffered results are written and the
    run is marked stopped before the process exits 143. Not a WtbError: like
    KeyboardInterrupt, nothing for the user to fix."""

    def __str__(self) -> str:
        return "terminated (SIGTERM)"
