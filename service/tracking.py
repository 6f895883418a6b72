"""MLflow logging of a job: one parent run, one nested child run per trial.

All MLflow calls go through :class:`MlflowClient` with explicit run ids (no fluent
"active run"), and per-trial logging runs on a background writer thread that batches
what has queued up, so tracking never stalls dispatch. At the end of the job the parent
run gets the best metrics and params, a convergence plot, an objective-against-parameter
plot, a table of all trials, and the best trial's model (loadable with
``mlflow.pytorch.load_model(f"runs:/{run_id}/model")``).

The writer survives a tracking server that is away for a while: what it could not write
stays queued, in order, and is retried with backoff until the server answers again (up to
``max_outage_seconds``). Child runs are made at most once per trial: a resumed job finds the
child runs it already has by their ``crucible.trial_id`` tag and writes on into them.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from search.base import Status
from service import plots
from service.events import JobResult, ModelBlob, Reporter, TrialRecord
from service.mlflow_io import (
    GATE,
    MAX_METRICS,
    MAX_PARAMS,
    MAX_TAGS,
    Op,
    brief,
    default_artifact_location,
    enable_sqlite_wal,
    flat_numbers,
    ms,
    plan,
    short,
    ui_command,
)

__all__ = ["MlflowReporter", "default_artifact_location", "enable_sqlite_wal", "reporter_for", "ui_command"]


PARENT = -1  # the child key that stands for the parent run

_FAMILY_REPORTERS = {
    "anneal": ("service.tracking_anneal", "AnnealMlflowReporter"),
    "neat": ("service.tracking_neat", "NeatMlflowReporter"),
}


def reporter_for(spec: Any, **kwargs: Any) -> MlflowReporter:
    """The MLflow reporter that reads best for the job's strategy (``kwargs`` go to its constructor)."""
    where = _FAMILY_REPORTERS.get(spec.strategy)
    if where is None:
        return MlflowReporter(spec, **kwargs)
    import importlib

    return getattr(importlib.import_module(where[0]), where[1])(spec, **kwargs)


