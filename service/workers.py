"""The Ray actor pool that runs trials.

Actors are generic and reused across trials and across jobs: each ``run`` call names the
trial function (or the built-in trainer) and the task's object-store reference. A trial
runs in a thread inside the actor while the actor method — a Ray streaming generator —
yields its per-epoch reports as they happen, then one final message. The actor is threaded
(``max_concurrency=2``) so that :meth:`TrialActor.stop` can reach a running trial between
epochs. Large shared inputs (the task's data set) are put in the object store once per job.
Trials that report nothing on the way (a NEAT batch) go through the plain method
:meth:`TrialActor.call` instead: one actor call, its final message as the return value.

:class:`WorkerPool` holds the actors of one Ray cluster, keyed by their resource shape
(CPUs, GPUs per trial), and never asks for more than the cluster has: an idle actor of
another shape is retired to make room.

Messages yielded by ``TrialActor.run`` are plain dicts:

* ``{"type": "report", "trial_id", "epoch", "metrics"}``
* ``{"type": "final", "trial_id", "status", "metrics", "reason", "model", "blob", "node", "device"}``

``model`` is the built-in trainer's network (a pickled ``torch.nn.Module``); ``blob`` is
opaque state a trial function hands back by returning it under the key ``"__blob__"``
(an annealing replica's checkpoint, say).
"""

from __future__ import annotations

import importlib
import inspect
import io
import queue
import socket
import sys
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray

from service.errors import TrialFailed, TrialStopped

TrialFn = Callable[..., dict[str, float]]
_MISSING = object()


def resolve_function(fn: str | TrialFn) -> TrialFn:
    """Turn ``"pkg.module:fn"`` into the callable (callables pass through)."""
    if callable(fn):
        return fn
    module_name, _, attr = fn.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise TrialFailed(f"objective.function {fn!r}: cannot import module {module_name!r}: {err}") from err
    try:
        return getattr(module, attr)
    except AttributeError as err:
        raise TrialFailed(f"objective.function {fn!r}: module {module_name!r} has no {attr!r}") from err


def pick_device() -> str:
    """``"cuda"`` when Ray gave this worker a GPU and torch can see one, else ``"cpu"``."""
    if ray.get_gpu_ids():
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


@dataclass
class TrialContext:
    """What a trial function that accepts a ``context`` argument gets besides its config.

    Attributes:
        shared: The job's shared input from the object store (a data set, task settings).
        device: ``"cuda"`` or ``"cpu"``: where this worker computes.
        seed: Seed for the trial's own RNGs.
        cpus: CPUs Ray gave this worker.
        job: Names the job's run (state cached for one run is not another's).
        should_stop: True once the coordinator asked the trial to stop.
        cache: This worker's small LRU cache, kept between trials (an annealing replica's
            chain, say); key it by ``job``.
    """

    shared: Any
    device: str
    seed: int
    cpus: float
    job: str
    should_stop: Callable[[], bool]
    cache: TrialCache


class TrialCache:
    """A worker's LRU map of state kept between trials (at most ``size`` entries)."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def pop(self, key: Any, default: Any = None) -> Any:
        """Take ``key``'s state out (``default`` when it is not held)."""
        with self._lock:
            return self._items.pop(key, default)

    def put(self, key: Any, value: Any) -> None:
        """Keep ``value`` under ``key``; the least recently put entry goes past ``size``."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


@dataclass(frozen=True)
class SharedInput:
    """A job's shared input in the object store, as a trial argument the worker resolves itself.

    Passed bare, an ``ObjectRef`` argument is fetched again for every call; wrapped, it is
    fetched by the first trial of the job on each worker and then taken from the worker's
    cache (the fetch costs about a millisecond per call even for a small object).
    """

    ref: Any


def _takes_context(fn: Callable[..., Any]) -> bool:
    try:
        return "context" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class _Trial:
    """One running trial: its stop flag and the queue its reports go through."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.messages: queue.Queue[tuple[str, Any]] = queue.Queue()

    def push(self, epoch: int | None = None, **metrics: float) -> None:
        """Forward one report to the coordinator."""
        self.messages.put(("report", {"epoch": epoch, "metrics": {k: float(v) for k, v in metrics.items()}}))

    def report(self, epoch: int | None = None, **metrics: float) -> None:
        """The ``report`` a custom trial function gets: raises once the trial must stop."""
        if self.stop.is_set():
            raise TrialStopped("stopped by the coordinator")
        self.push(epoch, **metrics)


