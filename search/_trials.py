"""Shared bookkeeping for strategies where one proposal is one trial (bayes, random).

:class:`TrialStrategy` implements the whole :class:`~search.base.Strategy` protocol except
how a point is chosen: subclasses write :meth:`TrialStrategy._propose` (and, for resuming,
:meth:`_extra_state` / :meth:`_load_extra_state`).

Semantics every subclass inherits:

* Trial ids are ``0, 1, 2, ...`` in ask order.
* ``ask(n)`` returns ``min(n, n_trials - asked so far)`` proposals; ``[]`` once the whole
  budget is asked (wait for tells). A proposal never repeats the params of one still in
  flight (after a few redraws, for tiny discrete spaces where that is impossible).
* ``tell`` accepts each asked trial exactly once, with any status; an unknown or already
  told ``trial_id`` is a ``ValueError``. ``done()`` is True once ``n_trials`` results were told.
* ``best()`` is the best ``Status.OK`` result with a finite value, in the config's ``mode``.
* ``report`` feeds the pruner; a pruned trial told without a value gets its last report.
* ``state()`` is strict JSON (no NaN: non-finite floats are written as the strings
  ``"NaN"``, ``"Infinity"``, ``"-Infinity"``). ``restore`` keeps trials that were in flight at
  checkpoint time *pending*: :meth:`pending` lists them so the runner can re-dispatch them,
  and their eventual tells are accepted as usual.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

from search._chunks import FrozenChunks
from search.base import Decision, Mode, Proposal, Result, SearchConfig, Status
from search.pruning import make_pruner

STATE_VERSION = 1
_MAX_REDRAWS = 32


def _encode_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _decode_float(value: float | str | None) -> float | None:
    return float(value) if isinstance(value, str) else value


def encode_result(result: Result) -> dict[str, Any]:
    """``result.to_dict()`` with non-finite floats spelled as strings (strict JSON)."""
    d = result.to_dict()
    d["value"] = _encode_float(d["value"])
    d["metrics"] = {k: _encode_float(v) for k, v in d["metrics"].items()}
    return d


def decode_result(d: dict[str, Any]) -> Result:
    """Inverse of :func:`encode_result`."""
    result = Result.from_dict(d)
    result.value = _decode_float(result.value)
    result.metrics = {k: _decode_float(v) for k, v in result.metrics.items()}
    return result


def _check_config(config: SearchConfig) -> None:
    if not isinstance(config, SearchConfig):
        raise ValueError(f"`config` must be a SearchConfig, but got config={config!r}.")
    if not isinstance(config.mode, Mode):
        raise ValueError(f"`mode` must be a Mode, but got mode={config.mode!r}.")
    n = config.n_trials
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n_trials` must be an int >= 1, but got n_trials={n!r}.")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int):
        raise ValueError(f"`seed` must be an int, but got seed={config.seed!r}.")


class TrialStrategy(abc.ABC):
    """One proposal = one trial; subclasses only choose points.

    Args:
        config: Space, mode, budget, seed, pruner and strategy options.

    Raises:
        ValueError: When ``config`` is malformed (the message names the field).
    """

    name: ClassVar[str]
    LOG_CHUNK: ClassVar[int] = 64
    """Told results per frozen chunk in :meth:`state` (full chunks never change again)."""

    def __init__(self, config: SearchConfig) -> None:
        _check_config(config)
        self._config = config
        self._next_id = 0
        self._pending: dict[int, Proposal] = {}
        self._results: list[Result] = []
        self._results_chunks = FrozenChunks(self.LOG_CHUNK)
        self._told: set[int] = set()
        self._last_report: dict[int, float] = {}
        self._pruner = make_pruner(config.pruner, config.mode)

    @property
    def config(self) -> SearchConfig:
        """The configuration this strategy was built with."""
        return self._config

    # -- choosing points -------------------------------------------------------------------

    @abc.abstractmethod
    def _propose(self, trial_id: int) -> dict[str, Any]:
        """Params for trial ``trial_id`` (plain Python values), given history and pending."""

    @abc.abstractmethod
    def _redraw(self, trial_id: int, attempt: int) -> dict[str, Any]:
        """A random point, used when :meth:`_propose` repeated a point in flight."""

    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` new trials; ``[]`` when the budget is all asked (wait for tells).

        Args:
            n: How many proposals the caller can run now (free worker slots), ``>= 0``.

        Returns:
            ``min(n, n_trials - asked)`` proposals with fresh, increasing trial ids.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"`n` must be an int >= 0, but got n={n!r}.")
        out = []
        for _ in range(min(n, self._config.n_trials - self._next_id)):
            trial_id = self._next_id
            params = self._propose(trial_id)
            in_flight = [p.params for p in self._pending.values()]
            attempt = 0
            while params in in_flight and attempt < _MAX_REDRAWS:
                params = self._redraw(trial_id, attempt)
                attempt += 1
            proposal = Proposal(trial_id=trial_id, params=params)
            self._pending[trial_id] = proposal
            self._next_id += 1
            out.append(proposal)
        return out

    def pending(self) -> list[Proposal]:
        """Trials asked but not yet told, by id (after :meth:`restore`: the ones to re-dispatch)."""
        return list(self._pending.values())

    # -- results -----------------------------------------------------------------------------

    def _check_in_flight(self, result: Result, verb: str) -> Proposal:
        if not isinstance(result, Result):
            raise ValueError(f"`result` must be a Result, but got result={result!r}.")
        if not isinstance(result.status, Status):
            raise ValueError(f"`status` must be a Status, but got status={result.status!r}.")
        trial_id = result.trial_id
        if trial_id in self._pending:
            return self._pending[trial_id]
        if trial_id in self._told:
            raise ValueError(f"Cannot {verb} trial_id={trial_id!r}: it was already told.")
        raise ValueError(
            f"Cannot {verb} trial_id={trial_id!r}: unknown trial (ids asked so far: 0..{self._next_id - 1})."
        )

    def tell(self, result: Result) -> None:
        """Record one finished trial (``OK``, ``FAILED`` or ``PRUNED``).

        Args:
            result: The trial's outcome; ``result.trial_id`` must be in flight.

        Raises:
            ValueError: Unknown ``trial_id``, or a trial told twice.
        """
        proposal = self._check_in_flight(result, "tell")
        params = {**proposal.params, **result.params}
        value = result.value
        if result.status is Status.PRUNED and (value is None or not math.isfinite(value)):
            value = self._last_report.get(result.trial_id, value)
        self._tell(dataclasses.replace(result, params=params, value=value))

    def _tell(self, result: Result) -> None:
        """Record a validated result (no checks)."""
        del self._pending[result.trial_id]
        self._told.add(result.trial_id)
        self._last_report.pop(result.trial_id, None)
        self._results.append(result)

    def report(self, result: Result) -> Decision:
        """An intermediate report of a trial in flight; the pruner decides.

        Args:
            result: ``trial_id``, ``step`` (epoch) and ``value`` (user's direction) are used.

        Returns:
            ``Decision.STOP`` to prune the trial, else ``Decision.CONTINUE``.

        Raises:
            ValueError: Unknown or finished ``trial_id``, or ``step`` missing.
        """
        self._check_in_flight(result, "report")
        if result.step is None:
            raise ValueError(
                f"`step` must be set on an intermediate report, but got step=None for trial_id={result.trial_id!r}."
            )
        if result.value is not None and math.isfinite(result.value):
            self._last_report[result.trial_id] = float(result.value)
        return self._pruner.report(result.trial_id, result.step, result.value)

    def done(self) -> bool:
        """True once ``n_trials`` results have been told."""
        return len(self._told) >= self._config.n_trials

    def best(self) -> Result | None:
        """Best ``Status.OK`` result with a finite value, or ``None``; ties go to the earliest."""
        best: Result | None = None
        for r in self._results:
            if r.status is not Status.OK or not r.ok:
                continue
            if best is None or self._config.mode.better(r.value, best.value):
                best = r
        return best

    @property
    def results(self) -> list[Result]:
        """Every told result, in tell order."""
        return list(self._results)

    # -- checkpointing -----------------------------------------------------------------------

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        del state  # nothing beyond the common state by default

    def state(self) -> dict[str, Any]:
        """Strict-JSON state: history, pending trials, next id, pruner and RNG state.

        Told results are an append-only log: every full run of :attr:`LOG_CHUNK` is frozen into
        one JSON string (``results_chunks``), so a store that keeps long strings by content
        writes each once; the rest is the plain list ``results``.
        """
        chunks, tail = self._results_chunks.dump(self._results, encode_result)
        return {
            "strategy": self.name,
            "version": STATE_VERSION,
            "next_id": self._next_id,
            "pending": [{"trial_id": p.trial_id, "params": dict(p.params)} for p in self._pending.values()],
            "results_chunks": chunks,
            "results": tail,
            "last_report": {str(k): v for k, v in self._last_report.items()},
            "pruner": self._pruner.state(),
            **self._extra_state(),
        }

    @classmethod
    def restore(cls, config: SearchConfig, state: dict[str, Any]) -> TrialStrategy:
        """Rebuild from :meth:`state`; pending trials stay pending (see :meth:`pending`).

        Args:
            config: The job's config (``n_trials`` may grow on resume).
            state: A previous :meth:`state`.

        Raises:
            ValueError: When ``state`` belongs to another strategy or version.
        """
        if state.get("strategy") != cls.name or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"`state` must come from {cls.name!r} version {STATE_VERSION}, but got "
                f"strategy={state.get('strategy')!r}, version={state.get('version')!r}."
            )
        strategy = cls(config)
        strategy._next_id = int(state["next_id"])
        strategy._pending = {
            int(p["trial_id"]): Proposal(trial_id=int(p["trial_id"]), params=dict(p["params"]))
            for p in state["pending"]
        }
        results = strategy._results_chunks.load(state.get("results_chunks", []), state["results"])
        strategy._results = [decode_result(d) for d in results]
        strategy._told = {r.trial_id for r in strategy._results}
        strategy._last_report = {int(k): float(v) for k, v in state.get("last_report", {}).items()}
        strategy._pruner = make_pruner(config.pruner, config.mode, state["pruner"])
        strategy._load_extra_state(state)
        return strategy
