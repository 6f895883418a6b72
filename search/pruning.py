"""Pruners: stop unpromising trials early on their intermediate (per-epoch) reports.

A pruner sees every intermediate report of every trial, in the user's direction (``mode``
says which way is better), and answers :class:`~search.base.Decision.CONTINUE` or
``STOP``. Strategies own one pruner and delegate :meth:`Strategy.report` to it.

* :class:`NoPruner` never stops anything.
* :class:`MedianStopping` stops a trial whose value at step ``s`` is worse than the median
  of the other trials' values at ``s`` (after ``warmup_steps``, once ``min_trials`` other
  trials reported ``s``).
* :class:`ASHA` (asynchronous successive halving) keeps, at each rung
  ``min_resource * eta**k``, only trials in the top ``1/eta`` of what that rung has seen.

A non-finite report (NaN, inf) is always answered ``STOP`` by the median and ASHA pruners:
training has diverged. State is plain JSON data, so a pruner survives a crash: the median
and ASHA pruners keep every recorded report as an append-only log, frozen into chunks of
:attr:`Pruner.LOG_CHUNK` (see :mod:`search._chunks`), and rebuild their tables from it.

Example:
    >>> from search.base import Mode, PrunerConfig
    >>> pruner = make_pruner(PrunerConfig(kind="median", warmup_steps=0, min_trials=2), Mode.MIN)
    >>> [pruner.report(t, 0, v).value for t, v in [(0, 1.0), (1, 2.0), (2, 9.0)]]
    ['continue', 'continue', 'stop']
"""

from __future__ import annotations

import abc
import math
import statistics
from typing import Any, ClassVar

from search._chunks import FrozenChunks
from search.base import Decision, Mode, PrunerConfig


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, but got {name}={value!r}.")


