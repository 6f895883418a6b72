"""The job loop: ask -> dispatch -> collect -> tell -> log, until the budget is spent.

The loop itself, stripped of bookkeeping::

    while not strategy.done():
        for proposal in strategy.ask(pool.free):
            start(proposal)                      # a reused Ray actor, streaming reports
        ready = ray.wait(running_generators)     # next report or final result
        handle(ready)                            # report -> pruning; final -> strategy.tell

Reports feed pruning (a STOP reaches the trial between epochs) and live MLflow metrics;
final results are told to the strategy and handed to the reporters. A trial that raises,
diverges or whose actor dies is failed with its reason, its actor is replaced, and the job
goes on.

Example:
    >>> from service import JobSpec, run                          # doctest: +SKIP
    >>> result = run(JobSpec.from_yaml("examples/digits-bayes.yaml"))  # doctest: +SKIP
    >>> result.best.metrics["test_accuracy"]                      # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import ray

from search import make_strategy
from search.base import Decision, Proposal, Result, Status, Strategy
from service.errors import CrucibleError
from service.events import JobResult, ModelBlob, Reporter, TrialRecord
from service.spec import JobSpec
from service.workers import WorkerPool

_STOP_GRACE_SECONDS = 10.0


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or connect to) Ray once per process; reuse an existing connection.

    A locally started Ray's workers inherit this process's environment, so the current
    directory and ``sys.path`` go on ``PYTHONPATH`` first: a trial function given as
    ``"pkg.module:fn"`` then imports on the workers as it does here. (A ``runtime_env``
    would do the same but makes every worker start seconds slower.)
    """
    if ray.is_initialized():
        return
    paths = [os.getcwd(), *sys.path, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in dict.fromkeys(paths) if p and os.path.isdir(p))
    ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, logging_level="WARNING")


@dataclass
class _Running:
    record: TrialRecord
    actor: Any
    stop_why: str | None = None


