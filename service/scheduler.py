"""The service's coordinator: many jobs at once on one Ray cluster, durable across restarts.

One thread drives a :class:`~service.loop.TrialLoop` over every admitted job, so all jobs
share one worker pool fairly (each within its own ``budget.parallel``; a free worker goes
to the job with the fewest trials in flight). Everything the loop decides is written to
the :class:`~service.store.Store` as it happens — a trial's start and end, each with the
strategy checkpoint of that moment — so a service killed at any point restarts with every
unfinished job where it was: finished trials are not run again, in-flight ones are
dispatched again under the same id, and each trial keeps its one MLflow child run.

Jobs are prepared (MLflow parent run, task data into the object store) and finished (plots,
best model) on a small thread pool, so that neither stalls dispatch for other jobs.

Example:
    >>> sched = Scheduler("sqlite:///crucible.db")                         # doctest: +SKIP
    >>> sched.start()                                                      # doctest: +SKIP
    >>> job = sched.submit(JobSpec.from_yaml("examples/digits-bayes.yaml"), owner="me")  # doctest: +SKIP
    >>> sched.wait(job["id"])["state"]                                     # doctest: +SKIP
    'succeeded'
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from search import restore_strategy
from search.base import Mode, Status
from service import store as st
from service.events import Reporter, TrialRecord
from service.loop import TrialLoop, frozen_heap
from service.runner import JobRunner, ensure_ray
from service.spec import JobSpec


class StoreReporter(Reporter):
    """Writes a job's trials, with the strategy checkpoint of each moment, to the store."""

    def __init__(self, store: st.Store, job_id: str, job: JobRunner) -> None:
        self.store, self.job_id, self.job = store, job_id, job
        self._started = False

    def on_trial_start(self, record: TrialRecord) -> None:
        """Store the dispatched trial with the checkpoint that has it pending; the job is running."""
        self.store.trial_started(self.job_id, record.trial_id, record.params, self.job.strategy.state())
        if not self._started:
            self._started = True
            self.store.update_job(self.job_id, state=st.RUNNING, started=time.time())

    def on_trial_retry(self, record: TrialRecord, reason: str) -> None:
        """Count the attempt."""
        self.store.trial_started(self.job_id, record.trial_id, record.params, None)

    def on_trial_end(self, record: TrialRecord, best: TrialRecord | None) -> None:
        """Store the result with the checkpoint that took it in."""
        self.store.trial_finished(self.job_id, record.to_dict(), self.job.strategy.state())


