"""Crucible's small exception hierarchy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class CrucibleError(Exception):
    """Base of every error Crucible raises on purpose."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem with a job spec.

    Attributes:
        path: Dotted path of the offending field, e.g. ``space.lr.low``.
        value: The value found there.
        allowed: What would have been accepted.
    """

    path: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        return f"`{self.path}` {self.allowed}, but got {self.value!r}."


class SpecError(CrucibleError, ValueError):
    """A job spec is invalid; raised at load/submit time, before anything is written.

    Attributes:
        issues: Every problem found (the message lists all of them).
    """

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = list(issues)
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"invalid job spec ({len(self.issues)} problem(s)):\n{lines}")

    @property
    def path(self) -> str:
        """Field path of the first problem."""
        return self.issues[0].path


class TrialFailed(CrucibleError):
    """Raised inside a trial to mark it failed with a reason."""


class TrialStopped(CrucibleError):
    """Raised by ``report()`` inside a trial that the coordinator asked to stop (pruned)."""