class Pruner(abc.ABC):
    """Base class: decide on intermediate reports; values arrive in the user's direction.

    Args:
        config: Which pruner and its knobs.
        mode: Objective direction of the reported values.
    """

    kind: ClassVar[str]
    LOG_CHUNK: ClassVar[int] = 512
    """Reports per frozen chunk of the log in :meth:`state` (~12 KB of JSON: long enough for the
    job store to keep each chunk once by content)."""

    def __init__(self, config: PrunerConfig, mode: Mode) -> None:
        if not isinstance(mode, Mode):
            raise ValueError(f"`mode` must be a Mode, but got mode={mode!r}.")
        self._config = config
        self._mode = mode
        self._log: list[list[float]] = []  # [trial_id, step, loss] of every recorded report, in order
        self._log_chunks = FrozenChunks(self.LOG_CHUNK)

    def report(self, trial_id: int, step: int, value: float | None) -> Decision:
        """Record ``value`` of trial ``trial_id`` at epoch ``step`` and decide.

        Args:
            trial_id: The trial reporting.
            step: Epoch (or other resource count) the value was measured at.
            value: Objective value in the user's direction; ``None`` or non-finite means
                the trial diverged.

        Returns:
            ``Decision.STOP`` to prune the trial now, else ``Decision.CONTINUE``.
        """
        _check_int("step", step, 0)
        if value is None or not math.isfinite(value):
            return self._on_divergence(trial_id, step)
        return self._report(trial_id, step, self._mode.sign() * float(value))

    def _on_divergence(self, trial_id: int, step: int) -> Decision:
        return Decision.STOP

    @abc.abstractmethod
    def _report(self, trial_id: int, step: int, loss: float) -> Decision:
        """Decide on ``loss`` (minimization terms, finite)."""

    def _record(self, trial_id: int, step: int, loss: float) -> Any:
        """Add one report to the log and the tables; what :meth:`_enter` returns."""
        self._log.append([trial_id, step, loss])
        return self._enter(trial_id, step, loss)

    def _enter(self, trial_id: int, step: int, loss: float) -> Any:
        """Add one report to the pruner's tables (replayed from the log on restore)."""
        del trial_id, step, loss

    def state(self) -> dict[str, Any]:
        """Strict-JSON state: the recorded reports as frozen log chunks plus the rest."""
        chunks, tail = self._log_chunks.dump(self._log, list)
        return {"kind": self.kind, "log_chunks": chunks, "log": tail}

    def _load_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state` (the ``kind`` is checked by :meth:`restore`)."""
        if "log" in state:
            entries = self._log_chunks.load(state.get("log_chunks", []), state["log"])
        else:
            entries = self._legacy_log(state)
        for trial_id, step, loss in entries:
            self._record(int(trial_id), int(step), float(loss))

    def _legacy_log(self, state: dict[str, Any]) -> list[list[float]]:
        """Log entries that rebuild the tables of a state written before the log existed."""
        del state
        return []

    @classmethod
    def restore(cls, config: PrunerConfig, mode: Mode, state: dict[str, Any]) -> Pruner:
        """Rebuild a pruner from :meth:`state`.

        Raises:
            ValueError: When ``state`` belongs to another kind of pruner.
        """
        pruner = make_pruner(config, mode)
        if state.get("kind") != pruner.kind:
            raise ValueError(f"`state` is for pruner {state.get('kind')!r}, but `config.kind` is {config.kind!r}.")
        pruner._load_state(state)
        return pruner


class NoPruner(Pruner):
    """Never prunes; every report is answered ``CONTINUE``."""

    kind = "none"

    def _on_divergence(self, trial_id: int, step: int) -> Decision:
        return Decision.CONTINUE

    def _report(self, trial_id: int, step: int, loss: float) -> Decision:
        return Decision.CONTINUE


def _decode_table(data: dict[str, dict[str, float]]) -> dict[int, dict[int, float]]:
    return {int(k): {int(t): float(v) for t, v in row.items()} for k, row in data.items()}


class MedianStopping(Pruner):
    """Median stopping rule.

    1. Every report ``(trial, step, value)`` is recorded under ``step``.
    2. Before ``warmup_steps`` nothing is pruned.
    3. Once at least ``min_trials`` *other* trials have reported the same step, the trial is
       stopped when its value is worse than the median of theirs.

    Args:
        config: ``warmup_steps`` (>= 0) and ``min_trials`` (>= 1) are used.
        mode: Objective direction.
    """

    kind = "median"

    def __init__(self, config: PrunerConfig, mode: Mode) -> None:
        super().__init__(config, mode)
        _check_int("warmup_steps", config.warmup_steps, 0)
        _check_int("min_trials", config.min_trials, 1)
        self._values: dict[int, dict[int, float]] = {}  # step -> trial_id -> loss

    def _enter(self, trial_id: int, step: int, loss: float) -> None:
        self._values.setdefault(step, {})[trial_id] = loss

    def _report(self, trial_id: int, step: int, loss: float) -> Decision:
        self._record(trial_id, step, loss)
        at_step = self._values[step]
        if step < self._config.warmup_steps:
            return Decision.CONTINUE
        others = [v for t, v in at_step.items() if t != trial_id]
        if len(others) < self._config.min_trials:
            return Decision.CONTINUE
        return Decision.STOP if loss > statistics.median(others) else Decision.CONTINUE

    def _legacy_log(self, state: dict[str, Any]) -> list[list[float]]:
        table = _decode_table(state.get("values", {}))  # step -> trial -> loss
        return [[t, step, v] for step, row in table.items() for t, v in row.items()]


class ASHA(Pruner):
    """Asynchronous successive halving (Li et al., 2018), stopping variant.

    1. Rungs sit at ``min_resource * eta**k`` epochs, ``k = 0, 1, 2, ...``.
    2. When a trial first reports a step at or past a rung, its value is recorded there.
    3. The trial continues only if its value ranks within the top ``max(1, n // eta)`` of the
       ``n`` values recorded at that rung so far (itself included); otherwise it is stopped.
       The first trial to reach a rung always continues; later ones must beat the field.

    Args:
        config: ``min_resource`` (>= 1) and ``reduction_factor`` (``eta``, >= 2) are used.
        mode: Objective direction.
    """

    kind = "asha"

    def __init__(self, config: PrunerConfig, mode: Mode) -> None:
        super().__init__(config, mode)
        _check_int("min_resource", config.min_resource, 1)
        _check_int("reduction_factor", config.reduction_factor, 2)
        self._rungs: dict[int, dict[int, float]] = {}  # rung index -> trial_id -> loss

    def rung_steps(self, up_to: int) -> list[int]:
        """Epochs of the rungs at or below ``up_to``."""
        steps, r = [], self._config.min_resource
        while r <= up_to:
            steps.append(r)
            r *= self._config.reduction_factor
        return steps

    def _enter(self, trial_id: int, step: int, loss: float) -> list[int]:
        """Record ``loss`` at every rung up to ``step`` the trial has not reached before; those rungs."""
        new = []
        for k, _ in enumerate(self.rung_steps(step)):
            rung = self._rungs.setdefault(k, {})
            if trial_id not in rung:
                rung[trial_id] = loss
                new.append(k)
        return new

    def _record(self, trial_id: int, step: int, loss: float) -> list[int]:
        if not self.rung_steps(step):
            return []  # below the first rung: nothing to keep
        return super()._record(trial_id, step, loss)

    def _report(self, trial_id: int, step: int, loss: float) -> Decision:
        eta = self._config.reduction_factor
        decision = Decision.CONTINUE
        for k in self._record(trial_id, step, loss):
            values = sorted(self._rungs[k].values())
            keep = max(1, len(values) // eta)
            if loss > values[keep - 1]:
                decision = Decision.STOP
        return decision

    def _legacy_log(self, state: dict[str, Any]) -> list[list[float]]:
        table = _decode_table(state.get("rungs", {}))  # rung -> trial -> loss
        steps = self.rung_steps(self._config.min_resource * self._config.reduction_factor ** max(table, default=0))
        # rung by rung upwards: replaying rung k's entry finds the trial in every rung below already
        return [[t, steps[k], v] for k in sorted(table) for t, v in table[k].items()]


PRUNERS: dict[str, type[Pruner]] = {"none": NoPruner, "median": MedianStopping, "asha": ASHA}


def make_pruner(config: PrunerConfig, mode: Mode, state: dict[str, Any] | None = None) -> Pruner:
    """Build the pruner ``config.kind`` names, optionally restored from ``state``.

    Args:
        config: Pruner kind and knobs.
        mode: Objective direction of reported values.
        state: A previous :meth:`Pruner.state`, or ``None`` for a fresh pruner.

    Raises:
        ValueError: For an unknown kind or out-of-range knobs.
    """
    if not isinstance(config, PrunerConfig):
        raise ValueError(f"`config` must be a PrunerConfig, but got config={config!r}.")
    cls = PRUNERS.get(config.kind)
    if cls is None:
        raise ValueError(f"`kind` must be one of {sorted(PRUNERS)}, but got kind={config.kind!r}.")
    if state is not None:
        return cls.restore(config, mode, state)
    return cls(config, mode)