class Scheduler:
    """Runs submitted jobs on a shared Ray worker pool and keeps them in a durable store.

    Args:
        store_url: SQLAlchemy URL of the job store (sqlite file or PostgreSQL).
        ray_address: Ray cluster to join (``None``: start a local Ray).
        num_cpus: CPUs of a locally started Ray.
        tracking_uri: MLflow store for every job (``None``: each spec's own ``tracking.uri``).
        max_trial_retries: Upper bound on a spec's ``budget.trial_retries``.
        tracking: Log jobs to MLflow.
    """

    def __init__(
        self,
        store_url: str,
        ray_address: str | None = None,
        num_cpus: int | None = None,
        tracking_uri: str | None = None,
        max_trial_retries: int = 1,
        tracking: bool = True,
    ) -> None:
        self.store = st.Store(store_url)
        self._ray_address, self._num_cpus = ray_address, num_cpus
        self._tracking_uri, self._max_retries, self._tracking = tracking_uri, max_trial_retries, tracking
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._jobs: dict[str, JobRunner] = {}  # admitted and not yet finished, touched by the loop thread only
        # One pool prepares and finishes jobs (opens and closes their MLflow runs); separate prepare and
        # finish pools measured no faster in benchmarks/service_load.py (the GIL and the stores are shared).
        self._helpers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="crucible-job")
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._loop: TrialLoop | None = None
        self._busy = 0  # jobs being prepared or finished on the helper threads
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Connect to Ray, resume every unfinished job from the store, start the loop thread."""
        # The tracking server may be away for a while: fail a call fast and let the writer retry.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        ensure_ray(self._ray_address, self._num_cpus)
        self._loop = TrialLoop(on_ended=self._ended)
        for row in reversed(self.store.jobs(states=frozenset({st.QUEUED, st.RUNNING}))):
            self._admit(row["id"])
        self._thread = threading.Thread(target=self._run, name="crucible-scheduler", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop the loop and kill the workers; unfinished jobs stay in the store and resume on the next start."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._helpers.shutdown(wait=False, cancel_futures=True)
        if self._loop is not None:
            self._loop.shutdown()
        self.store.close()

    # ------------------------------------------------------------------ API (any thread)
    def submit(self, spec: JobSpec, owner: str) -> dict[str, Any]:
        """Store a validated job as ``queued`` and hand it to the loop; its summary."""
        if self._tracking_uri is not None:
            spec = dataclasses.replace(spec, tracking=dataclasses.replace(spec.tracking, uri=self._tracking_uri))
        if spec.budget.trial_retries > self._max_retries:
            spec = dataclasses.replace(spec, budget=dataclasses.replace(spec.budget, trial_retries=self._max_retries))
        job_id = self.store.create_job(spec.name, owner, spec.to_dict())
        self._admit(job_id)
        return self._summary(self.store.job(job_id))

    def list_jobs(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Summaries of ``owner``'s jobs (everyone's for ``None``), newest first."""
        return [self._summary(row) for row in self.store.jobs(owner)]

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        """A job's summary with its spec and trial table, or ``None``."""
        row = self.store.job(job_id)
        if row is None:
            return None
        trials = self.store.trials(job_id)
        out = self._summary(row, trials)
        out["spec"] = row["spec"]
        out["trials"] = [{k: v for k, v in t.items() if k != "logged"} for t in trials]
        return out

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Durably cancel a job: queued ones at once, running ones after their trials stop."""
        if self.store.request_cancel(job_id):
            self._inbox.put(("cancel", job_id))
        row = self.store.job(job_id)
        if row is None:
            raise KeyError(job_id)
        return self._summary(row)

    def health(self) -> dict[str, Any]:
        """Liveness of the loop and counts of queued and running jobs."""
        import ray

        rows = self.store.jobs(states=frozenset({st.QUEUED, st.RUNNING}))
        return {
            "ray": ray.is_initialized(),
            "loop": self._thread is not None and self._thread.is_alive(),
            "jobs_running": sum(r["state"] == st.RUNNING for r in rows),
            "jobs_queued": sum(r["state"] == st.QUEUED for r in rows),
        }

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.2) -> dict[str, Any]:
        """Block until the job ends; its summary."""
        deadline = None if timeout is None else time.time() + timeout
        while True:
            row = self.store.job(job_id)
            if row is None:
                raise KeyError(job_id)
            if row["state"] in st.TERMINAL:
                return self._summary(row)
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"job {job_id} still {row['state']} after {timeout} s")
            time.sleep(poll)

    # ------------------------------------------------------------------ loop thread
    def _run(self) -> None:
        assert self._loop is not None
        with frozen_heap():  # the service's modules: see frozen_heap
            while not self._halt.is_set():
                try:
                    self._drain_inbox()
                    if self._loop.jobs:
                        self._loop.step(timeout=0.2)
                    else:
                        time.sleep(0.05)
                except Exception:  # noqa: BLE001 — the loop must outlive any one bug
                    traceback.print_exc()
                    time.sleep(0.5)

    def _drain_inbox(self) -> None:
        assert self._loop is not None
        while True:
            try:
                kind, data = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "ready":
                job_id, job = data
                self._jobs[job_id] = job
                self._loop.add(job)
                if self.store.job(job_id)["cancel_requested"]:
                    job.cancel()
            elif kind == "cancel" and data in self._jobs:
                self._jobs[data].cancel()

    def _admit(self, job_id: str) -> None:
        with self._lock:
            self._busy += 1
        self._helpers.submit(self._prepare, job_id)

    def _prepare(self, job_id: str) -> None:
        """Build (or restore) the job and its reporters, open its MLflow run; hand it to the loop."""
        try:
            row = self.store.job(job_id)
            if row is None or row["state"] in st.TERMINAL:
                return
            spec = JobSpec.from_dict(row["spec"])
            job, relog = self._restore(job_id, spec)
            tracker = None
            if self._tracking:
                from service.tracking import reporter_for

                tracker = reporter_for(
                    spec,
                    run_id=row["mlflow_run_id"],
                    on_logged=lambda ids: self.store.mark_logged(job_id, ids),
                    max_outage_seconds=3600.0,
                    patience_seconds=3600.0,
                )
                job.reporters.append(tracker)
            job.reporters.append(StoreReporter(self.store, job_id, job))
            assert self._loop is not None
            job.prepare(self._loop.pool)
            if tracker is not None:
                self.store.update_job(job_id, mlflow_run_id=tracker.run_id)
                for record, finished in relog:  # what the crash cut off, into the runs they have
                    tracker.on_trial_start(record)
                    if finished:
                        tracker.on_trial_end(record, job.best)
            self._inbox.put(("ready", (job_id, job)))
        except Exception as err:  # noqa: BLE001 — a job that cannot start fails alone
            traceback.print_exc()
            self.store.update_job(
                job_id, state=st.FAILED, finished=time.time(), error=f"{type(err).__name__}: {err}"[:2000]
            )
        finally:
            with self._lock:
                self._busy -= 1

    def _restore(self, job_id: str, spec: JobSpec) -> tuple[JobRunner, list]:
        """A fresh job, or one rebuilt from its checkpoint and trial rows (and what MLflow still lacks)."""
        checkpoint = self.store.checkpoint(job_id)
        if checkpoint is None:
            return JobRunner(spec), []
        strategy = restore_strategy(spec.strategy, spec.search_config(), checkpoint)
        pending = {p.trial_id for p in strategy.pending()}
        records: dict[int, TrialRecord] = {}
        relog: list[tuple[TrialRecord, bool]] = []
        for t in self.store.trials(job_id):
            record = TrialRecord(t["trial_id"], t["params"], spec.trial_config(t["params"]), attempts=t["attempts"])
            if t["status"] == "running":
                if t["trial_id"] not in pending:
                    continue  # cannot happen: start and checkpoint are one transaction
                self.store.trial_started(job_id, t["trial_id"], t["params"], None)  # one more attempt
                record.attempts += 1
                relog.append((record, False))
            else:
                record.status, record.value, record.metrics = Status(t["status"]), t["value"], t["metrics"]
                record.reason, record.node, record.device = t["reason"], t["node"], t["device"]
                record.started, record.finished = t["started"], t["finished"]
                if not t["logged"]:
                    relog.append((record, True))
            records[record.trial_id] = record
        return JobRunner(spec, strategy=strategy, records=records), relog

    def _ended(self, job: JobRunner) -> None:
        job_id = next(k for k, v in self._jobs.items() if v is job)
        del self._jobs[job_id]
        with self._lock:
            self._busy += 1
        self._helpers.submit(self._finish, job_id, job)

    def _finish(self, job_id: str, job: JobRunner) -> None:
        try:
            error = None
            try:
                result = job.finish()
                stop_reason, ok = result.stop_reason, result.best is not None
            except Exception as err:  # noqa: BLE001 — logging the summary failed; the trials are stored
                traceback.print_exc()
                stop_reason, ok, error = job.stop_reason or "budget", job.best is not None, f"finishing: {err}"
            if stop_reason == "cancelled":
                state = st.CANCELLED
            elif ok:
                state = st.SUCCEEDED
            else:
                state, error = st.FAILED, error or "no trial succeeded"
            self.store.update_job(job_id, state=state, finished=time.time(), stop_reason=stop_reason, error=error)
        finally:
            with self._lock:
                self._busy -= 1

    # ------------------------------------------------------------------ views
    def _summary(self, row: dict[str, Any], trials: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        spec = row["spec"]
        trials = self.store.trials(row["id"]) if trials is None else trials
        mode = Mode(spec["objective"]["mode"])
        counts = {"budget": spec["budget"]["trials"], "ok": 0, "failed": 0, "pruned": 0, "running": 0}
        best = None
        for t in trials:
            counts[t["status"]] = counts.get(t["status"], 0) + 1
            if t["status"] == "ok" and t["value"] is not None:
                if best is None or mode.better(t["value"], best["value"]):
                    best = t
        return {
            "id": row["id"],
            "name": row["name"],
            "owner": row["owner"],
            "state": row["state"],
            "strategy": spec["strategy"],
            "metric": spec["objective"]["metric"],
            "mode": mode.value,
            "created": row["created"],
            "started": row["started"],
            "finished": row["finished"],
            "stop_reason": row["stop_reason"],
            "error": row["error"],
            "counts": counts,
            "best": None if best is None else {k: best[k] for k in ("trial_id", "value", "params", "metrics")},
            "mlflow_run_id": row["mlflow_run_id"],
            "tracking_uri": spec["tracking"]["uri"],
        }


__all__ = ["Scheduler", "StoreReporter"]
