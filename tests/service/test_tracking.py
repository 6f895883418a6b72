"""MLflow tracking through the real parts: local Ray, real training, a sqlite MLflow store."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from models.data import load_task
from search.base import Status
from service.runner import run
from service.spec import JobSpec


@pytest.fixture
def wine_job(ray_local, sqlite_uri):
    spec = JobSpec.from_dict(
        {
            "name": "wine-track",
            "strategy": "bayes",
            "task": "wine",
            "model": "mlp",
            "objective": {"metric": "val_accuracy", "mode": "max"},
            "budget": {"trials": 5, "parallel": 2},
            "space": {
                "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                "units": {"type": "int", "low": 8, "high": 64, "log": True},
                "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
            },
            "fixed": {"epochs": 6, "hidden_layers": 1},
            "tracking": {"uri": sqlite_uri, "experiment": "wine-exp"},
            "seed": 1,
        }
    )
    return spec, run(spec, progress=False)


def test_parent_and_child_runs_read_back(wine_job):
    spec, result = wine_job
    client = MlflowClient(tracking_uri=spec.tracking.uri)
    exp = client.get_experiment_by_name("wine-exp")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("crucible.kind") == "job"]
    children = [r for r in runs if r.data.tags.get("crucible.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 5
    parent = parents[0]
    assert parent.info.run_id == result.run_id and parent.info.status == "FINISHED"
    assert parent.data.params["strategy"] == "bayes" and parent.data.params["budget.trials"] == "5"
    best = result.best
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best.metrics["val_accuracy"])
    assert parent.data.params["best.activation"] == best.params["activation"]
    assert parent.data.metrics["n_ok"] == 5
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["crucible.status"] == "ok" and child.info.status == "FINISHED"
        assert child.data.tags["crucible.device"] == "cpu" and child.data.tags["crucible.node"]
        assert set(child.data.params) == {"lr", "units", "activation"}
        # per-epoch metrics with their step
        history = client.get_metric_history(child.info.run_id, "val_loss")
        steps = sorted(m.step for m in history if m.step > 0)
        assert steps == [1, 2, 3, 4, 5, 6]
        assert "test_accuracy" in child.data.metrics


def test_artifacts_plots_spec_and_model_load_back(wine_job, tmp_path):
    spec, result = wine_job
    client = MlflowClient(tracking_uri=spec.tracking.uri)
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"spec.yaml", "summary", "model"} <= names
    summary = {a.path for a in client.list_artifacts(result.run_id, "summary")}
    assert {"summary/convergence.png", "summary/objective_vs_params.png", "summary/trials.json"} <= summary
    png = client.download_artifacts(result.run_id, "summary/convergence.png", str(tmp_path))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    spec_back = JobSpec.from_yaml(client.download_artifacts(result.run_id, "spec.yaml", str(tmp_path)))
    assert spec_back == spec
    # the best model loads back with mlflow.pytorch and reproduces the best test accuracy
    mlflow.set_tracking_uri(spec.tracking.uri)
    model = mlflow.pytorch.load_model(f"runs:/{result.run_id}/model")
    import torch

    task = load_task("wine", seed=spec.seed)
    with torch.no_grad():
        pred = model(torch.tensor(np.array(task.X_test))).argmax(1).numpy()
    acc = float(np.mean(pred == task.y_test))
    assert acc == pytest.approx(result.best.metrics["test_accuracy"], abs=1e-6)


def test_failed_trial_is_tagged_with_reason(ray_local, sqlite_uri):
    spec = JobSpec.from_dict(
        {
            "name": "fail-track",
            "strategy": "random",
            "objective": {"metric": "loss", "mode": "min", "function": "trial_fns:faulty"},
            "budget": {"trials": 6, "parallel": 2},
            "space": {"x": {"type": "float", "low": 0.0, "high": 0.2}},  # always raises
            "tracking": {"uri": sqlite_uri},
        }
    )
    result = run(spec, progress=False)
    assert result.count(Status.FAILED) == 6
    client = MlflowClient(tracking_uri=sqlite_uri)
    runs = client.search_runs([client.get_experiment_by_name("fail-track").experiment_id])
    children = [r for r in runs if r.data.tags.get("crucible.kind") == "trial"]
    assert len(children) == 6
    for child in children:
        assert child.info.status == "FAILED"
        assert child.data.tags["crucible.status"] == "failed"
        assert "ValueError: bad x=" in child.data.tags["crucible.reason"]
    parent = [r for r in runs if r.data.tags.get("crucible.kind") == "job"][0]
    assert parent.info.status == "FAILED" and parent.data.metrics["n_failed"] == 6