@ray.remote(max_concurrency=2)
class TrialActor:
    """A reusable worker that runs one trial at a time and streams its reports."""

    def __init__(self, cpus: float) -> None:
        self._cpus = cpus
        self._trials: dict[int, _Trial] = {}
        self._early_stops: set[int] = set()  # stop() may arrive before run() has started
        self._lock = threading.Lock()
        # host name plus the Ray node's short id: two Ray nodes on one host stay apart
        self._node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
        self._device = pick_device()
        self._cache = TrialCache()
        self._shared = TrialCache(size=4)  # SharedInput ref -> its value

    def info(self) -> dict[str, str]:
        """Where this actor runs: node name and device."""
        return {"node": self._node, "device": self._device}

    def stop(self, trial_id: int) -> bool:
        """Ask a running trial to stop at its next report (pruning, wall-clock limit)."""
        with self._lock:
            trial = self._trials.get(trial_id)
            if trial is None:
                self._early_stops.add(trial_id)
            else:
                trial.stop.set()
        return trial is not None

    def _begin(self, trial_id: int, task: Any, seed: int, job: str) -> tuple[_Trial, TrialContext]:
        """Register a starting trial (a stop that came early applies) and build its context."""
        shared = self._resolve(task)
        trial = _Trial()
        with self._lock:
            self._trials[trial_id] = trial
            if trial_id in self._early_stops:
                self._early_stops.discard(trial_id)
                trial.stop.set()
        return trial, TrialContext(shared, self._device, seed, self._cpus, job, trial.stop.is_set, self._cache)

    def run(
        self,
        trial_id: int,
        config: dict[str, Any],
        seed: int,
        function: str | TrialFn | None = None,
        task: Any = None,
        job: str = "",
    ) -> Iterator[dict[str, Any]]:
        """Run one trial; yield its reports as they happen, then one final message.

        Args:
            trial_id: The trial's id (``stop`` names it).
            config: Full trial config.
            seed: Seed for the trial's own RNGs.
            function: Custom trial function or import path; ``None`` runs the built-in trainer.
            task: The job's shared input, usually a :class:`SharedInput` (fetched once per
                worker): the built-in trainer's task, or what a function that takes
                ``context`` reads as ``context.shared``.
            job: Names the job's run, for functions that keep state in ``context.cache``.
        """
        trial, context = self._begin(trial_id, task, seed, job)
        thread = threading.Thread(target=self._execute, args=(trial, config, context, function), daemon=True)
        thread.start()
        try:
            while True:
                kind, payload = trial.messages.get()
                if kind == "report":
                    yield {"type": "report", "trial_id": trial_id, **payload}
                    continue
                yield self._final(trial_id, payload)
                return
        finally:
            thread.join(timeout=5)
            self._trials.pop(trial_id, None)

    def call(
        self,
        trial_id: int,
        config: dict[str, Any],
        seed: int,
        function: str | TrialFn | None = None,
        task: Any = None,
        job: str = "",
    ) -> dict[str, Any]:
        """Run one trial that streams nothing and return its final message (arguments as :meth:`run`).

        For short trials whose reports nobody reads (a NEAT batch): one plain actor call,
        run on the calling thread, costs less than a streaming generator and a trial thread.
        Reports the function makes are dropped; :meth:`stop` still reaches it.
        """
        trial, context = self._begin(trial_id, task, seed, job)
        try:
            self._execute(trial, config, context, function)
            while True:
                kind, payload = trial.messages.get_nowait()
                if kind == "final":
                    return self._final(trial_id, payload)
        finally:
            self._trials.pop(trial_id, None)

    def _resolve(self, task: Any) -> Any:
        """A :class:`SharedInput`'s value (fetched once per worker), or ``task`` as it came."""
        if not isinstance(task, SharedInput):
            return task
        key = task.ref.hex()
        value = self._shared.pop(key, _MISSING)
        if value is _MISSING:
            value = ray.get(task.ref)
        self._shared.put(key, value)
        return value

    def _final(self, trial_id: int, payload: dict[str, Any]) -> dict[str, Any]:
        return {"type": "final", "trial_id": trial_id, "node": self._node, "device": self._device, **payload}

    def _execute(
        self, trial: _Trial, config: dict[str, Any], context: TrialContext, function: str | TrialFn | None
    ) -> None:
        final: dict[str, Any] = {"status": "ok", "metrics": {}, "reason": None, "model": None, "blob": None}
        try:
            if function is None:
                final.update(self._run_builtin(trial, config, context.seed, context.shared))
            else:
                fn = resolve_function(function)
                if _takes_context(fn):
                    out = fn(dict(config), trial.report, context=context)
                else:
                    out = fn(dict(config), trial.report)
                if isinstance(out, dict) and "__blob__" in out:
                    out = dict(out)
                    final["blob"] = out.pop("__blob__")
                final["metrics"] = _clean_metrics(out)
        except TrialStopped as err:
            final.update(status="pruned", reason=str(err))
        except Exception as err:  # noqa: BLE001 — any trial error fails that trial only
            final.update(status="failed", reason=_describe(err))
        trial.messages.put(("final", final))

    def _run_builtin(self, trial: _Trial, config: dict[str, Any], seed: int, task: Any) -> dict[str, Any]:
        import torch

        from models.train import train_mlp

        torch.set_num_threads(max(1, int(self._cpus)))
        outcome = train_mlp(
            config,
            task,
            report=trial.push,
            device=self._device,
            should_stop=trial.stop.is_set,
            seed=seed,
        )
        buf = io.BytesIO()
        torch.save(outcome.model, buf)
        status, reason = ("pruned", "stopped by the coordinator") if outcome.stopped else ("ok", None)
        return {"status": status, "reason": reason, "metrics": _clean_metrics(outcome.metrics), "model": buf.getvalue()}


