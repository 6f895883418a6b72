"""Fitness tasks for NEAT batches: XOR, classification, CartPole (against gymnasium), user functions."""

from __future__ import annotations

import random
import sys
import types

import gymnasium as gym
import neat
import numpy as np
import pytest
import torch

from models.data import load_task
from models.neat_tasks import (
    XOR_INPUTS,
    XOR_OUTPUTS,
    cartpole_seeds,
    cartpole_start,
    cartpole_step,
    evaluate_batch,
)
from models.neat_torch import genome_to_dict
from search._neat_genome import genome_columns
from search._neat_settings import NEAT_TASK_IO
from search.neat import build_neat_config, resolve_neat_settings


def population(task: str, seed: int = 0, rounds: int = 3, size: int = 30) -> tuple[list, object]:
    config = build_neat_config(resolve_neat_settings({"pop_size": size, "genome": {"node_add_prob": 0.5}}, task))
    state = random.getstate()
    random.seed(seed)
    try:
        genomes = list(neat.Population(config).population.values())
        for _ in range(rounds):
            for g in genomes:
                g.mutate(config.genome_config)
    finally:
        random.setstate(state)
    return genomes, config


def test_task_io_matches_data():
    for name in ("wine", "digits", "breast_cancer"):
        data = load_task(name)
        assert NEAT_TASK_IO[name] == (data.n_features, data.n_classes)


def test_xor_equals_neat_python_example():
    genomes, config = population("xor")
    out = evaluate_batch({"task": "xor", "dtype": "float64", "genomes": [genome_to_dict(g, config) for g in genomes]})
    for g in genomes:
        net = neat.nn.FeedForwardNetwork.create(g, config)
        fitness = 4.0
        for xi, xo in zip(XOR_INPUTS, XOR_OUTPUTS, strict=True):
            fitness -= (net.activate(xi)[0] - xo) ** 2
        assert out[f"fitness.{g.key}"] == pytest.approx(fitness, abs=1e-12)
    fits = [out[f"fitness.{g.key}"] for g in genomes]
    assert out["batch_best"] == max(fits) and out["batch_mean"] == pytest.approx(np.mean(fits))
    assert out["batch_size"] == len(genomes) and out["batch_invalid"] == 0 and out["eval_seconds"] > 0


@pytest.mark.parametrize("task", ["wine", "digits"])
def test_classification_accuracy_and_log_loss(task):
    genomes, config = population(task, size=12)
    dicts = [genome_to_dict(g, config) for g in genomes]
    acc = evaluate_batch({"task": task, "genomes": dicts, "dtype": "float64", "max_samples": 50})
    loss = evaluate_batch({"task": task, "genomes": dicts, "dtype": "float64", "max_samples": 50, "metric": "log_loss"})
    data = load_task(task)
    X, y = data.X_train[:50], data.y_train[:50]
    for g in genomes:
        net = neat.nn.FeedForwardNetwork.create(g, config)
        outs = np.array([net.activate(list(map(float, x))) for x in X])
        assert acc[f"fitness.{g.key}"] == pytest.approx(np.mean(outs.argmax(1) == y))
        logp = outs - np.log(np.exp(outs).sum(1, keepdims=True))
        assert loss[f"fitness.{g.key}"] == pytest.approx(logp[np.arange(50), y].mean())


def test_cartpole_dynamics_equal_gymnasium():
    seeds = list(range(6))
    rng = np.random.default_rng(0)
    state = np.array([cartpole_start(s) for s in seeds]).T
    envs = [gym.make("CartPole-v1") for _ in seeds]
    for env, s in zip(envs, seeds, strict=True):
        env.reset(seed=s)
    alive = np.ones(len(seeds), dtype=bool)
    for t in range(500):
        # a stabilizing controller with random slips, so that episodes are long and varied
        push = (state[2] + 0.3 * state[3] > 0).astype(np.int64)
        action = np.where(rng.random(len(seeds)) < 0.15, 1 - push, push)
        state, terminated = cartpole_step(state, action)
        for i, env in enumerate(envs):
            if alive[i]:
                _, _, term, trunc, _ = env.step(int(action[i]))
                assert np.array_equal(env.unwrapped.state, state[:, i]), (t, i)
                assert term == terminated[i]
        alive &= ~terminated
    assert alive.sum() < len(seeds)  # some fell,
    assert alive.any()  # some lasted all 500 steps


