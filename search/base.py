"""The Strategy protocol every search family implements, and the values it trades.

The runner in ``service/runner.py`` drives every strategy with one loop::

    while not strategy.done():
        for proposal in strategy.ask(free_slots):
            dispatch(proposal)
        result = next_finished()
        strategy.tell(result)

Strategies never touch Ray, MLflow or the file system; they own a seeded RNG and
everything needed to resume is in :meth:`Strategy.state`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from search.space import Space


class Status(enum.Enum):
    """Outcome of one finished piece of work."""

    OK = "ok"
    FAILED = "failed"
    PRUNED = "pruned"


class Decision(enum.Enum):
    """Answer to an intermediate report: keep training or stop now."""

    CONTINUE = "continue"
    STOP = "stop"


class Mode(enum.Enum):
    """Direction of the objective."""

    MIN = "min"
    MAX = "max"

    def sign(self) -> float:
        """Factor that turns the objective into a quantity to minimize."""
        return 1.0 if self is Mode.MIN else -1.0

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` is strictly better than ``b``."""
        return a < b if self is Mode.MIN else a > b


@dataclass(frozen=True)
class Proposal:
    """One piece of work the strategy wants run.

    Attributes:
        trial_id: Unique, increasing id within a job.
        params: Hyperparameters (searched values only; the runner merges fixed ones).
    """

    trial_id: int
    params: dict[str, Any]


@dataclass
class Result:
    """A finished (or intermediate) piece of work.

    Attributes:
        trial_id: Id of the proposal this answers.
        params: The proposal's parameters.
        status: ``Status.OK``, ``FAILED`` or ``PRUNED``.
        value: Objective value in the user's direction, or ``None`` when failed.
        metrics: All metrics the trial reported.
        reason: Why it failed or was pruned.
        step: Epoch of an intermediate report (``None`` for a final result).
    """

    trial_id: int
    params: dict[str, Any]
    status: Status = Status.OK
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    step: int | None = None

    @property
    def ok(self) -> bool:
        """True when the result carries a usable objective value."""
        return self.status is not Status.FAILED and self.value is not None and math.isfinite(self.value)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for checkpoints and the store)."""
        return {
            "trial_id": self.trial_id,
            "params": dict(self.params),
            "status": self.status.value,
            "value": self.value,
            "metrics": dict(self.metrics),
            "reason": self.reason,
            "step": self.step,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        """Inverse of :meth:`to_dict`."""
        return cls(
            trial_id=d["trial_id"],
            params=dict(d["params"]),
            status=Status(d["status"]),
            value=d.get("value"),
            metrics=dict(d.get("metrics", {})),
            reason=d.get("reason"),
            step=d.get("step"),
        )


@dataclass(frozen=True)
class PrunerConfig:
    """Which pruner to use on intermediate reports, and its knobs.

    Attributes:
        kind: ``"none"``, ``"median"`` or ``"asha"``.
        warmup_steps: Median: reports before this epoch are never pruned.
        min_trials: Median: trials that must have reported a step before pruning at it.
        min_resource: ASHA: first rung (epoch).
        reduction_factor: ASHA: eta; keep the top 1/eta at each rung.
    """

    kind: str = "none"
    warmup_steps: int = 1
    min_trials: int = 3
    min_resource: int = 1
    reduction_factor: int = 3


@dataclass(frozen=True)
class SearchConfig:
    """Everything a strategy needs to be built or restored (no Ray, no I/O).

    Attributes:
        space: The search space.
        mode: Objective direction.
        n_trials: Trial budget.
        seed: Seed for the strategy's own RNG.
        pruner: Pruning on intermediate reports.
        options: Strategy-specific options (e.g. ``n_initial_points`` for bayes).
    """

    space: Space
    mode: Mode = Mode.MIN
    n_trials: int = 20
    seed: int = 0
    pruner: PrunerConfig = PrunerConfig()
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Strategy(Protocol):
    """How the next work is chosen. See the module docstring for the loop.

    Optional methods the runner uses when a strategy has them (looked up with ``getattr``;
    none is part of the protocol check):

    * ``pending() -> list[Proposal]`` — after :meth:`restore`, work handed out but never told,
      to dispatch again (NEAT batches, annealing rounds).
    * ``idle() -> None`` — called once the runner has dispatched what it could and is about
      to wait for results: work that can overlap the workers' (NEAT's speciation).
    * ``rounds() -> list[dict]`` — per-round summaries, read-only, for ``on_round`` reporters
      and ``JobResult.rounds`` (a NEAT generation, an annealing round).
    * ``ended: str | None`` — why the search ended early (``"solved"``), for the stop reason.
    * ``checkpoint_replica(key, blob)`` — a worker's latest checkpoint of stateful work
      (an annealing replica), kept in :meth:`state`.
    """

    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` new pieces of work; ``[]`` means wait for a tell."""
        ...

    def tell(self, result: Result) -> None:
        """One finished (or failed, or pruned) piece of work."""
        ...

    def report(self, result: Result) -> Decision:
        """An intermediate report (``result.step`` set); CONTINUE or STOP."""
        ...

    def done(self) -> bool:
        """True when no more work will be asked."""
        ...

    def best(self) -> Result | None:
        """Best successful result so far, in the objective's direction."""
        ...

    def state(self) -> dict[str, Any]:
        """JSON-serializable state, enough to resume after a crash."""
        ...

    @classmethod
    def restore(cls, config: SearchConfig, state: dict[str, Any]) -> Strategy:
        """Rebuild a strategy from :meth:`state`."""
        ...
