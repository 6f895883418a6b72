"""Meta-search: a 'bayes' job whose trials are whole NEAT runs (models.neat_evolve:evolve) on local Ray."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from service.runner import run
from service.spec import JobSpec


def test_bayes_tunes_neat_settings_with_whole_neat_runs(ray_local, sqlite_uri):
    spec = JobSpec.from_dict({
        "name": "neat-meta", "strategy": "bayes",
        "objective": {"metric": "score", "mode": "max", "function": "models.neat_evolve:evolve"},
        "budget": {"trials": 3, "parallel": 2},
        "space": {"pop_size": {"type": "int", "low": 40, "high": 120},
                  "compatibility_threshold": {"type": "float", "low": 2.0, "high": 4.0},
                  "conn_add_prob": {"type": "float", "low": 0.2, "high": 0.8}},
        "fixed": {"task": "xor", "generations": 25, "seed": 1},
        "tracking": {"uri": sqlite_uri}, "seed": 4,
    })  # fmt: skip
    result = run(spec, progress=False)
    assert [t.status.value for t in result.trials] == ["ok"] * 3
    for t in result.trials:
        assert t.config["pop_size"] == t.params["pop_size"] and t.config["task"] == "xor"
        generations = int(t.metrics["generations"])
        assert 1 <= generations <= 25
        assert [epoch for epoch, _ in t.history] == list(range(1, generations + 1))  # one per generation
        assert t.metrics["evaluations"] == generations * t.params["pop_size"]
        assert t.history[-1][1]["score"] == t.metrics["score"] == t.value
        assert t.metrics["solved"] == float(t.metrics["best_fitness"] >= 3.9)
    assert result.best.value == max(t.value for t in result.trials)
    client = MlflowClient(tracking_uri=sqlite_uri)
    parent = client.get_run(result.run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")  # fmt: skip
    assert len(children) == 3  # a meta-search's trials are compared: one child run each
    for child in children:
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "best_fitness"))
        assert steps == list(range(len(steps)))  # the final value at step 0, generation g at step g + 1
        assert {"pop_size", "compatibility_threshold", "conn_add_prob"} <= set(child.data.params)
    assert parent.data.params["best.pop_size"] == str(result.best.params["pop_size"])
