"""The job loop: ask -> dispatch -> collect -> tell -> log, until the budget is spent.

The loop itself, stripped of bookkeeping::

    while jobs:
        for job in fair_order(jobs):             # fewest trials in flight first
            job.start(job.strategy.ask(1), pool.acquire(job.shape))
        ready = ray.wait(running_generators)     # next report or final result, any job
        handle(ready)                            # report -> pruning; final -> strategy.tell

A :class:`JobRunner` is one job's side of it: its strategy, trials and reporters. A
:class:`TrialLoop` drives one or many of them over one shared :class:`WorkerPool`: the
embedded :func:`run` drives one job to its end; the service's scheduler drives many at once,
each within its own ``budget.parallel``, with free workers going to the job with the fewest
trials in flight, so a large job cannot starve a small one.

Reports feed pruning (a STOP reaches the trial between epochs) and live MLflow metrics;
final results are told to the strategy and handed to the reporters. A trial that raises,
diverges or runs over its time limit is failed with its reason; one whose actor dies is run
again on a fresh actor up to ``budget.trial_retries`` times, then failed; the job goes on.

Example:
    >>> from service import JobSpec, run                          # doctest: +SKIP
    >>> result = run(JobSpec.from_yaml("examples/digits-bayes.yaml"))  # doctest: +SKIP
    >>> result.best.metrics["test_accuracy"]                      # doctest: +SKIP
"""

from __future__ import annotations

import base64
import math
import os
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray

from search import make_strategy
from search.base import Decision, Proposal, Result, Status, Strategy
from service import families
from service.errors import CrucibleError
from service.events import JobResult, ModelBlob, Reporter, TrialRecord
from service.loop import TrialLoop, frozen_heap
from service.spec import JobSpec
from service.workers import Shape, SharedInput, WorkerPool

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
    timed_out: bool = False