def test_cartpole_fitness_equals_gymnasium_loop():
    genomes, config = population("cartpole", rounds=4, size=10)
    dicts = [genome_to_dict(g, config) for g in genomes]
    params = {"generation": 3, "seed": 11, "episodes": 2}
    out = evaluate_batch({"task": "cartpole", "dtype": "float64", "genomes": dicts, **params})
    seeds = cartpole_seeds(11, 3, 2)
    env = gym.make("CartPole-v1")
    for g in genomes:
        net = neat.nn.FeedForwardNetwork.create(g, config)
        returns = []
        for s in seeds:
            obs, _ = env.reset(seed=s)
            total, done = 0.0, False
            while not done:
                action = 1 if net.activate([float(v) for v in obs])[0] > 0.5 else 0
                obs, reward, term, trunc, _ = env.step(action)
                total += reward
                done = term or trunc
            returns.append(total)
        assert out[f"fitness.{g.key}"] == pytest.approx(np.mean(returns))
    assert out["env_steps"] >= len(genomes) * 2 * 8


def test_cartpole_same_start_states_per_generation():
    assert cartpole_seeds(0, 1, 5) == cartpole_seeds(0, 1, 5)
    assert cartpole_seeds(0, 1, 5) != cartpole_seeds(0, 2, 5)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=42)
    assert np.array_equal(np.float32(cartpole_start(42)), obs)


def test_user_function(monkeypatch):
    module = types.ModuleType("neat_user_fns")

    def by_size(batch, config):
        out = batch.activate([[1.0, 0.0]])[:, 0, 0]
        return torch.stack([out, torch.tensor([len(g["connections"]) for g in batch.genomes])]).sum(0)

    module.by_size = by_size
    module.too_few = lambda batch, config: [1.0]
    monkeypatch.setitem(sys.modules, "neat_user_fns", module)
    genomes, config = population("xor", size=5)
    dicts = [genome_to_dict(g, config) for g in genomes]
    out = evaluate_batch({"task": "function", "function": "neat_user_fns:by_size", "genomes": dicts})
    assert set(out) >= {f"fitness.{g.key}" for g in genomes}
    by_columns = evaluate_batch(  # a job's batches come as columns; batch.genomes are still the dicts
        {"task": "function", "function": "neat_user_fns:by_size", "genomes": genome_columns(genomes, config)}
    )
    assert {k: v for k, v in by_columns.items() if k != "eval_seconds"} == {
        k: v for k, v in out.items() if k != "eval_seconds"
    }
    with pytest.raises(ValueError, match="one fitness per genome"):
        evaluate_batch({"task": "function", "function": "neat_user_fns:too_few", "genomes": dicts})
    with pytest.raises(ValueError, match="import path"):
        evaluate_batch({"task": "function", "function": "no_colon", "genomes": dicts})


@pytest.mark.parametrize("task", ["xor", "wine", "cartpole"])
def test_columns_score_exactly_like_dicts(task):
    genomes, config = population(task, seed=4)
    dicts = [genome_to_dict(g, config) for g in genomes]
    extra = {"episodes": 2, "max_steps": 60, "generation": 3, "seed": 1}
    by_dicts = evaluate_batch({"task": task, "genomes": dicts, **extra})
    by_columns = evaluate_batch({"task": task, "genomes": genome_columns(genomes, config), **extra})
    assert {k: v for k, v in by_columns.items() if k != "eval_seconds"} == {
        k: v for k, v in by_dicts.items() if k != "eval_seconds"
    }


def test_non_finite_fitness_left_out():
    node = {"bias": 0.0, "response": 1.0, "activation": "inv", "aggregation": "sum"}
    g = {"key": 9, "inputs": [-1, -2], "outputs": [0], "nodes": {"0": node}, "connections": [[-1, 0, np.nan, True]]}
    out = evaluate_batch({"task": "xor", "genomes": [g]})
    assert "fitness.9" not in out and out["batch_invalid"] == 1


def test_bad_config_named():
    with pytest.raises(ValueError, match="`task` must be one of"):
        evaluate_batch({"task": "pong", "genomes": [{}]})
    with pytest.raises(ValueError, match="`genomes`"):
        evaluate_batch({"task": "xor", "genomes": []})
    genomes, config = population("xor", size=2)
    dicts = [genome_to_dict(g, config) for g in genomes]
    with pytest.raises(ValueError, match="13 inputs and 3 outputs"):
        evaluate_batch({"task": "wine", "genomes": dicts})
    with pytest.raises(ValueError, match="`episodes`"):
        evaluate_batch({"task": "cartpole", "genomes": dicts, "episodes": 0})
    with pytest.raises(ValueError, match="`dtype`"):
        evaluate_batch({"task": "xor", "genomes": dicts, "dtype": "half"})
