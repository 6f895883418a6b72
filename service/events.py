"""What the job loop tells its observers: trial records and the Reporter hooks.

Side effects (MLflow logging, progress bars, the store) go through reporters, the way
neat-python's reporters observe its population: the loop calls the hooks, each reporter
does its own thing, and none of them can stall dispatch for long.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from search.base import Mode, Status


@dataclass
class TrialRecord:
    """Everything known about one trial.

    Attributes:
        trial_id: Id given by the strategy.
        params: Searched parameters.
        config: Full config the trial ran with (fixed + searched). Once the trial has finished,
            its ``private`` payload is dropped from it, except in the job's best trial.
        status: ``None`` while running, then a :class:`Status`.
        value: Final objective value (``None`` if failed).
        metrics: Final metrics.
        reason: Failure or pruning reason.
        history: ``(epoch, metrics)`` per intermediate report.
        node: Host the trial ran on.
        device: ``"cpu"`` or ``"cuda"``.
        started: Unix time the trial was dispatched.
        finished: Unix time the final result arrived.
        attempts: Times the trial was dispatched (a worker that died is retried).
        private: Keys of ``config`` that are work payload, not settings (a NEAT batch's
            genomes, a replica's checkpoint): left out of ``params`` and of :meth:`to_dict`,
            so the job store, the HTTP API and MLflow never carry them.
    """

    trial_id: int
    params: dict[str, Any]
    config: dict[str, Any]
    status: Status | None = None
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    node: str | None = None
    device: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    attempts: int = 1
    private: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON)."""
        return {
            "trial_id": self.trial_id,
            "params": self.params,
            "config": {k: v for k, v in self.config.items() if k not in self.private},
            "status": self.status.value if self.status else "running",
            "value": self.value,
            "metrics": self.metrics,
            "reason": self.reason,
            "node": self.node,
            "device": self.device,
            "started": self.started,
            "finished": self.finished,
            "attempts": self.attempts,
        }


@dataclass(frozen=True)
class ModelBlob:
    """The best trial's model as a pickled ``torch.nn.Module``, and a few input rows for its signature."""

    data: bytes
    input_example: Any = None


@dataclass
class JobResult:
    """What a finished job returns.

    Attributes:
        name: Job name.
        metric: Objective metric.
        mode: Objective direction.
        trials: Every trial, in id order.
        best: Best successful trial, or ``None``.
        stop_reason: Why the job ended (``"budget"``, ``"target"``, ``"wall_clock"``, ...).
        wall_seconds: Job duration.
        tracking_uri: MLflow tracking URI the job logged to.
        run_id: MLflow parent run id (``None`` without tracking).
        rounds: The strategy's per-round summaries, for strategies that work in rounds (a NEAT
            generation: ``best``, ``mean``, ``species``, ...; an annealing round); else empty.
    """

    name: str
    metric: str
    mode: Mode
    trials: list[TrialRecord]
    best: TrialRecord | None
    stop_reason: str
    wall_seconds: float
    tracking_uri: str | None = None
    run_id: str | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: Status) -> int:
        """Number of trials that ended with ``status``."""
        return sum(1 for t in self.trials if t.status is status)


class Reporter:
    """Observer of one job. Override the hooks you need; each default does nothing."""

    def on_job_start(self, spec: Any) -> None:
        """The job is about to dispatch its first trial."""

    def on_trial_start(self, record: TrialRecord) -> None:
        """A trial was dispatched to a worker."""

    def on_trial_report(self, record: TrialRecord, epoch: int, metrics: dict[str, float]) -> None:
        """A running trial reported intermediate metrics."""

    def on_trial_retry(self, record: TrialRecord, reason: str) -> None:
        """A trial's worker died; the trial goes back in the queue (``record.attempts`` so far)."""

    def on_trial_end(self, record: TrialRecord, best: TrialRecord | None) -> None:
        """A trial finished (ok, failed or pruned); ``best`` is the best so far."""

    def on_round(self, index: int, stats: dict[str, Any]) -> None:
        """A strategy closed a round (a NEAT generation, a replica-exchange round): its statistics."""

    def on_job_end(self, result: JobResult, best_model: ModelBlob | None) -> None:
        """The job ended; ``best_model`` is the best trial's model, if it has one."""
