"""Job specs of strategy ``anneal``: what the spec fills in, what it refuses, and a trial's config."""

from __future__ import annotations

from typing import Any

import pytest

from search import make_strategy
from search.anneal import AnnealStrategy
from search.base import Mode
from service import families
from service.errors import SpecError
from service.spec import JobSpec


def anneal_spec(**overrides: Any) -> dict[str, Any]:
    """A valid strategy-``anneal`` spec as YAML would give it, with ``overrides`` on top."""
    data: dict[str, Any] = {
        "name": "a",
        "strategy": "anneal",
        "task": "digits",
        "model": "mlp",
        "fixed": {"hidden_layers": 1, "units": 32, "trainer": "hybrid"},
        "budget": {"trials": 12, "parallel": 4},
        "strategy_options": {"replicas": 4, "steps": 50},
    }
    data.update(overrides)
    return data


def issue_for(data: dict[str, Any], path: str) -> tuple[Any, str]:
    """The value and message of the problem that ``JobSpec.from_dict(data)`` reports at ``path``."""
    with pytest.raises(SpecError) as info:
        JobSpec.from_dict(data)
    found = {issue.path: issue for issue in info.value.issues}
    assert path in found, f"no problem at {path!r}; got {sorted(found)}"
    return found[path].value, str(info.value)


def test_objective_is_filled_in_and_survives_a_round_trip():
    spec = JobSpec.from_dict(anneal_spec())
    assert (spec.objective.metric, spec.objective.mode, spec.mode) == ("energy", "min", Mode.MIN)
    again = JobSpec.from_dict(spec.to_dict())
    assert (again.objective.metric, again.objective.mode) == ("energy", "min")
    assert JobSpec.from_dict(anneal_spec(objective={"metric": "energy", "mode": "min"})).objective.metric == "energy"


@pytest.mark.parametrize(
    "objective",
    [
        {"metric": "val_loss", "mode": "min"},
        {"metric": "energy", "mode": "max"},
        {"metric": "train_loss"},
        {"metric": "val_accuracy", "mode": "max"},  # written out, the generic default is still refused
    ],
)
def test_another_objective_is_refused(objective):
    value, message = issue_for(anneal_spec(objective=objective), "objective")
    assert value["metric"] == objective["metric"]
    assert "must be metric 'energy', mode 'min' for strategy 'anneal'" in message
    assert repr(objective["metric"]) in message


@pytest.mark.parametrize(
    "overrides, path, value, says",
    [
        ({"fixed": {"units": 32, "trainer": "backprop"}}, "fixed.trainer", "backprop",
         "'boltzmann', 'cauchy', 'hybrid'"),
        ({"fixed": {"trainer": "sgd"}}, "fixed.trainer", "sgd", "must be one of"),
        ({"space": {"lr": {"type": "float", "low": 0.01, "high": 0.1}}}, "space", None, "must be empty"),
        ({"model": "resnet"}, "model", "resnet", "must be 'mlp' for strategy 'anneal'"),
        ({"model": None}, "model", None, "must be 'mlp' for strategy 'anneal'"),
        ({"task": "mnist"}, "task", "mnist", "must be one of 'digits'"),
        ({"pruning": {"kind": "median"}}, "pruning.kind", "median", "must be 'none' for strategy 'anneal'"),
        ({"objective": {"metric": "energy", "mode": "min", "function": "m:f"}}, "objective.function", "m:f",
         "must be null for strategy 'anneal'"),
    ],
)  # fmt: skip
def test_family_rules_name_the_field_and_echo_the_value(overrides, path, value, says):
    found, message = issue_for(anneal_spec(**overrides), path)
    if value is not None:
        assert found == value
        assert repr(value) in message
    assert says in message


def test_a_non_empty_space_echoes_its_dimensions():
    found, message = issue_for(anneal_spec(space={"lr": {"type": "float", "low": 0.01, "high": 0.1}}), "space")
    assert list(found) == ["lr"] and (found["lr"]["low"], found["lr"]["high"]) == (0.01, 0.1)
    assert "'lr'" in message