class JobRunner:
    """Runs one job to completion in this process.

    Args:
        spec: A validated job spec.
        reporters: Observers (MLflow, progress bar, ...).
        strategy: A strategy to drive (default: built from the spec).
    """

    def __init__(
        self, spec: JobSpec, reporters: list[Reporter] | None = None, strategy: Strategy | None = None
    ) -> None:
        self.spec = spec
        self.reporters = list(reporters or [])
        self.strategy = strategy or make_strategy(spec.strategy, spec.search_config())
        self.records: dict[int, TrialRecord] = {}
        self.best: TrialRecord | None = None
        self.best_model: ModelBlob | None = None
        self._input_example: Any = None
        self._running: dict[Any, _Running] = {}
        self._pool: WorkerPool | None = None
        self._stop_reason: str | None = None
        self._stop_at: float | None = None

    # ------------------------------------------------------------------ public
    def run(self) -> JobResult:
        """Run the job until the budget, the target or the wall-clock limit ends it."""
        ensure_ray()
        start = time.time()
        self._pool = self._make_pool()
        self._emit("on_job_start", self.spec)
        try:
            self._loop(start)
        finally:
            self._pool.shutdown([r.actor for r in self._running.values()])
        result = JobResult(
            name=self.spec.name,
            metric=self.spec.objective.metric,
            mode=self.spec.mode,
            trials=[self.records[k] for k in sorted(self.records)],
            best=self.best,
            stop_reason=self._stop_reason or "budget",
            wall_seconds=time.time() - start,
        )
        self._emit("on_job_end", result, self.best_model)
        return result

    # ------------------------------------------------------------------ loop
    def _make_pool(self) -> WorkerPool:
        spec = self.spec
        task_ref = None
        if spec.objective.function is None:
            from models.data import load_task

            task = load_task(spec.task, seed=spec.seed)
            self._input_example = task.X_val[:5]
            task_ref = ray.put(task)
        return WorkerPool(self._pool_size(), spec.resources.cpu, spec.resources.gpu, spec.objective.function, task_ref)

    def _pool_size(self) -> int:
        """``budget.parallel``, capped at what the Ray cluster can hold at once.

        Actors beyond the cluster's capacity would wait forever for resources while
        holding trials, so the pool is sized to fit and the user is told why.
        """
        res, total = self.spec.resources, ray.cluster_resources()
        fits = [self.spec.budget.parallel]
        for name, need, key in (("cpu", res.cpu, "CPU"), ("gpu", res.gpu, "GPU")):
            if need > 0:
                have = total.get(key, 0.0)
                fits.append(int(have // need + 1e-9))
                if have < need:
                    raise CrucibleError(
                        f"`resources.{name}` asks for {need:g} per trial, but the Ray cluster has {have:g} {key}s."
                    )
        size = min(fits)
        if size < self.spec.budget.parallel:
            print(
                f"crucible: budget.parallel={self.spec.budget.parallel} needs more than the cluster has "
                f"({total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs); running {size} trials at a time.",
                file=sys.stderr,
            )
        return size

    def _loop(self, start: float) -> None:
        assert self._pool is not None
        while True:
            self._check_limits(start)
            if self._stop_reason is None and self._pool.free:
                for proposal in self.strategy.ask(self._pool.free):
                    self._start(proposal)
            if not self._running:
                if self._stop_reason is None and not self.strategy.done():
                    self._stop_reason = "strategy_idle"  # asked for nothing with nothing in flight
                return
            ready, _ = ray.wait(list(self._running), num_returns=1, timeout=1.0)
            for gen in ready:
                self._collect(gen)
            self._enforce_stop_grace()

    def _check_limits(self, start: float) -> None:
        if self._stop_reason is not None:
            return
        budget = self.spec.budget
        if budget.max_wall_seconds is not None and time.time() - start >= budget.max_wall_seconds:
            self._stop_all("wall_clock")
        elif budget.target is not None and self.best is not None and self.best.value is not None:
            if self.best.value == budget.target or self.spec.mode.better(self.best.value, budget.target):
                self._stop_all("target")

    def _stop_all(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop_at = time.time()
        for running in self._running.values():
            self._send_stop(running, f"stopped: {reason}")

    def _enforce_stop_grace(self) -> None:
        """Kill trials that ignore a stop for too long (they never report)."""
        if self._stop_at is None or time.time() - self._stop_at < _STOP_GRACE_SECONDS:
            return
        assert self._pool is not None
        for gen, running in list(self._running.items()):
            del self._running[gen]
            self._pool.replace(running.actor)
            self._finish(running.record, Status.PRUNED, {}, f"killed after the job stopped ({self._stop_reason})")

    def _send_stop(self, running: _Running, why: str) -> None:
        if running.stop_why is None:
            running.stop_why = why
            running.actor.stop.remote(running.record.trial_id)

    def _start(self, proposal: Proposal) -> None:
        assert self._pool is not None
        actor = self._pool.acquire()
        config = self.spec.trial_config(proposal.params)
        record = TrialRecord(proposal.trial_id, dict(proposal.params), config)
        self.records[record.trial_id] = record
        gen = actor.run.remote(record.trial_id, config, self.spec.seed * 100_003 + record.trial_id)
        self._running[gen] = _Running(record, actor)
        self._emit("on_trial_start", record)

    def _collect(self, gen: Any) -> None:
        running = self._running[gen]
        record = running.record
        try:
            msg = ray.get(next(gen))
        except StopIteration:
            self._drop(gen, replace=True)
            self._finish(record, Status.FAILED, {}, "worker ended the trial without a result")
            return
        except ray.exceptions.RayError as err:
            self._drop(gen, replace=True)
            self._finish(record, Status.FAILED, {}, f"worker died: {type(err).__name__}: {_first_line(err)}")
            return
        if msg["type"] == "report":
            self._on_report(running, msg)
            return
        self._drop(gen, replace=False)
        record.node, record.device = msg["node"], msg["device"]
        status = Status(msg["status"])
        metrics: dict[str, float] = msg["metrics"]
        reason = msg["reason"]
        if status is Status.PRUNED and running.stop_why is not None:
            reason = running.stop_why
        if status is Status.OK and self.spec.objective.metric not in metrics:
            status, reason = (
                Status.FAILED,
                (f"objective metric {self.spec.objective.metric!r} missing from the trial's metrics {sorted(metrics)}"),
            )
        elif status is Status.OK and not math.isfinite(metrics[self.spec.objective.metric]):
            status, reason = Status.FAILED, f"objective {self.spec.objective.metric} is not finite"
        self._finish(record, status, metrics, reason, model=msg.get("model"))

    def _drop(self, gen: Any, replace: bool) -> None:
        assert self._pool is not None
        running = self._running.pop(gen)
        if replace:
            self._pool.replace(running.actor)
        else:
            self._pool.release(running.actor)

    def _on_report(self, running: _Running, msg: dict[str, Any]) -> None:
        record = running.record
        metrics = msg["metrics"]
        epoch = msg["epoch"] if msg["epoch"] is not None else len(record.history) + 1
        record.history.append((epoch, metrics))
        self._emit("on_trial_report", record, epoch, metrics)
        value = metrics.get(self.spec.objective.metric)
        if value is None or running.stop_why is not None:
            return
        if not math.isfinite(value):
            return  # the trainer fails the trial itself; a custom fn's final result decides
        decision = self.strategy.report(
            Result(record.trial_id, record.params, value=value, metrics=metrics, step=epoch)
        )
        if decision is Decision.STOP:
            self._send_stop(running, f"pruned at epoch {epoch} ({self.spec.pruning.kind}): {value:.4g}")

    def _finish(
        self,
        record: TrialRecord,
        status: Status,
        metrics: dict[str, float],
        reason: str | None,
        model: bytes | None = None,
    ) -> None:
        metric = self.spec.objective.metric
        if status is Status.PRUNED and metric not in metrics and record.history:
            metrics = {**record.history[-1][1], **metrics}  # a pruned trial keeps its last report
        record.status, record.metrics, record.reason = status, metrics, reason
        record.value = metrics.get(metric) if status is not Status.FAILED else None
        record.finished = time.time()
        self.strategy.tell(
            Result(record.trial_id, record.params, status=status, value=record.value, metrics=metrics, reason=reason)
        )
        if (
            status is Status.OK
            and record.value is not None
            and (self.best is None or self.spec.mode.better(record.value, self.best.value))
        ):
            self.best = record
            self.best_model = ModelBlob(model, self._input_example) if model is not None else None
        self._emit("on_trial_end", record, self.best)

    def _emit(self, hook: str, *args: Any) -> None:
        for reporter in self.reporters:
            getattr(reporter, hook)(*args)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""


def run(
    spec: JobSpec, *, progress: bool = True, tracking: bool = True, reporters: list[Reporter] | None = None
) -> JobResult:
    """Run a job embedded in this process: local Ray, MLflow store from ``spec.tracking``.

    Args:
        spec: The job.
        progress: Show a progress bar on stderr.
        tracking: Log to MLflow.
        reporters: Extra observers.

    Returns:
        The finished job's :class:`~service.events.JobResult`.

    Example:
        >>> result = run(JobSpec.from_yaml("examples/digits-bayes.yaml"))  # doctest: +SKIP
    """
    all_reporters: list[Reporter] = []
    if tracking:
        from service.tracking import MlflowReporter

        all_reporters.append(MlflowReporter(spec))
    if progress:
        from service.progress import ProgressReporter

        all_reporters.append(ProgressReporter(spec))
    all_reporters += reporters or []
    return JobRunner(spec, all_reporters).run()
