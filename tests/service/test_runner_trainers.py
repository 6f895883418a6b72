"""The annealing trainers as a trial type of a ``bayes`` job, end to end (real Ray, MLflow, training)."""

from __future__ import annotations

from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from search.base import Status
from service.runner import run
from service.spec import JobSpec

EXAMPLE = Path(__file__).parents[2] / "examples" / "wine-anneal-trainers.yaml"


def test_bayes_job_searches_the_annealing_trainers_and_their_settings(ray_local, sqlite_uri):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["budget"] = {"trials": 6, "parallel": 2}
    data["fixed"].update(epochs=2, anneal_steps=60)
    data["tracking"] = {"uri": sqlite_uri}
    spec = JobSpec.from_dict(data)

    result = run(spec, progress=False)

    assert len(result.trials) == 6
    for trial in result.trials:
        assert trial.status is Status.OK, trial.reason
        assert trial.config["trainer"] in ("boltzmann", "cauchy", "hybrid")
        assert len(trial.history) == 2  # one report per "epoch" of anneal_steps steps
        assert 0.0 <= trial.metrics["val_accuracy"] <= 1.0
    assert len({t.config["trainer"] for t in result.trials}) >= 2  # the trainer itself is searched
    assert result.best.metrics["val_accuracy"] >= 0.8  # wine: 3 classes, chance is about 0.4

    client = MlflowClient(sqlite_uri)
    parent = client.search_runs([client.get_experiment_by_name(spec.experiment_name).experiment_id],
                                filter_string="tags.`crucible.kind` = 'job'")[0]  # fmt: skip
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 6
    for child in children:
        assert child.data.params["trainer"] in ("boltzmann", "cauchy", "hybrid")
        assert float(child.data.params["T0"]) > 0
        steps = {m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")}
        assert {1, 2} <= steps  # per-epoch, stepped (the final value is logged too)