class JobRunner:
    """One job's side of the loop: its strategy, its trials in flight and its reporters.

    Args:
        spec: A validated job spec.
        reporters: Observers (MLflow, progress bar, the service's store, ...).
        strategy: A strategy to drive (default: built from the spec); a restored one
            re-dispatches its pending trials first.
        records: Trials that already ran (a resumed job), by id.
    """

    def __init__(
        self,
        spec: JobSpec,
        reporters: list[Reporter] | None = None,
        strategy: Strategy | None = None,
        records: dict[int, TrialRecord] | None = None,
    ) -> None:
        self.spec = spec
        self.reporters = list(reporters or [])
        self.strategy = strategy or make_strategy(spec.strategy, spec.search_config())
        self.records: dict[int, TrialRecord] = dict(records or {})
        self.best: TrialRecord | None = None
        for record in self.records.values():
            if record.status is not None:
                self._update_best(record)
        self.best_model: ModelBlob | None = None
        self.running: dict[Any, _Running] = {}
        self.stop_reason: str | None = None
        self._requeue: deque[Proposal] = deque(getattr(self.strategy, "pending", list)())
        self._waiting = False  # the strategy asked for nothing until the next tell
        self._input_example: Any = None
        self._task_ref: Any = None
        self._function = spec.trial_function()
        self._sticky_actor: dict[Any, Any] = {}  # params["replica"] -> the actor that holds its state
        self._sticky_blob: dict[Any, bytes] = {}  # params["replica"] -> its latest checkpoint
        self._rounds_seen = 0
        self._token = uuid.uuid4().hex  # names this run of the job to workers that cache its state
        self._private = families.private_params(spec)  # payload params: to the worker, not into records
        self._streams = families.streams_reports(spec)  # False: one plain actor call per trial
        self._start = time.time()
        self._stop_at: float | None = None

    @property
    def shape(self) -> Shape:
        """CPUs and GPUs of one trial's worker."""
        return (self.spec.resources.cpu, self.spec.resources.gpu)

    # ------------------------------------------------------------------ public
    def run(self) -> JobResult:
        """Run the job embedded, on this process's Ray, until the budget, target or wall clock ends it."""
        ensure_ray()
        loop = TrialLoop()
        try:
            loop.pool.warm(self.shape, self.spec.budget.parallel)  # actors start while the job prepares
            self.prepare(loop.pool, warn=True)
            loop.add(self)
            with frozen_heap():
                while loop.jobs:
                    loop.step()
        finally:
            loop.shutdown()
        return self.finish()

    def prepare(self, pool: WorkerPool, warn: bool = False) -> None:
        """Check the job fits the cluster, load its task into the object store, tell reporters it starts."""
        fits = self.spec.budget.parallel
        for name, need, have in zip(("cpu", "gpu"), self.shape, pool.capacity, strict=True):
            if need > have + 1e-9:
                raise CrucibleError(
                    f"`resources.{name}` asks for {need:g} per trial, but the Ray cluster has {have:g} {name.upper()}s."
                )
            if need > 0:
                fits = min(fits, int(have // need + 1e-9))
        if warn and fits < self.spec.budget.parallel:
            print(
                f"crucible: budget.parallel={self.spec.budget.parallel} needs more than the cluster has "
                f"({pool.capacity[0]:g} CPUs, {pool.capacity[1]:g} GPUs); running {fits} trials at a time.",
                file=sys.stderr,
            )
        if families.needs_shared(self.spec):
            shared = families.shared_input(self.spec)
            if self._function is None:
                self._input_example = shared.X_val[:5]
            self._task_ref = SharedInput(ray.put(shared))
        self._start = time.time()
        self._emit("on_job_start", self.spec)

    def finish(self) -> JobResult:
        """The job's result; reporters log their summaries (call once, after the loop let go of it)."""
        result = JobResult(
            name=self.spec.name,
            metric=self.spec.objective.metric,
            mode=self.spec.mode,
            trials=[self.records[k] for k in sorted(self.records)],
            best=self.best,
            stop_reason=self.stop_reason or _ended_early(self.strategy) or "budget",
            wall_seconds=time.time() - self._start,
            rounds=[{k: v for k, v in r.items() if k != "champion"} for r in getattr(self.strategy, "rounds", list)()],
        )
        self._emit_rounds()  # a resumed job that had nothing left to run has told its reporters none yet
        self._emit("on_job_end", result, self.best_model)
        return result

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the job: no new trials, running ones are asked to stop (and killed after a grace period)."""
        if self.stop_reason is None:
            self._stop_all(reason)

    # ------------------------------------------------------------------ loop side
    def wants(self) -> bool:
        """Whether the job would start one more trial now."""
        if self.stop_reason is not None or len(self.running) >= self.spec.budget.parallel:
            return False
        return bool(self._requeue) or not (self._waiting or self.strategy.done())

    def ended(self) -> bool:
        """Nothing in flight and nothing more to start."""
        if self.running:
            return False
        if self.stop_reason is not None or self.strategy.done():
            return True
        if self._waiting and not self._requeue:
            self.stop_reason = "strategy_idle"  # asked for nothing with nothing in flight
            return True
        return False

    def next_proposal(self) -> Proposal | None:
        """The next piece of work (a re-queued one first), or ``None`` while the strategy waits."""
        if self._requeue:
            return self._requeue.popleft()
        asked = self.strategy.ask(1)
        if not asked:
            self._waiting = True
            return None
        return asked[0]

    def push_back(self, proposal: Proposal) -> None:
        """Return a proposal that found no worker; it goes first next time."""
        self._requeue.appendleft(proposal)

    def preferred_actor(self, proposal: Proposal) -> Any | None:
        """The actor that holds this proposal's replica state, if any (``params["replica"]``)."""
        key = proposal.params.get("replica")
        return None if key is None else self._sticky_actor.get(key)

    def start(self, proposal: Proposal, actor: Any) -> Any:
        """Start ``proposal`` on ``actor``; returns its report generator."""
        record = self.records.get(proposal.trial_id)
        again = record is not None and record.status is None  # a retry, or in flight when the service died
        if not again:
            config = self.spec.trial_config(proposal.params)
            params = {k: v for k, v in proposal.params.items() if k not in self._private}
            record = TrialRecord(proposal.trial_id, params, config, private=self._private)
            self.records[record.trial_id] = record
        else:
            record.started = time.time()
            if proposal.params != record.params:  # a restored strategy re-proposes it with its payload
                record.config = self.spec.trial_config(proposal.params)
                record.private = self._private
        config = record.config
        key = proposal.params.get("replica")
        if key is not None:
            moved = self._sticky_actor.get(key) is not actor
            if moved and config.get("checkpoint") is None and key in self._sticky_blob:
                config = {**config, "checkpoint": self._sticky_blob[key]}  # the replica moves: its state too
            self._sticky_actor[key] = actor
        seed = self.spec.seed * 100_003 + record.trial_id
        method = actor.run if self._streams else actor.call
        gen = method.remote(record.trial_id, config, seed, self._function, self._task_ref, self._token)
        self.running[gen] = _Running(record, actor)
        if not again:
            self._emit("on_trial_start", record)
        return gen

    def idle(self) -> None:
        """Let the strategy work while its trials run (its optional ``idle()``: NEAT's speciation)."""
        if self.running:
            idle = getattr(self.strategy, "idle", None)
            if idle is not None:
                idle()

    def check_limits(self, now: float) -> None:
        """Job wall clock, target, per-trial time limits."""
        budget = self.spec.budget
        if self.stop_reason is None:
            if budget.max_wall_seconds is not None and now - self._start >= budget.max_wall_seconds:
                self._stop_all("wall_clock")
            elif budget.target is not None and self.best is not None and self.best.value is not None:
                if self.best.value == budget.target or self.spec.mode.better(self.best.value, budget.target):
                    self._stop_all("target")
        if budget.max_trial_seconds is not None:
            for running in self.running.values():
                if not running.timed_out and now - running.record.started > budget.max_trial_seconds:
                    running.timed_out = True
                    self._send_stop(running, f"over the trial time limit of {budget.max_trial_seconds:g} s")

    def overdue(self, now: float) -> list[Any]:
        """Generators of trials that ignored a stop (time limit or job stop) for longer than the grace period."""
        out = []
        for gen, running in self.running.items():
            if running.stop_why is None:
                continue
            if running.timed_out:
                since = running.record.started + (self.spec.budget.max_trial_seconds or 0.0)
            elif self._stop_at is not None:
                since = self._stop_at
            else:
                continue  # pruned: the trial stops at its next report
            if now - since >= _STOP_GRACE_SECONDS:
                out.append(gen)
        return out

    def kill(self, gen: Any, pool: WorkerPool) -> None:
        """Kill a trial that ignored its stop; it ends failed (time limit) or pruned (job stop)."""
        running = self.running.pop(gen)
        pool.replace(running.actor)
        if running.timed_out:
            self._finish(running.record, Status.FAILED, {}, f"killed: {running.stop_why}")
        else:
            self._finish(running.record, Status.PRUNED, {}, f"killed after the job stopped ({self.stop_reason})")

    def collect(self, gen: Any, pool: WorkerPool) -> None:
        """Handle the next message of a trial's generator: a report, the final result, or a dead worker."""
        running = self.running[gen]
        record = running.record
        try:
            msg = ray.get(gen if isinstance(gen, ray.ObjectRef) else next(gen))
        except StopIteration:
            self._drop(gen, pool, replace=True)
            self._finish(record, Status.FAILED, {}, "worker ended the trial without a result")
            return
        except ray.exceptions.RayError as err:
            self._drop(gen, pool, replace=True)
            reason = f"worker died: {type(err).__name__}: {_first_line(err)}"
            if record.attempts <= self.spec.budget.trial_retries and self.stop_reason is None and not running.timed_out:
                record.attempts += 1
                record.history.clear()
                self._requeue.append(Proposal(record.trial_id, record.params))
                self._emit("on_trial_retry", record, reason)
            else:
                self._finish(record, Status.FAILED, {}, reason)
            return
        if msg["type"] == "report":
            self._on_report(running, msg)
            return
        self._drop(gen, pool, replace=False)
        record.node, record.device = msg["node"], msg["device"]
        key = record.params.get("replica")
        if key is not None and msg.get("blob") is not None:
            self._sticky_blob[key] = msg["blob"]
            keep = getattr(self.strategy, "checkpoint_replica", None)
            if keep is not None:
                keep(key, base64.b64encode(msg["blob"]).decode("ascii"))
        status = Status(msg["status"])
        metrics: dict[str, float] = msg["metrics"]
        reason = msg["reason"]
        metric = self.spec.objective.metric
        if running.timed_out:
            status, reason = Status.FAILED, f"stopped: {running.stop_why}"
        elif status is Status.PRUNED and running.stop_why is not None:
            reason = running.stop_why
        elif status is Status.OK and metric not in metrics:
            status, reason = Status.FAILED, f"objective metric {metric!r} missing from the metrics {sorted(metrics)}"
        elif status is Status.OK and not math.isfinite(metrics[metric]):
            status, reason = Status.FAILED, f"objective {metric} is not finite"
        self._finish(record, status, metrics, reason, model=msg.get("model"))

    # ------------------------------------------------------------------ internals
    def _stop_all(self, reason: str) -> None:
        self.stop_reason = reason
        self._stop_at = time.time()
        while self._requeue:  # queued again (a retry, a resumed job) but never to run now
            record = self.records[self._requeue.popleft().trial_id]
            self._finish(record, Status.PRUNED, {}, f"not run again: the job stopped ({reason})")
        for running in self.running.values():
            self._send_stop(running, f"stopped: {reason}")

    def _send_stop(self, running: _Running, why: str) -> None:
        if running.stop_why is None:
            running.stop_why = why
            running.actor.stop.remote(running.record.trial_id)

    def _drop(self, gen: Any, pool: WorkerPool, replace: bool) -> None:
        running = self.running.pop(gen)
        if replace:
            pool.replace(running.actor)
        else:
            pool.release(running.actor)

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
        self._waiting = False
        previous = self.best
        if self._update_best(record) and model is not None:
            self.best_model = ModelBlob(model, self._input_example)
        self._emit("on_trial_end", record, self.best)
        self._emit_rounds()
        if record.private:  # a finished trial's payload is dead weight, except the best's (its genomes are logged)
            for done in (previous, record):
                if done is not None and done is not self.best:
                    _shed_payload(done)

    def _emit_rounds(self) -> None:
        """``on_round`` for each round the strategy closed since the last call (NEAT, annealing)."""
        rounds = getattr(self.strategy, "rounds", None)
        if rounds is not None:
            done = rounds()
            for index in range(self._rounds_seen, len(done)):
                self._emit("on_round", index, done[index])
            self._rounds_seen = len(done)

    def _update_best(self, record: TrialRecord) -> bool:
        if record.status is Status.OK and record.value is not None:
            if self.best is None or self.spec.mode.better(record.value, self.best.value):
                self.best = record
                return True
        return False

    def _emit(self, hook: str, *args: Any) -> None:
        for reporter in self.reporters:
            getattr(reporter, hook)(*args)


def _shed_payload(record: TrialRecord) -> None:
    """Drop a finished trial's work payload from its config.

    The payload is ``record.private``: a NEAT batch's genomes, a replica's checkpoint. A long NEAT
    job would otherwise hold every generation's genomes: memory that grows without end, and a heap
    whose full garbage collections take longer and longer (up to 150 ms at generation 300 of XOR).
    """
    if any(k in record.config for k in record.private):
        record.config = {k: v for k, v in record.config.items() if k not in record.private}


def _ended_early(strategy: Strategy) -> str | None:
    """Why the strategy itself ended the search before its budget (NEAT: ``"solved"``, ``"extinct"``)."""
    why = getattr(strategy, "ended", None)
    return why if isinstance(why, str) else None


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
        from service.tracking import reporter_for

        all_reporters.append(reporter_for(spec))
    if progress:
        from service.progress import ProgressReporter

        all_reporters.append(ProgressReporter(spec))
    all_reporters += reporters or []
    return JobRunner(spec, all_reporters).run()
