"""Crucible's user-facing layer: job specs, the job loop, workers, tracking, CLI.

``from service import JobSpec, run`` is all an embedded user needs. Heavy parts (Ray,
MLflow, torch) are imported only when used, so ``service.spec`` stays light.
"""

from __future__ import annotations

from typing import Any

from service.errors import CrucibleError, SpecError
from service.spec import Budget, JobSpec, Objective, Resources, Tracking

__all__ = [
    "Budget",
    "Client",
    "CrucibleError",
    "JobResult",
    "JobSpec",
    "Objective",
    "Resources",
    "SpecError",
    "Tracking",
    "run",
]


def __getattr__(name: str) -> Any:
    if name == "run":
        from service.runner import run

        return run
    if name == "Client":
        from service.client import Client

        return Client
    if name == "JobResult":
        from service.events import JobResult

        return JobResult
    raise AttributeError(f"module 'service' has no attribute {name!r}")
