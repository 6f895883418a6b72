"""The Ray actor pool that runs trials.

One :class:`TrialActor` per parallel slot, reused across trials. A trial runs in a thread
inside the actor while the actor method — a Ray streaming generator — yields its
per-epoch reports as they happen, then one final message. The actor is threaded
(``max_concurrency=2``) so that :meth:`TrialActor.stop` can reach a running trial
between epochs. Large shared inputs (the task's data set) are put in the object store
once and handed to every actor.

Messages yielded by ``TrialActor.run`` are plain dicts:

* ``{"type": "report", "trial_id", "epoch", "metrics"}``
* ``{"type": "final", "trial_id", "status", "metrics", "reason", "model", "node", "device"}``
"""

from __future__ import annotations

import importlib
import io
import queue
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import ray

from service.errors import TrialFailed, TrialStopped

TrialFn = Callable[..., dict[str, float]]


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

    def __init__(self, function: str | TrialFn | None, task: Any, cpus: float) -> None:
        self._function = function
        self._task = task
        self._trials: dict[int, _Trial] = {}
        self._early_stops: set[int] = set()  # stop() may arrive before run() has started
        self._lock = threading.Lock()
        self._node = socket.gethostname()
        self._device = pick_device()
        if function is None:
            import torch

            torch.set_num_threads(max(1, int(cpus)))

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

    def run(self, trial_id: int, config: dict[str, Any], seed: int) -> Iterator[dict[str, Any]]:
        """Run one trial; yield its reports as they happen, then one final message."""
        trial = _Trial()
        with self._lock:
            self._trials[trial_id] = trial
            if trial_id in self._early_stops:
                self._early_stops.discard(trial_id)
                trial.stop.set()
        thread = threading.Thread(target=self._execute, args=(trial, config, seed), daemon=True)
        thread.start()
        try:
            while True:
                kind, payload = trial.messages.get()
                if kind == "report":
                    yield {"type": "report", "trial_id": trial_id, **payload}
                    continue
                yield {"type": "final", "trial_id": trial_id, "node": self._node, "device": self._device, **payload}
                return
        finally:
            thread.join(timeout=5)
            self._trials.pop(trial_id, None)

    def _execute(self, trial: _Trial, config: dict[str, Any], seed: int) -> None:
        final: dict[str, Any] = {"status": "ok", "metrics": {}, "reason": None, "model": None}
        try:
            if self._function is None:
                final.update(self._run_builtin(trial, config, seed))
            else:
                fn = resolve_function(self._function)
                out = fn(dict(config), trial.report)
                final["metrics"] = _clean_metrics(out)
        except TrialStopped as err:
            final.update(status="pruned", reason=str(err))
        except Exception as err:  # noqa: BLE001 — any trial error fails that trial only
            final.update(status="failed", reason=_describe(err))
        trial.messages.put(("final", final))

    def _run_builtin(self, trial: _Trial, config: dict[str, Any], seed: int) -> dict[str, Any]:
        import torch

        from models.train import train_mlp

        outcome = train_mlp(
            config,
            self._task,
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


class WorkerPool:
    """A fixed number of reused :class:`TrialActor` slots; dead actors are replaced.

    Args:
        size: Number of actors (the job's ``budget.parallel``).
        cpus: CPUs per actor (fractions allowed).
        gpus: GPUs per actor (fractions allowed).
        function: Custom trial function, or ``None`` for the built-in trainer.
        task_ref: Object-store reference to the task's data set (or ``None``).
    """

    def __init__(self, size: int, cpus: float, gpus: float, function: str | TrialFn | None, task_ref: Any) -> None:
        self._options = {"num_cpus": cpus, "num_gpus": gpus}
        self._args = (function, task_ref, cpus)
        self._free = [self._new() for _ in range(size)]

    def _new(self) -> Any:
        return TrialActor.options(**self._options).remote(*self._args)

    @property
    def free(self) -> int:
        """Number of idle actors."""
        return len(self._free)

    def acquire(self) -> Any:
        """Take an idle actor."""
        return self._free.pop()

    def release(self, actor: Any) -> None:
        """Give a healthy actor back after its trial."""
        self._free.append(actor)

    def replace(self, actor: Any) -> None:
        """Kill an actor that died or hung, and add a fresh one in its place."""
        _kill(actor)
        self._free.append(self._new())

    def shutdown(self, actors: list[Any]) -> None:
        """Kill all idle actors and the given busy ones."""
        for actor in self._free + actors:
            _kill(actor)
        self._free = []


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 — it may already be gone
        pass