class MlflowReporter(Reporter):
    """Logs a job to MLflow from a background writer thread.

    Child runs are keyed by an integer: the trial id here; subclasses key them otherwise
    (one per annealing replica) or make none (NEAT logs per-generation metrics on the
    parent). Round statistics (``on_round``) become stepped metrics on the parent.

    Args:
        spec: The job spec (``service.spec.JobSpec``).
        flush_interval: Seconds the writer waits to batch queued events.
        run_id: An existing parent run to write on into (a resumed job).
        on_logged: Called from the writer with the ids of trials whose child runs are complete.
        max_outage_seconds: How long the writer keeps retrying a failing tracking store
            before it gives up (the error is then raised by :meth:`close`).
        patience_seconds: How long opening and closing the parent run retry a failing store
            (0: fail at once — a mistyped tracking URI should fail an embedded job fast).
    """

    def __init__(
        self,
        spec: Any,
        flush_interval: float = 0.2,
        run_id: str | None = None,
        on_logged: Callable[[list[int]], None] | None = None,
        max_outage_seconds: float = 600.0,
        patience_seconds: float = 0.0,
    ) -> None:
        self.spec = spec
        self.client: MlflowClient | None = None  # opened at job start: a job that fails to start writes nothing
        self.run_id: str | None = run_id
        self.experiment_id: str | None = None
        self.outages = 0  # times the writer found the store unreachable and waited
        self._flush_interval = flush_interval
        self._on_logged = on_logged
        self._max_outage = max_outage_seconds
        self._patience = patience_seconds
        self._resuming = run_id is not None
        self._parent_logged = False
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._child: dict[int, str] = {}
        self._writer: threading.Thread | None = None
        self._stopping = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ hooks
    def on_job_start(self, spec: Any) -> None:
        """Open the parent run (synchronously: its id is needed) and start the writer."""
        if spec.tracking.uri.startswith("sqlite:"):
            enable_sqlite_wal()
        self.client = MlflowClient(tracking_uri=spec.tracking.uri)
        self._retrying(self._map_children if self._resuming else self._open_parent)
        self._start_writer()

    def _open_parent(self) -> None:
        """Make the parent run and log the job's params and spec (each step done once, so retry-safe)."""
        spec = self.spec
        if self.run_id is None:
            self.experiment_id = self._experiment(spec.experiment_name, spec.tracking.uri)
            run = self.client.create_run(
                self.experiment_id,
                run_name=spec.name,
                tags={"crucible.job": spec.name, "crucible.strategy": spec.strategy, "crucible.kind": "job"},
            )
            self.run_id = run.info.run_id
            self._child[PARENT] = self.run_id
        if self._parent_logged:
            return
        params = {
            "strategy": spec.strategy,
            "task": spec.task,
            "model": spec.model,
            "objective.metric": spec.objective.metric,
            "objective.mode": spec.objective.mode,
            "budget.trials": spec.budget.trials,
            "budget.parallel": spec.budget.parallel,
            "budget.max_wall_seconds": spec.budget.max_wall_seconds,
            "budget.target": spec.budget.target,
            "pruning": spec.pruning.kind,
            "resources.cpu": spec.resources.cpu,
            "resources.gpu": spec.resources.gpu,
            "seed": spec.seed,
            **{f"fixed.{k}": v for k, v in spec.fixed.items()},
        }
        self._log_batch(self.run_id, params=[Param(k, short(v)) for k, v in params.items()])
        self.client.log_text(self.run_id, yaml.safe_dump(spec.to_dict(), sort_keys=False), "spec.yaml")
        self._parent_logged = True

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` under the process-wide gate; retry a failing store for up to ``patience_seconds``."""
        start, delay = time.time(), 0.5
        while True:
            try:
                with GATE:
                    return fn()
            except Exception:
                if time.time() - start + delay > self._patience:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _experiment(self, name: str, uri: str) -> str:
        """The experiment's id, made if needed (another job may make it at the same moment)."""
        from mlflow.exceptions import MlflowException

        for _ in range(3):
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            try:
                return self.client.create_experiment(name, artifact_location=default_artifact_location(uri))
            except MlflowException as err:
                if "already exists" not in str(err).lower() and "unique" not in str(err).lower():
                    raise
        raise RuntimeError(f"MLflow experiment {name!r} could neither be found nor made")

    def _map_children(self) -> None:
        """Write on into an existing parent run (a resumed job); map its child runs by trial id."""
        assert self.client is not None and self.run_id is not None
        self.experiment_id = self.client.get_run(self.run_id).info.experiment_id
        self._child[PARENT] = self.run_id
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.run_id}'",
                max_results=1000,
                page_token=token,
            )
            for run in page:
                key = run.data.tags.get(self.CHILD_TAG)
                if key is not None:
                    self._child[int(key)] = run.info.run_id
            token = page.token
            if not token:
                break
        self.client.update_run(self.run_id, status="RUNNING")

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="crucible-mlflow-writer", daemon=True)
        self._writer.start()

    CHILD_TAG = "crucible.trial_id"  # the tag that names a child run's key (found again on resume)

    def _child_identity(self, key: int) -> tuple[str, dict[str, str]]:
        """Run name and tags of the child run for ``key``."""
        return f"trial-{key:04d}", {"crucible.kind": "trial"}

    def on_trial_start(self, record: TrialRecord) -> None:
        """Queue the child run's creation."""
        self._queue.put(("start", (record.trial_id, dict(record.params), ms(record.started))))

    def on_round(self, index: int, stats: dict[str, Any]) -> None:
        """Queue a round's numeric statistics as metrics on the parent, at step ``index``."""
        self._queue.put(("report", (PARENT, index, flat_numbers(stats), ms(time.time()))))

    def on_trial_retry(self, record: TrialRecord, reason: str) -> None:
        """Note the retry on the child run (the same run goes on)."""
        tags = {"crucible.attempts": str(record.attempts), "crucible.retry_reason": reason[:5000]}
        self._queue.put(("tags", (record.trial_id, tags)))

    def on_trial_report(self, record: TrialRecord, epoch: int, metrics: dict[str, float]) -> None:
        """Queue per-epoch metrics (logged with their step)."""
        self._queue.put(("report", (record.trial_id, epoch, dict(metrics), ms(time.time()))))

    def on_trial_end(self, record: TrialRecord, best: TrialRecord | None) -> None:
        """Queue final metrics, status tags and the run's end."""
        self._queue.put(
            (
                "end",
                (
                    record.trial_id,
                    record.status,
                    dict(record.metrics),
                    record.value,
                    record.reason,
                    record.node,
                    record.device,
                    ms(record.finished or time.time()),
                ),
            )
        )

    def on_job_end(self, result: JobResult, best_model: ModelBlob | None) -> None:
        """Drain the writer, then log summary, plots, trials table and best model on the parent."""
        self._last_events(result)
        self._stopping.set()
        self._queue.put(("stop", None))  # the writer drains while the plots are drawn here
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            self._summary_files(result, out)
            (out / "trials.json").write_text(json.dumps([t.to_dict() for t in result.trials], indent=1, default=str))
            self.close()
            self._retrying(lambda: self._log_summary(result))
            self._retrying(lambda: self.client.log_artifacts(self.run_id, str(out), "summary"))
            if best_model is not None:
                self._save_model(best_model, out / "model")
                self._retrying(lambda: self.client.log_artifacts(self.run_id, str(out / "model"), "model"))
        status = "FINISHED" if result.best is not None or not result.trials else "FAILED"
        self._retrying(lambda: self.client.set_terminated(self.run_id, status))

    def _last_events(self, result: JobResult) -> None:
        """Events to queue before the writer's last flush (subclasses: close their child runs)."""

    def _summary_files(self, result: JobResult, out: Path) -> None:
        """Plots for the parent's ``summary/``: convergence, and objective against each parameter."""
        metric = self.spec.objective.metric
        plots.convergence(result.trials, metric, result.mode, out / "convergence.png")
        if self.spec.space:
            plots.objective_vs_params(result.trials, self.spec.space, metric, out / "objective_vs_params.png")

    def _log_summary(self, result: JobResult) -> None:
        result.run_id = self.run_id
        result.tracking_uri = self.spec.tracking.uri
        metrics = [Metric(f"n_{s.value}", result.count(s), ms(time.time()), 0) for s in Status]
        metrics.append(Metric("wall_seconds", result.wall_seconds, ms(time.time()), 0))
        params: list[Param] = []
        tags = [RunTag("crucible.stop_reason", result.stop_reason)]
        if result.best is not None:
            best = result.best
            metrics += [Metric(f"best_{k}", v, ms(time.time()), 0) for k, v in best.metrics.items()]
            params += [Param(f"best.{k}", short(v)) for k, v in best.params.items()]
            tags.append(RunTag("crucible.best_trial", str(best.trial_id)))
        self._log_batch(self.run_id, metrics=metrics, params=params, tags=tags)

    # ------------------------------------------------------------------ writer
    def close(self) -> None:
        """Flush everything queued and stop the writer thread."""
        if self._writer is not None:
            if not self._stopping.is_set():
                self._stopping.set()
                self._queue.put(("stop", None))
            self._writer.join()
            self._writer = None
        if self._error is not None:
            raise RuntimeError(f"MLflow logging failed: {self._error}") from self._error

    def _write_loop(self) -> None:
        stop = warmed = False
        backlog: list[Op] = []
        failing_since: float | None = None
        delay = 0.5
        while not (stop and not backlog):
            events: list[tuple[str, Any]] = []
            if not backlog:
                events.append(self._queue.get())
                self._stopping.wait(self._flush_interval)  # let a batch accumulate, unless closing
            while True:
                try:
                    events.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = stop or any(kind == "stop" for kind, _ in events)
            backlog += plan(events)
            try:
                with GATE:
                    self._apply(backlog)
            except Exception as err:  # noqa: BLE001 — store away or failing: retry, then give up
                now = time.time()
                if failing_since is None:
                    failing_since = now
                    self.outages += 1
                    print(
                        f"crucible: MLflow store not answering ({brief(err)}); buffering, will retry", file=sys.stderr
                    )
                if now - failing_since > self._max_outage:
                    self._error = err
                    return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if failing_since is not None:
                print("crucible: MLflow store answers again; buffered logs written", file=sys.stderr)
            failing_since, delay = None, 0.5
            if not warmed and not stop and any(kind == "end" for kind, _ in events):
                # Import matplotlib while trials run (about a second), once workers are up,
                # so that neither the job's start nor its end waits for it.
                plots.warm_up()
                warmed = True

    def _apply(self, ops: list[Op]) -> None:
        """Apply ops in order, removing each once it succeeded (a failure leaves the rest queued)."""
        logged: list[int] = []
        try:
            while ops:
                op = ops[0]
                if op.kind == "create":
                    self._create_child(op)
                elif op.kind == "batch":
                    self._log_batch(self._child[op.trial_id], op.metrics, op.params, op.tags)
                    op.metrics, op.params, op.tags = [], [], []
                elif op.kind == "logged":
                    logged.append(op.trial_id)
                else:
                    self.client.set_terminated(self._child[op.trial_id], op.status, end_time=op.ts)
                    if op.trial_id != PARENT:
                        logged.append(op.trial_id)
                ops.pop(0)
        finally:
            if logged and self._on_logged is not None:
                self._on_logged(logged)

    def _create_child(self, op: Op) -> None:
        if op.trial_id in self._child:
            return  # a retried or resumed trial writes on into its run
        if op.attempted:
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.run_id}' and tags.{self.CHILD_TAG} = '{op.trial_id}'",
            )
            if found:  # the failed call had made the run after all
                self._child[op.trial_id] = found[0].info.run_id
                return
        op.attempted = True
        name, tags = self._child_identity(op.trial_id)
        run = self.client.create_run(
            self.experiment_id,
            start_time=op.ts,
            run_name=name,
            tags={"mlflow.parentRunId": self.run_id, self.CHILD_TAG: str(op.trial_id), **tags},
        )
        self._child[op.trial_id] = run.info.run_id

    def _log_batch(
        self, run_id: str, metrics: list[Metric] = (), params: list[Param] = (), tags: list[RunTag] = ()
    ) -> None:
        metrics, params, tags = list(metrics), list(params), list(tags)
        while metrics or params or tags:
            self.client.log_batch(
                run_id, metrics=metrics[:MAX_METRICS], params=params[:MAX_PARAMS], tags=tags[:MAX_TAGS]
            )
            metrics, params, tags = metrics[MAX_METRICS:], params[MAX_PARAMS:], tags[MAX_TAGS:]

    def _save_model(self, blob: ModelBlob, where: Path) -> None:
        """Save the model in MLflow's pytorch flavour (pickle format, with a signature) to ``where``."""
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        model = torch.load(io.BytesIO(blob.data), weights_only=False)
        signature = None
        if blob.input_example is not None:
            with torch.no_grad():
                out = model(torch.tensor(np.array(blob.input_example))).numpy()
            signature = infer_signature(blob.input_example, out)
        # pickle, not pt2: a pt2 export fixes the batch size to the example's; the model is our own
        # plain torch.nn, so MLflow's warning about unpickling untrusted files does not apply here.
        mlflow_logger = logging.getLogger("mlflow.pytorch")
        level = mlflow_logger.level
        mlflow_logger.setLevel(logging.ERROR)
        try:
            mlflow.pytorch.save_model(
                model,
                str(where),
                serialization_format="pickle",
                signature=signature,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )
        finally:
            mlflow_logger.setLevel(level)