@pytest.mark.parametrize(
    "options, names",
    [
        ({"replicas": 0}, "`replicas` must be an int >= 1, but got replicas=0"),
        ({"replicas": 2.5}, "replicas=2.5"),
        ({"steps": -5}, "`steps` must be an int >= 1, but got steps=-5"),
        ({"t_min": 0.5, "t_max": 0.1}, "`t_min <= t_max` must hold, but got (t_min=0.5, t_max=0.1)"),
        ({"t_min": 0}, "`t_min` must be a finite number > 0, but got t_min=0"),
        ({"boltzmann_k": "big"}, "boltzmann_k='big'"),
        ({"rounds": 0}, "`rounds` must be an int >= 1, but got rounds=0"),
        ({"replicas": 16}, "n_trials=12, replicas=16"),  # 12 trials cannot fill one round of 16 replicas
        ({"swaps": "often"}, "Unknown option(s) 'swaps' for strategy 'anneal'"),
    ],
)
def test_bad_strategy_options_name_the_option_and_echo_the_value(options, names):
    found, message = issue_for(anneal_spec(strategy_options=options), "strategy_options")
    assert found == options
    assert names in message


@pytest.mark.parametrize(
    "fixed, path, value, says",
    [
        ({"units": -3}, "fixed.units", -3, ""),
        ({"T0": 0}, "fixed.T0", 0, ""),
        ({"hybrid_eta": 1.5}, "fixed.hybrid_eta", 1.5, ""),
        ({"granularity": "some"}, "fixed.granularity", "some", ""),
        ({"warp_speed": 9}, "fixed.warp_speed", 9, "is not a hyperparameter of model 'mlp'"),
        ({"checkpoint": "AAAA"}, "fixed.checkpoint", "AAAA", "is set by strategy 'anneal' per round"),
        ({"temperature": 0.1}, "fixed.temperature", 0.1, "is set by strategy 'anneal' per round"),
    ],
)
def test_fixed_hyperparameters_are_checked(fixed, path, value, says):
    found, message = issue_for(anneal_spec(fixed={"hidden_layers": 1, **fixed}), path)
    assert found == value
    assert repr(value) in message and says in message


def test_every_problem_is_reported_at_once():
    bad = anneal_spec(model="cnn", fixed={"trainer": "backprop"}, strategy_options={"replicas": 0})
    with pytest.raises(SpecError) as info:
        JobSpec.from_dict(bad)
    assert {"model", "fixed.trainer", "strategy_options"} <= {issue.path for issue in info.value.issues}


def test_trial_config_overlays_defaults_fixed_and_the_proposal():
    spec = JobSpec.from_dict(anneal_spec(fixed={"hidden_layers": 1, "units": 32}))
    params = {"replica": 2, "temperature": 0.05, "steps": 50, "round": 3, "checkpoint": None}
    config = spec.trial_config(params)
    assert config == {"trainer": "hybrid", "hidden_layers": 1, "units": 32, **params}  # hybrid by default
    chosen = JobSpec.from_dict(anneal_spec(fixed={"units": 32, "trainer": "boltzmann", "T0": 0.001}))
    assert chosen.trial_config(params)["trainer"] == "boltzmann"
    assert chosen.trial_config(params)["T0"] == 0.001
    assert spec.trial_config({})["trainer"] == "hybrid" and "replica" not in spec.trial_config({})


def test_the_spec_drives_the_strategy_and_the_worker_function():
    spec = JobSpec.from_dict(anneal_spec(strategy_options={"replicas": 3, "steps": 20, "t_min": 0.01, "t_max": 1.0}))
    assert families.trial_function(spec) == "models.anneal:replica_trial"
    assert families.needs_shared(spec)
    strategy = make_strategy(spec.strategy, spec.search_config())
    assert isinstance(strategy, AnnealStrategy)
    assert [round(t, 6) for t in strategy.ladder] == [0.01, 0.1, 1.0]
    first = strategy.ask(3)
    assert [p.params["steps"] for p in first] == [20, 20, 20]
    assert strategy.config.options == {"replicas": 3, "steps": 20, "t_min": 0.01, "t_max": 1.0}
    assert not strategy.done()