def _clean_metrics(out: Any) -> dict[str, float]:
    if not isinstance(out, dict):
        raise TrialFailed(f"the trial function must return a dict of metrics, but returned {type(out).__name__}")
    metrics = {}
    for key, value in out.items():
        try:
            metrics[str(key)] = float(value)
        except (TypeError, ValueError) as err:
            raise TrialFailed(f"metric {key!r} is not a number: {value!r}") from err
    return metrics


def _describe(err: BaseException) -> str:
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(err).__name__}: {err}{where}"


Shape = tuple[float, float]  # (CPUs, GPUs) per actor


class WorkerPool:
    """Reused trial actors of one Ray cluster, keyed by resource shape.

    Actors are made on demand, up to what the cluster's CPUs and GPUs hold; an idle actor
    of another shape is retired when a new shape needs its room. Dead or hung actors are
    killed and their room freed.

    Args:
        capacity: ``{"CPU": n, "GPU": m}`` the pool may use (default: the whole cluster).
    """

    def __init__(self, capacity: dict[str, float] | None = None) -> None:
        self._fixed = capacity is not None
        total = capacity if capacity is not None else ray.cluster_resources()
        self.capacity = (float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0)))
        self._idle: dict[Shape, list[Any]] = {}
        self._shape: dict[Any, Shape] = {}  # every live actor -> its shape
        self._requested: list[Shape] | None = None

    def refresh(self) -> None:
        """Follow the cluster's size (nodes join and leave); retire idle actors beyond it."""
        if self._fixed:
            return
        total = ray.cluster_resources()
        self.capacity = (float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0)))
        cpu, gpu = self.used()
        for shape, idle in self._idle.items():
            while idle and (cpu > self.capacity[0] + 1e-9 or gpu > self.capacity[1] + 1e-9):
                self._retire(idle.pop())
                cpu, gpu = cpu - shape[0], gpu - shape[1]

    def request(self, shapes: list[Shape]) -> None:
        """Ask Ray's autoscaler for room for one worker of each shape (the standing request is replaced).

        Where no autoscaler runs (a local Ray, a fixed cluster) the request is only recorded.
        """
        wanted = sorted(shapes)
        if wanted == self._requested:
            return
        from ray.autoscaler.sdk import request_resources

        bundles = [{"CPU": cpu, **({"GPU": gpu} if gpu else {})} for cpu, gpu in wanted]
        try:
            request_resources(bundles=bundles)
        except Exception as err:  # noqa: BLE001 — a hint to the autoscaler must never stop the jobs
            print(f"crucible: could not ask the autoscaler for resources: {err}", file=sys.stderr)
        self._requested = wanted

    def used(self) -> Shape:
        """CPUs and GPUs held by live actors (idle or busy)."""
        return (sum(s[0] for s in self._shape.values()), sum(s[1] for s in self._shape.values()))

    def fits(self, shape: Shape) -> bool:
        """Whether one actor of ``shape`` fits in an empty pool."""
        return shape[0] <= self.capacity[0] + 1e-9 and shape[1] <= self.capacity[1] + 1e-9

    def available(self, shape: Shape) -> bool:
        """Whether :meth:`acquire` would give an actor of ``shape`` now."""
        if self._idle.get(shape):
            return True
        cpu, gpu = self.used()
        cpu -= sum(s[0] * len(lst) for s, lst in self._idle.items())  # idle actors can be retired
        gpu -= sum(s[1] * len(lst) for s, lst in self._idle.items())
        return cpu + shape[0] <= self.capacity[0] + 1e-9 and gpu + shape[1] <= self.capacity[1] + 1e-9

    def acquire(self, shape: Shape, prefer: Any | None = None) -> Any | None:
        """An idle actor of ``shape`` (``prefer`` if it is idle), a new one if there is room, else ``None``."""
        idle = self._idle.get(shape)
        if idle:
            if prefer is not None and prefer in idle:
                idle.remove(prefer)
                return prefer
            return idle.pop()
        while not self._room_for(shape):
            victim = next(((s, lst) for s, lst in self._idle.items() if lst), None)
            if victim is None:
                return None
            self._retire(victim[1].pop())
        actor = TrialActor.options(num_cpus=shape[0], num_gpus=shape[1]).remote(shape[0])
        self._shape[actor] = shape
        return actor

    def warm(self, shape: Shape, n: int) -> None:
        """Start up to ``n`` idle actors of ``shape`` now, as far as there is room."""
        for _ in range(n - len(self._idle.get(shape, []))):
            if not self._room_for(shape):
                return
            actor = TrialActor.options(num_cpus=shape[0], num_gpus=shape[1]).remote(shape[0])
            self._shape[actor] = shape
            self._idle.setdefault(shape, []).append(actor)

    def _room_for(self, shape: Shape) -> bool:
        cpu, gpu = self.used()
        return cpu + shape[0] <= self.capacity[0] + 1e-9 and gpu + shape[1] <= self.capacity[1] + 1e-9

    def release(self, actor: Any) -> None:
        """Give a healthy actor back after its trial (retired instead while the pool holds more than the cluster)."""
        shape = self._shape.get(actor)
        if shape is None:
            return  # retired meanwhile
        cpu, gpu = self.used()
        if cpu > self.capacity[0] + 1e-9 or gpu > self.capacity[1] + 1e-9:
            self._retire(actor)  # the cluster shrank (a node left): give its room back
            return
        self._idle.setdefault(shape, []).append(actor)

    def replace(self, actor: Any) -> None:
        """Kill an actor that died or hung; a fresh one is made when its room is next needed.

        A dead actor may mean its node left, so the pool follows the cluster's size at once.
        """
        self._retire(actor)
        self.refresh()

    def _retire(self, actor: Any) -> None:
        self._shape.pop(actor, None)
        _kill(actor)

    @property
    def idle(self) -> int:
        """Number of idle actors."""
        return sum(len(lst) for lst in self._idle.values())

    def shutdown(self) -> None:
        """Kill every actor, idle or busy."""
        for actor in list(self._shape):
            self._retire(actor)
        self._idle = {}


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 — it may already be gone
        pass
