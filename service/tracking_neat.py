"""MLflow logging of a strategy-``neat`` job: one run, metrics stepped by generation, the best genome.

Example:
    >>> from service import JobSpec, run                                       # doctest: +SKIP
    >>> result = run(JobSpec.from_dict({"name": "x", "strategy": "neat", "task": "xor"}))  # doctest: +SKIP
    >>> MlflowClient().get_metric_history(result.run_id, "fitness_best")       # doctest: +SKIP
"""

from __future__ import annotations

import collections
import json
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from search._neat_genome import columns_to_dicts, is_columns
from search.base import Status
from service import plots_neat
from service.events import JobResult, ModelBlob, TrialRecord
from service.mlflow_io import ms, short
from service.tracking import PARENT, MlflowReporter

ROUND_METRICS: dict[str, str] = {
    "best": "fitness_best",
    "mean": "fitness_mean",
    "std": "fitness_std",
    "species": "species",
    "mean_nodes": "mean_nodes",
    "mean_connections": "mean_connections",
    "evaluations": "evaluations",
    "failed": "failed_genomes",
}
"""Per-generation statistic (``NeatStrategy.generation_stats()`` key) -> metric name on the parent run."""


class NeatMlflowReporter(MlflowReporter):
    """Logs a ``neat`` job as one MLflow run: metrics stepped by generation, the best genome at the end.

    Why stepped metrics on the parent and no child runs: a NEAT job is one evolution, and
    what a user looks at is its curves — best / mean / std fitness, species count, mean
    nodes and connections — against the generation. As metrics on one run, stepped by
    generation, the MLflow UI draws each of them as one chart at once, and two NEAT jobs
    compare by overlaying their runs. A generation is not a unit users compare or filter
    the way they compare trials (it has no hyperparameters of its own), and a batch of
    genomes is only how a generation was cut across workers; child runs for either would
    bury the job under hundreds of runs with a point each, and a batch's params are its
    genomes — not something to store as params.

    What is logged:

    * at the start: the job's params (as every job), the resolved NEAT settings as
      ``neat.*`` params, ``neat/neat.ini`` (the config neat-python reads).
    * per generation (step = generation): :data:`ROUND_METRICS`.
    * per failed batch: ``failed_batches`` (the running count, stepped by the batch's
      generation) and the tags ``crucible.failed_batches`` and ``crucible.last_failure``
      (batch, generation and reason). Its genomes got the worst fitness (``failed_genomes``).
    * at the end: ``best_fitness``, ``generations``, ``total_evaluations``,
      ``reached_threshold``, ``generations_per_second``, ``n_ok`` / ``n_failed`` /
      ``n_pruned`` (batches), ``wall_seconds``; the tags ``crucible.failed_batches`` (the
      count) and ``crucible.failure_reasons`` (each reason with its count); artifacts
      ``best_genome/`` — ``genome.json`` (the genome dict that ``models.neat_torch``
      evaluates), ``genome.pkl`` (the ``neat.DefaultGenome`` itself when the strategy hands
      it over, else the dict), ``neat.ini``, ``network.png`` — and ``summary/`` —
      ``fitness.png``, ``species.png`` (stacked sizes), ``generations.json``,
      ``batches.json`` (every batch without its genomes).

    A resumed job writes on into its parent run; generations already logged (read back from
    the run's ``fitness_best`` history) are not logged twice.
    """

    def __init__(self, spec: Any, **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self._rounds: dict[int, dict[str, Any]] = {}
        self._champion: Any = None
        self._steps_logged: set[int] = set()
        self._failed: dict[int, str] = {}
        self._retries = 0
        self._settings_logged = False
        self._settings = self._resolve_settings()

    def _resolve_settings(self) -> dict[str, Any]:
        from search._neat_settings import resolve_neat_settings

        options = self.spec.strategy_options if isinstance(self.spec.strategy_options, dict) else {}
        return resolve_neat_settings(options.get("neat") or {}, self.spec.task)

    # ------------------------------------------------------------------ start
    def _open_parent(self) -> None:
        """The parent run as every job's, plus the resolved NEAT settings (params and ``neat.ini``)."""
        super()._open_parent()
        if self._settings_logged:
            return
        from search._neat_settings import neat_config_text

        params = [Param(f"neat.{k}", short(v)) for k, v in _flatten(self._settings).items()]
        self._log_batch(self.run_id, params=params)
        self.client.log_text(self.run_id, neat_config_text(self._settings), "neat/neat.ini")
        self._settings_logged = True

    def _map_children(self) -> None:
        """A resumed job: its run, and the generations it logged already."""
        super()._map_children()
        history = self.client.get_metric_history(self.run_id, ROUND_METRICS["best"])
        self._steps_logged = {int(m.step) for m in history}

    # ------------------------------------------------------------------ hooks
    def on_trial_start(self, record: TrialRecord) -> None:
        """No child run per batch (see the class docstring)."""

    def on_trial_report(self, record: TrialRecord, epoch: int, metrics: dict[str, float]) -> None:
        """Batches do not report per epoch; nothing to log."""

    def on_trial_retry(self, record: TrialRecord, reason: str) -> None:
        """Count a batch whose worker died and that runs again (tag ``crucible.batch_retries``)."""
        self._retries += 1
        tags = {"crucible.batch_retries": str(self._retries), "crucible.last_retry_reason": reason[:5000]}
        self._queue.put(("tags", (PARENT, tags)))

    def on_trial_end(self, record: TrialRecord, best: TrialRecord | None) -> None:
        """A failed batch is counted on the parent with its reason; nothing else is logged per batch."""
        if record.status is Status.FAILED and record.trial_id not in self._failed:
            self._failed[record.trial_id] = record.reason or "unknown"
            generation = int(record.params.get("generation", 0))
            now = ms(record.finished or time.time())
            self._queue.put(("report", (PARENT, generation, {"failed_batches": float(len(self._failed))}, now)))
            why = f"batch {record.trial_id} (generation {generation}): {record.reason}"
            tags = {"crucible.failed_batches": str(len(self._failed)), "crucible.last_failure": why[:5000]}
            self._queue.put(("tags", (PARENT, tags)))
        if self._on_logged is not None:
            self._on_logged([record.trial_id])  # no child run to complete

    def on_round(self, index: int, stats: dict[str, Any]) -> None:
        """A generation's statistics as metrics on the parent, at step = generation."""
        stats = dict(stats)
        champion = stats.pop("champion", None)
        if champion is not None:
            self._champion = champion
        self._rounds[index] = stats
        step = int(stats.get("generation", index))
        if step in self._steps_logged:
            return  # a resumed job: logged before the restart
        self._steps_logged.add(step)
        values = {name: float(stats[key]) for key, name in ROUND_METRICS.items() if _number(stats.get(key))}
        self._queue.put(("report", (PARENT, step, values, ms(time.time()))))

    # ------------------------------------------------------------------ end
    def on_job_end(self, result: JobResult, best_model: ModelBlob | None) -> None:
        """Drain the writer, then log the summary, the plots and the best genome on the parent."""
        del best_model  # genomes are no torch modules; the genome is logged instead
        self._stopping.set()
        self._queue.put(("stop", None))
        stats = [self._rounds[i] for i in sorted(self._rounds)]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / "summary").mkdir()
            self._summary_artifacts(result, stats, out / "summary")
            genome = self._best_genome(result)
            if genome is not None:
                (out / "best_genome").mkdir()
                self._genome_artifacts(genome, out / "best_genome")
            self.close()
            self._retrying(lambda: self._log_neat_summary(result, stats, genome))
            self._retrying(lambda: self.client.log_artifacts(self.run_id, str(out)))
        status = "FINISHED" if result.best is not None or not result.trials else "FAILED"
        self._retrying(lambda: self.client.set_terminated(self.run_id, status))

    def _summary_artifacts(self, result: JobResult, stats: list[dict[str, Any]], out: Path) -> None:
        if stats:
            plots_neat.fitness(stats, out / "fitness.png", self._settings.get("fitness_threshold"))
            plots_neat.species(stats, out / "species.png")
        (out / "generations.json").write_text(json.dumps(stats, indent=1, default=str))
        batches = [
            {**{k: v for k, v in t.to_dict().items() if k not in ("params", "config")},
             "generation": t.params.get("generation"), "genome_keys": _genome_keys(t),
             "metrics": {k: v for k, v in t.metrics.items() if not k.startswith("fitness.")}}
            for t in result.trials
        ]  # fmt: skip
        (out / "batches.json").write_text(json.dumps(batches, indent=1, default=str))

    def _best_genome(self, result: JobResult) -> dict[str, Any] | None:
        """The best genome as a dict: the strategy's champion, else the best batch's fittest genome."""
        if self._champion is not None:
            from search._neat_genome import genome_to_dict
            from search.neat import build_neat_config

            return genome_to_dict(self._champion, build_neat_config(self._settings))
        return best_genome_of(result.best)

    def _genome_artifacts(self, genome: dict[str, Any], out: Path) -> None:
        from search._neat_settings import neat_config_text

        (out / "genome.json").write_text(json.dumps(genome, indent=1))
        with open(out / "genome.pkl", "wb") as fh:
            pickle.dump(self._champion if self._champion is not None else genome, fh, protocol=4)
        (out / "neat.ini").write_text(neat_config_text(self._settings))
        plots_neat.network(genome, out / "network.png")

    def _log_neat_summary(self, result: JobResult, stats: list[dict[str, Any]], genome: dict | None) -> None:
        result.run_id = self.run_id
        result.tracking_uri = self.spec.tracking.uri
        now = ms(time.time())
        values: dict[str, float] = {f"n_{s.value}": float(result.count(s)) for s in Status}
        values.update(wall_seconds=result.wall_seconds, generations=float(len(stats)))
        if stats:
            values["total_evaluations"] = float(stats[-1]["evaluations"])
            values["generations_per_second"] = len(stats) / max(result.wall_seconds, 1e-9)
        tags = [RunTag("crucible.stop_reason", result.stop_reason)]
        best = max((float(s["best"]) for s in stats), default=None)
        if result.best is not None:
            best = result.best.value if best is None else max(best, result.best.value or best)
            tags.append(RunTag("crucible.best_trial", str(result.best.trial_id)))
        if best is not None:
            values["best_fitness"] = best
            threshold = self._settings.get("fitness_threshold")
            if threshold is not None:
                values["reached_threshold"] = float(best >= threshold)
        if genome is not None:
            tags.append(RunTag("crucible.best_genome_key", str(genome["key"])))
        reasons = collections.Counter(t.reason or "unknown" for t in result.trials if t.status is Status.FAILED)
        tags.append(RunTag("crucible.failed_batches", str(result.count(Status.FAILED))))
        if reasons:
            text = "; ".join(f"{n} x {why}" for why, n in reasons.most_common())
            tags.append(RunTag("crucible.failure_reasons", text[:5000]))
        metrics = [Metric(k, v, now, 0) for k, v in values.items()]
        self._log_batch(self.run_id, metrics=metrics, tags=tags)


def best_genome_of(record: TrialRecord | None) -> dict[str, Any] | None:
    """The fittest genome dict of a batch trial (``fitness.<key>`` in its metrics), or ``None``."""
    if record is None:
        return None
    genomes = record.config.get("genomes", [])
    if is_columns(genomes):
        genomes = columns_to_dicts(genomes)
    scored = [(record.metrics.get(f"fitness.{g['key']}"), g) for g in genomes]
    scored = [(f, g) for f, g in scored if _number(f)]
    return max(scored, key=lambda fg: fg[0])[1] if scored else None


def _genome_keys(record: TrialRecord) -> list[int]:
    """The genomes a batch evaluated (those with a fitness)."""
    return [int(k.split(".", 1)[1]) for k in record.metrics if k.startswith("fitness.")]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
