"""MLflow logging of 'neat' jobs through the real parts: local Ray workers, a sqlite MLflow store."""

from __future__ import annotations

import json
import pickle

import neat
import pytest
from mlflow.tracking import MlflowClient

from models.neat_tasks import XOR_INPUTS, XOR_OUTPUTS, evaluate_batch
from service.events import JobResult
from service.runner import run
from service.spec import JobSpec
from service.tracking_neat import ROUND_METRICS

PNG = b"\x89PNG\r\n\x1a\n"


def neat_job(uri, name, task="xor", trials=60, fixed=None, options=None, seed=1):
    return JobSpec.from_dict({
        "name": name, "strategy": "neat", "task": task, "budget": {"trials": trials, "parallel": 2},
        "fixed": fixed or {}, "strategy_options": options or {}, "tracking": {"uri": uri}, "seed": seed,
    })  # fmt: skip


def read_back(uri, result, tmp_path):
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(result.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    histories = {name: client.get_metric_history(result.run_id, name) for name in ROUND_METRICS.values()}
    files = tmp_path / "artifacts"
    files.mkdir()
    client.download_artifacts(result.run_id, "", str(files))
    return parent, children, histories, files


def test_xor_job_logs_generations_on_one_run_and_the_best_genome(ray_local, sqlite_uri, tmp_path):
    spec = neat_job(sqlite_uri, "xor-track")
    result = run(spec, progress=False)
    parent, children, histories, files = read_back(sqlite_uri, result, tmp_path)

    assert children == [], "no child run per batch"
    assert parent.info.status == "FINISHED"
    generations = int(parent.data.metrics["generations"])
    assert len(result.trials) == 2 * generations  # two batches per generation
    kept = [t.trial_id for t in result.trials if "genomes" in t.config]
    assert kept == [result.best.trial_id], "finished batches drop their genomes, all but the best batch"
    assert all(t.config == t.params and "generation" in t.params for t in result.trials if t is not result.best)
    for name, history in histories.items():  # one step per generation, for every statistic
        assert sorted(m.step for m in history) == list(range(generations)), name
    best_by_gen = [m.value for m in sorted(histories["fitness_best"], key=lambda m: m.step)]
    assert parent.data.metrics["best_fitness"] == pytest.approx(max(best_by_gen)) and max(best_by_gen) >= 3.9
    assert parent.data.metrics["reached_threshold"] == 1.0
    assert result.stop_reason == "solved"  # the strategy's own reason, not the budget
    assert histories["evaluations"][-1].value == 150 * generations
    assert parent.data.metrics["n_ok"] == len(result.trials) and parent.data.metrics["n_failed"] == 0
    assert parent.data.tags["crucible.failed_batches"] == "0"
    assert parent.data.params["neat.pop_size"] == "150"
    assert parent.data.params["neat.species.compatibility_threshold"] == "3.0"
    assert not any("genomes" in k or k.startswith("best.") for k in parent.data.params), "no genome lists as params"

    genome = json.loads((files / "best_genome" / "genome.json").read_text())
    assert genome["key"] == int(parent.data.tags["crucible.best_genome_key"]) and genome["inputs"] == [-1, -2]
    fitness = evaluate_batch({"task": "xor", "genomes": [genome]})[f"fitness.{genome['key']}"]
    assert fitness == pytest.approx(parent.data.metrics["best_fitness"], abs=1e-5)
    with open(files / "best_genome" / "genome.pkl", "rb") as fh:
        champion = pickle.load(fh)  # noqa: S301 - our own artifact
    assert isinstance(champion, neat.DefaultGenome) and champion.key == genome["key"]
    config = neat.Config(neat.DefaultGenome, neat.DefaultReproduction, neat.DefaultSpeciesSet,
                         neat.DefaultStagnation, str(files / "best_genome" / "neat.ini"))  # fmt: skip
    net = neat.nn.FeedForwardNetwork.create(champion, config)
    sse = sum((net.activate(x)[0] - y) ** 2 for x, y in zip(XOR_INPUTS, XOR_OUTPUTS, strict=True))
    assert 4.0 - sse == pytest.approx(fitness, abs=1e-4)  # neat-python's own network scores what we logged
    for png in ("best_genome/network.png", "summary/fitness.png", "summary/species.png"):
        data = (files / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, png
    stats = json.loads((files / "summary" / "generations.json").read_text())
    assert [s["generation"] for s in stats] == list(range(generations))
    assert all(sum(s["species_sizes"]) > 0 and len(s["species_ids"]) == s["species"] for s in stats)
    batches = json.loads((files / "summary" / "batches.json").read_text())
    assert len(batches) == len(result.trials) and all("genomes" not in b["metrics"] for b in batches)
    assert (files / "neat" / "neat.ini").read_text() == (files / "best_genome" / "neat.ini").read_text()
    assert [r["generation"] for r in result.rounds] == list(range(generations))  # JobResult.rounds
    assert [r["best"] for r in result.rounds] == best_by_gen and "champion" not in result.rounds[-1]


def test_cli_summary_of_a_neat_job_speaks_of_generations(capsys):
    from service.cli import _print_summary

    rounds = [{"generation": g, "best": 2.0 + g, "best_key": 10 + g, "species": 3, "mean_nodes": 2.5,
               "mean_connections": 4.0} for g in range(3)]  # fmt: skip
    spec = neat_job("sqlite:///x.db", "summary")
    _print_summary(spec, JobResult("summary", "fitness", spec.mode, [], None, "solved", 1.0, rounds=rounds))
    out = capsys.readouterr().out
    assert "NEAT: 3 generations; best fitness 4.0000 (genome 12, generation 2); last generation: 3 species" in out


def test_cartpole_generations_run_on_ray_workers(ray_local, sqlite_uri, tmp_path):
    spec = neat_job(sqlite_uri, "cartpole-track", task="cartpole", trials=3, fixed={"episodes": 2, "max_steps": 200},
                    options={"neat": {"pop_size": 40}})  # fmt: skip
    result = run(spec, progress=False)
    parent, children, histories, files = read_back(sqlite_uri, result, tmp_path)
    assert children == [] and len(result.trials) == 6
    assert all(t.status.value == "ok" and t.node and t.device == "cpu" for t in result.trials)
    assert sorted(m.step for m in histories["fitness_best"]) == [0, 1, 2]
    assert all(0 < m.value <= 200 for m in histories["fitness_best"])
    assert sum(t.metrics["env_steps"] for t in result.trials) > 0
    genome = json.loads((files / "best_genome" / "genome.json").read_text())
    assert genome["inputs"] == [-1, -2, -3, -4] and genome["outputs"] == [0]
    assert (files / "best_genome" / "network.png").read_bytes().startswith(PNG)
    assert parent.data.metrics["reached_threshold"] == 0.0 and parent.data.metrics["generations"] == 3


def test_failed_batches_are_counted_with_their_reason(ray_local, sqlite_uri, tmp_path):
    options = {"neat": {"pop_size": 30, "fitness_threshold": 3.9, "genome": {"num_inputs": 2, "num_outputs": 1}}}
    spec = neat_job(sqlite_uri, "failing", task="function", trials=4,
                    fixed={"function": "neat_fns:xor_failing_at_generation_1"}, options=options)  # fmt: skip
    result = run(spec, progress=False)
    parent, children, histories, _ = read_back(sqlite_uri, result, tmp_path)
    failed = [t for t in result.trials if t.status.value == "failed"]
    assert [t.params["generation"] for t in failed] == [1, 1]
    assert children == [] and parent.info.status == "FINISHED"
    assert parent.data.metrics["n_failed"] == 2 and parent.data.tags["crucible.failed_batches"] == "2"
    assert "2 x " in parent.data.tags["crucible.failure_reasons"]
    assert "fitness service unavailable in generation 1" in parent.data.tags["crucible.failure_reasons"]
    assert "generation 1" in parent.data.tags["crucible.last_failure"]
    client = MlflowClient(tracking_uri=sqlite_uri)
    assert [(m.step, m.value) for m in client.get_metric_history(result.run_id, "failed_batches")][-1] == (1, 2.0)
    assert {m.step: m.value for m in histories["failed_genomes"]} == {0: 0.0, 1: 30.0, 2: 0.0, 3: 0.0}


def test_a_batch_whose_worker_dies_runs_again_on_a_fresh_worker(ray_local, sqlite_uri, tmp_path):
    options = {"neat": {"pop_size": 20, "genome": {"num_inputs": 2, "num_outputs": 1}}}
    fixed = {"function": "neat_fns:xor_dying_once_in_generation_1", "marker_dir": str(tmp_path)}
    spec = neat_job(sqlite_uri, "dying", task="function", trials=3, fixed=fixed, options=options)
    result = run(spec, progress=False)
    assert len(list(tmp_path.glob("[0-9]*"))) == 2  # both batches of generation 1 killed their worker once
    assert [t.status.value for t in result.trials] == ["ok"] * 6
    assert sorted(t.attempts for t in result.trials) == [1, 1, 1, 1, 2, 2]
