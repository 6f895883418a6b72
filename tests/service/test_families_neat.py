"""Spec validation for strategy 'neat': objective filled in, every bad field named with its value."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import families
from service.errors import SpecError
from service.spec import JobSpec

ROOT = Path(__file__).resolve().parents[2]


def neat(**changes):
    data = {"name": "n", "strategy": "neat", "task": "xor", "budget": {"trials": 30, "parallel": 2}}
    data.update(changes)
    return data


def issues_of(data) -> dict[str, object]:
    with pytest.raises(SpecError) as info:
        JobSpec.from_dict(data)
    return {issue.path: issue for issue in info.value.issues}


def test_objective_is_filled_in_and_options_reach_the_strategy():
    spec = JobSpec.from_dict(neat(fixed={"dtype": "float64"}, strategy_options={"neat": {"pop_size": 40}}))
    assert (spec.objective.metric, spec.objective.mode, spec.objective.function) == ("fitness", "max", None)
    config = spec.search_config()
    assert config.options == {"neat": {"pop_size": 40}, "task": "xor", "batches": 2}
    assert config.n_trials == 30
    assert spec.trial_function() == "models.neat_tasks:neat_trial"
    assert spec.trial_config({"generation": 0, "seed": 0, "genomes": []}) == {"generation": 0, "seed": 0,
                                                                               "genomes": []}  # fmt: skip
    assert JobSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "changes, path, value, says",
    [
        ({"objective": {"metric": "loss", "mode": "min"}}, "objective", {"metric": "loss", "mode": "min"},
         "must be metric 'fitness', mode 'max'"),
        ({"objective": {"metric": "fitness", "mode": "min"}}, "objective", {"metric": "fitness", "mode": "min"},
         "must be metric 'fitness'"),
        ({"model": "mlp"}, "model", "mlp", "must be null for strategy 'neat'"),
        ({"space": {"lr": {"type": "float", "low": 0.1, "high": 1.0}}}, "space",
         {"lr": {"type": "float", "low": 0.1, "high": 1.0, "log": False}}, "must be empty for strategy 'neat'"),
        ({"fixed": {"epochs": 5}}, "fixed.epochs", 5, "is not a NEAT task setting"),
        ({"fixed": {"generation": 3}}, "fixed.generation", 3, "is set by strategy 'neat' for every batch"),
        ({"task": "function", "fixed": {"function": "m:f", "genomes": []}}, "fixed.genomes", [],
         "is set by strategy 'neat'"),
        ({"task": "mnist"}, "task", "mnist", "must be one of 'xor'"),
        ({"task": "function"}, "fixed.function", None, "must be an import path"),
        ({"strategy_options": {"neat": {"pop_size": 1}}}, "strategy_options.neat.pop_size", 1,
         "must be an integer >= 2"),
        ({"strategy_options": {"neat": {"genome": {"conn_add_prob": 2}}}},
         "strategy_options.neat.genome.conn_add_prob", 2, "must be a number in [0, 1]"),
        ({"strategy_options": {"neat": {"species": {"compat_threshold": 3}}}},
         "strategy_options.neat.species.compat_threshold", 3, "is not a known setting"),
        ({"strategy_options": {"neat": {"genome": {"num_inputs": 3}}}}, "strategy_options.neat.genome.num_inputs", 3,
         "must be 2 for task 'xor'"),
        ({"strategy_options": {"neat": [1]}}, "strategy_options.neat", [1], "must be a mapping of NEAT settings"),
        ({"strategy_options": {"failed_fitness": "low"}}, "strategy_options", {"failed_fitness": "low"},
         "failed_fitness='low'"),
        ({"strategy_options": {"mutation": 0.5}}, "strategy_options", {"mutation": 0.5}, "unknown ['mutation']"),
        ({"pruning": {"kind": "median"}}, "pruning.kind", "median", "must be 'none' for strategy 'neat'"),
    ],
)  # fmt: skip
def test_each_bad_field_is_named_with_its_value(changes, path, value, says):
    found = issues_of(neat(**changes))
    assert path in found, f"expected an issue at {path}, got {sorted(found)}"
    issue = found[path]
    assert issue.value == value
    assert says in issue.allowed
    message = str(issue)
    assert f"`{path}`" in message and repr(value) in message


def test_every_problem_is_reported_at_once():
    found = issues_of(neat(model="mlp", fixed={"epochs": 5},
                           strategy_options={"neat": {"pop_size": 1, "genome": {"conn_add_prob": 2}}}))  # fmt: skip
    assert {"model", "fixed.epochs", "strategy_options.neat.pop_size",
            "strategy_options.neat.genome.conn_add_prob"} <= set(found)  # fmt: skip


def test_user_fitness_function_needs_its_io_sizes():
    found = issues_of(neat(task="function", fixed={"function": "pkg.mod:fit"}))
    assert found["strategy_options.neat.genome.num_inputs"].value is None
    io = {"neat": {"genome": {"num_inputs": 3, "num_outputs": 1}}}
    spec = JobSpec.from_dict(neat(task="function", fixed={"function": "pkg.mod:fit"}, strategy_options=io))
    assert spec.search_config().options["task"] == "function"
    own = JobSpec.from_dict(neat(task="function", fixed={"function": "pkg.mod:fit", "noise": 0.1}, strategy_options=io))
    assert families.shared_input(own)["noise"] == 0.1  # a user's fitness gets its own settings


@pytest.mark.parametrize("name", ["xor-neat", "cartpole-neat", "neat-meta-bayes"])
def test_neat_examples_are_valid(name):
    spec = JobSpec.from_yaml(ROOT / "examples" / f"{name}.yaml")
    if spec.strategy == "neat":
        assert spec.objective.metric == "fitness" and spec.search_config().options["batches"] == spec.budget.parallel
    else:
        assert spec.objective.function == "models.neat_evolve:evolve" and spec.objective.metric == "score"
        from models.neat_evolve import neat_settings_from_flat

        point = {name: dim.low if hasattr(dim, "low") else dim.choices[0] for name, dim in spec.space.items()}
        settings = neat_settings_from_flat({**spec.fixed, **point})  # every searched key is a NEAT setting
        assert settings["pop_size"] == point["pop_size"]
