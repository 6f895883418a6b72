"""The trial loop: many jobs, one shared worker pool, one ``ray.wait`` over every running trial.

:class:`TrialLoop` is what the embedded :func:`service.runner.run` and the service's
scheduler both drive; :class:`service.runner.JobRunner` is one job's side of it.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import ray

from service.workers import WorkerPool

if TYPE_CHECKING:
    from service.runner import JobRunner

_REFRESH_SECONDS = 5.0  # how often the pool follows the cluster's size
_FROZEN_LOCK = threading.Lock()
_FROZEN_DEPTH = 0
_FROZEN_HERE = False  # whether the outermost frozen_heap froze (nothing was frozen before)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep Python's cyclic garbage collector off the objects that exist on entry, until the last exit.

    A coordinator's heap is mostly modules (Ray, PyTorch, MLflow: ~270,000 objects) that a
    full collection rescans every time, while a job allocates many short-lived containers
    (NEAT genomes, trial records) that trigger collections. ``gc.freeze()`` moves what exists
    now to a permanent generation that collections skip; on NEAT XOR in-process this took
    the collector from ~4.8 to ~0.7 ms a generation. Nested and concurrent uses share one
    freeze, and the outermost exit calls ``gc.unfreeze()``. Where the process had frozen its
    heap itself before, the outermost entry freezes what was made since as well (Ray's runtime,
    the job's actors: a full collection of those took 10-15 ms, 11 times in 300 XOR
    generations), and the exit leaves everything frozen: an unfreeze would undo the process's
    own freeze too.
    """
    global _FROZEN_DEPTH, _FROZEN_HERE
    with _FROZEN_LOCK:
        if _FROZEN_DEPTH == 0:
            _FROZEN_HERE = gc.get_freeze_count() == 0
            gc.freeze()
        _FROZEN_DEPTH += 1
    try:
        yield
    finally:
        with _FROZEN_LOCK:
            _FROZEN_DEPTH -= 1
            if _FROZEN_DEPTH == 0 and _FROZEN_HERE:
                gc.unfreeze()


class TrialLoop:
    """Drives one or many :class:`JobRunner` s over one shared :class:`WorkerPool`.

    Each :meth:`step` checks limits, hands free workers to the jobs that want them (the job
    with the fewest trials in flight first, each within its ``budget.parallel``), waits for
    the next message from any running trial, and hands it to its job. A job that has ended
    leaves the loop through ``on_ended``. Whenever the set of jobs changes, the pool tells
    Ray's autoscaler what they want: ``budget.parallel`` workers of each job's shape, so a
    cluster with an autoscaling worker group grows to fit them.

    Args:
        pool: The worker pool (default: one over the whole Ray cluster).
        on_ended: Called with each job that has ended (default: nothing; call ``job.finish()``).
    """

    def __init__(self, pool: WorkerPool | None = None, on_ended: Callable[[JobRunner], None] | None = None) -> None:
        self.pool = pool or WorkerPool()
        self._refreshed = time.time()
        self.jobs: list[JobRunner] = []
        self._owner: dict[Any, JobRunner] = {}
        self._demand_changed = True
        self._on_ended = on_ended

    def add(self, job: JobRunner) -> None:
        """Take a prepared job into the loop."""
        self.jobs.append(job)
        self._demand_changed = True

    def step(self, timeout: float = 1.0) -> None:
        """One round: limits, dispatch, wait up to ``timeout`` s for a message, handle it."""
        now = time.time()
        if now - self._refreshed > _REFRESH_SECONDS:
            self.pool.refresh()
            self._refreshed = now
        if self._demand_changed:
            self._demand_changed = False
            self.pool.request([j.shape for j in self.jobs for _ in range(j.spec.budget.parallel)])
        for job in self.jobs:
            job.check_limits(now)
            for gen in job.overdue(now):
                self._owner.pop(gen, None)
                job.kill(gen, self.pool)
        self._dispatch()
        for job in [j for j in self.jobs if j.ended()]:
            self.jobs.remove(job)
            self._demand_changed = True
            if self._on_ended is not None:
                self._on_ended(job)
        for job in self.jobs:
            job.idle()
        if not self._owner:
            if self.jobs:
                time.sleep(min(timeout, 0.05))
            return
        ready, _ = ray.wait(list(self._owner), num_returns=1, timeout=timeout)
        for gen in ready:
            job = self._owner[gen]
            job.collect(gen, self.pool)
            if gen not in job.running:
                del self._owner[gen]

    def _dispatch(self) -> None:
        blocked: set[int] = set()
        while True:
            wanting = [j for j in self.jobs if id(j) not in blocked and j.wants()]
            if not wanting:
                return
            job = min(wanting, key=lambda j: len(j.running))
            if not self.pool.available(job.shape):
                blocked.add(id(job))  # no room for this shape now
                continue
            proposal = job.next_proposal()
            if proposal is None:
                continue
            actor = self.pool.acquire(job.shape, prefer=job.preferred_actor(proposal))
            if actor is None:
                job.push_back(proposal)
                blocked.add(id(job))
                continue
            self._owner[job.start(proposal, actor)] = job

    def shutdown(self) -> None:
        """Kill every actor (running trials included) and withdraw the request to the autoscaler."""
        self.pool.request([])
        self.pool.shutdown()
