"""MLflow logging of a strategy-``anneal`` job: one child run per replica, round statistics on the parent.

What a replica-exchange job looks like in the MLflow UI (the parent run is the job):

* **One nested child run per replica** (``replica-0`` ... ``replica-{K-1}``, tag
  ``crucible.replica``), not one per trial: a replica's rounds are the steps of its run. Its
  params are the replica's static ones (``replica``, ``steps``, ``start_temperature``); per
  round, at ``step = round``: ``energy``, ``temperature``, ``accept_rate``, the trainer's
  ``evaluate()`` metrics (``train_loss``, ``val_accuracy``, ``test_accuracy``, ...) and
  ``failed`` (0 or 1). A failed round is tagged on its replica (``crucible.failed_round.{g}``
  and ``crucible.reason``, with the reason); the job goes on.
* **On the parent, per round** (``step = round``): ``round``, ``round_best_energy`` (the lowest
  replica energy after the round), ``swaps_attempted``, ``swaps_accepted``,
  ``failed_replicas`` and, per neighbouring pair of ladder rungs ``i_j`` (0 = coldest),
  ``swapped.i_j`` (1 or 0, in the rounds the pair was tried) and ``swap_accept.i_j`` (the
  pair's acceptance rate so far). The strategy options and the ladder are ``anneal.*`` params.
* **At the end**, ``summary/temperature_vs_round.png`` and ``summary/energy_vs_round.png``
  (one line per replica), and the best (lowest-energy) replica-round as ``best_*``.
* A proposal's ``checkpoint`` (the replica's weights as base64 text) is never logged: it is
  payload (``TrialRecord.private``), kept out of a trial's params by the runner.

Resume: the replica runs are found again by their tag. A replica-round's metrics carry the
trial's finish time as their timestamp, so re-logging a round after a crash writes identical
points, which MLflow's SQL stores drop; the parent's rounds already on the run are skipped.

Example:
    >>> from service import JobSpec, run                                  # doctest: +SKIP
    >>> result = run(JobSpec.from_yaml("examples/digits-anneal.yaml"))    # doctest: +SKIP
    >>> # MLflow UI: the job's run, its replica-0..3 runs, summary/*.png
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlflow.entities import Param, RunTag

from search.anneal import check_anneal_options as anneal_options
from search.anneal import geometric_ladder
from search.base import Status
from service import plots
from service.events import JobResult, TrialRecord
from service.mlflow_io import ms, short
from service.tracking import PARENT, MlflowReporter

__all__ = ["AnnealMlflowReporter"]

_NOT_METRICS = frozenset({"replica", "round"})  # a round's identity: the run and the step


class AnnealMlflowReporter(MlflowReporter):
    """Logs a strategy-``anneal`` job: a child run per replica, swap statistics on the parent.

    Args:
        spec: The job spec (strategy ``anneal``, validated).
        **kwargs: As :class:`~service.tracking.MlflowReporter`.
    """

    CHILD_TAG = "crucible.replica"

    def __init__(self, spec: Any, **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self._options = anneal_options(spec.search_config())
        self._ladder = geometric_ladder(self._options["t_min"], self._options["t_max"], self._options["replicas"])
        self._announced: set[int] = set()  # replicas whose child run is queued (or found) in this process
        self._pairs = [[0, 0] for _ in range(len(self._ladder) - 1)]  # per rung pair: tried, accepted
        self._rounds_logged: set[int] = set()  # parent round steps already on the run (a resumed job)

    # ------------------------------------------------------------------ run layout
    def _child_identity(self, key: int) -> tuple[str, dict[str, str]]:
        """Run name and tags of replica ``key``'s child run."""
        return f"replica-{key}", {"crucible.kind": "replica"}

    def on_job_start(self, spec: Any) -> None:
        """Open (or find) the parent run, then log the strategy's options and ladder on it."""
        super().on_job_start(spec)
        o = self._options
        params = {
            **{f"anneal.{k}": o[k] for k in ("replicas", "t_min", "t_max", "steps", "rounds", "boltzmann_k")},
            "anneal.ladder": self._ladder,
            "anneal.trainer": spec.trial_config({}).get("trainer", "hybrid"),
        }
        batch = [Param(k, short(v)) for k, v in params.items()]
        self._retrying(lambda: self._log_batch(self.run_id, params=batch))  # the same values on a resume

    def _map_children(self) -> None:
        """Find the replica runs of a resumed job, and the rounds its parent already has."""
        super()._map_children()
        self._rounds_logged = {m.step for m in self.client.get_metric_history(self.run_id, "round")}

    def _announce(self, replica: int, started: float) -> None:
        """Queue replica ``replica``'s child run with its static params (once per process; idempotent)."""
        if replica in self._announced:
            return
        self._announced.add(replica)
        params = {"replica": replica, "steps": self._options["steps"], "start_temperature": self._ladder[replica]}
        self._queue.put(("start", (replica, params, ms(started))))

    # ------------------------------------------------------------------ trials = replica-rounds
    def on_trial_start(self, record: TrialRecord) -> None:
        """Make the replica's child run at its first round (never one per trial)."""
        self._announce(int(record.params["replica"]), record.started)

    def on_trial_report(self, record: TrialRecord, epoch: int, metrics: dict[str, float]) -> None:
        """Nothing: a replica-round's metrics arrive with its end (the round is the step)."""

    def on_trial_retry(self, record: TrialRecord, reason: str) -> None:
        """Tag the replica's run: its round runs again on a fresh worker."""
        replica, round_ = int(record.params["replica"]), int(record.params["round"])
        self._announce(replica, record.started)
        tags = {f"crucible.retry_round.{round_}": f"attempt {record.attempts}: {reason}"[:5000]}
        self._queue.put(("tags", (replica, tags)))

    def on_trial_end(self, record: TrialRecord, best: TrialRecord | None) -> None:
        """Queue the round's metrics on the replica's run at ``step = round`` (tags for a failed round)."""
        replica, round_ = int(record.params["replica"]), int(record.params["round"])
        self._announce(replica, record.started)
        values = {
            k: float(v)
            for k, v in record.metrics.items()
            if k not in _NOT_METRICS and isinstance(v, int | float) and not isinstance(v, bool)
        }
        values.setdefault("temperature", float(record.params["temperature"]))
        if record.status is not Status.PRUNED:
            values["failed"] = float(record.status is Status.FAILED)
        when = ms(record.finished or time.time())  # a re-logged round writes the same points
        self._queue.put(("report", (replica, round_, values, when)))
        if record.status is not Status.OK:
            why = f"round {round_} {record.status.value}: {record.reason or 'no reason given'}"[:5000]
            tags = {f"crucible.{record.status.value}_round.{round_}": why, "crucible.reason": why}
            self._queue.put(("tags", (replica, tags)))
        self._queue.put(("logged", record.trial_id))

    # ------------------------------------------------------------------ rounds
    def on_round(self, index: int, stats: dict[str, Any]) -> None:
        """Queue a round's swap statistics and lowest energy on the parent, at ``step = index``."""
        k = len(self._ladder)
        temps = stats["temperature"]
        by_rung = sorted(range(k), key=lambda r: (temps[f"r{r}"], r))  # rung -> replica, coldest first
        failed = set(stats.get("failed") or [])
        energy = stats["energy"]
        swapped = {tuple(pair) for pair in stats.get("swapped") or []}
        values: dict[str, float] = {
            "round": float(index),
            "swaps_attempted": float(stats.get("swaps_attempted", 0)),
            "swaps_accepted": float(stats.get("swaps_accepted", 0)),
            "failed_replicas": float(len(failed)),
        }
        if stats.get("best_energy") is not None:
            values["round_best_energy"] = float(stats["best_energy"])
        for i in range(index % 2, k - 1, 2):  # the strategy's even/odd alternation of pairs
            a, b = by_rung[i], by_rung[i + 1]
            if a in failed or b in failed or energy[f"r{a}"] is None or energy[f"r{b}"] is None:
                continue  # a failed replica sits the swap out
            accepted = (i, i + 1) in swapped
            self._pairs[i][0] += 1
            self._pairs[i][1] += accepted
            values[f"swapped.{i}_{i + 1}"] = float(accepted)
        for i, (tried, accepted) in enumerate(self._pairs):
            if tried:
                values[f"swap_accept.{i}_{i + 1}"] = accepted / tried
        if index not in self._rounds_logged:  # a resumed job hears of its earlier rounds again
            self._rounds_logged.add(index)
            self._queue.put(("report", (PARENT, index, values, ms(time.time()))))

    # ------------------------------------------------------------------ the end
    def _summary_files(self, result: JobResult, out: Path) -> None:
        """Temperature and energy of each replica against the round."""
        temperature: dict[str, tuple[list[float], list[float]]] = {}
        energy: dict[str, tuple[list[float], list[float]]] = {}
        for t in sorted(result.trials, key=lambda t: (t.params["replica"], t.params["round"])):
            label, round_ = f"replica {t.params['replica']}", float(t.params["round"])
            xs, ys = temperature.setdefault(label, ([], []))
            xs.append(round_)
            ys.append(float(t.params["temperature"]))
            if t.status is Status.OK and "energy" in t.metrics:
                xs, ys = energy.setdefault(label, ([], []))
                xs.append(round_)
                ys.append(float(t.metrics["energy"]))
        plots.lines(temperature, "round", "temperature", "Temperature of each replica (the round's)",
                    out / "temperature_vs_round.png", log_y=True)  # fmt: skip
        positive = all(y > 0 for _, ys in energy.values() for y in ys)  # a loss: log scale shows the late rounds
        plots.lines(energy, "round", self.spec.objective.metric, "Energy of each replica after the round",
                    out / "energy_vs_round.png", log_y=positive and bool(energy))  # fmt: skip

    def _log_summary(self, result: JobResult) -> None:
        """The parent's summary, then each replica run's end (FAILED if none of its rounds succeeded)."""
        super()._log_summary(result)
        if result.best is not None:
            self._log_batch(self.run_id, tags=[RunTag("crucible.best_replica", str(result.best.params["replica"]))])
        rounds: dict[int, list[TrialRecord]] = {}
        for t in result.trials:
            rounds.setdefault(int(t.params["replica"]), []).append(t)
        for replica, run_id in sorted(self._child.items()):
            if replica == PARENT:
                continue
            mine = rounds.get(replica, [])
            count = {s: sum(t.status is s for t in mine) for s in Status}
            tags = [RunTag(f"crucible.rounds_{s.value}", str(n)) for s, n in count.items()]
            tags.append(RunTag("crucible.status", "ok" if count[Status.OK] else "failed"))
            self._log_batch(run_id, tags=tags)
            end = max((t.finished for t in mine if t.finished is not None), default=time.time())
            self.client.set_terminated(run_id, "FINISHED" if count[Status.OK] else "FAILED", end_time=ms(end))
