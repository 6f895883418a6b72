"""models.neat_evolve: a whole NEAT run as one trial (flat keys -> NEAT settings, reports, score)."""

from __future__ import annotations

import pytest

from models.neat_evolve import evolve, neat_settings_from_flat


def test_flat_keys_map_onto_nested_settings():
    config = {"task": "xor", "generations": 5, "seed": 2, "episodes": 3, "neat": {"genome": {"bias_mutate_rate": 0.5}},
              "pop_size": 60, "compatibility_threshold": 2.5, "conn_add_prob": 0.3, "node_add_prob": 0.1,
              "weight_mutate_rate": 0.9, "max_stagnation": 10, "elitism": 1,
              "genome.weight_mutate_power": 0.7}  # fmt: skip
    assert neat_settings_from_flat(config) == {
        "pop_size": 60,
        "species": {"compatibility_threshold": 2.5},
        "genome": {"bias_mutate_rate": 0.5, "conn_add_prob": 0.3, "node_add_prob": 0.1, "weight_mutate_rate": 0.9,
                   "weight_mutate_power": 0.7},
        "stagnation": {"max_stagnation": 10},
        "reproduction": {"elitism": 1},
    }  # fmt: skip
    assert config["neat"] == {"genome": {"bias_mutate_rate": 0.5}}  # the base settings are not changed


@pytest.mark.parametrize(
    "config, named",
    [
        ({"pop_sise": 80}, "`pop_sise` is neither a run key"),
        ({"genome.colour": 1}, "`genome.colour` is neither"),
        ({"pop_size": 1}, "`pop_size` must be an integer >= 2, but got 1"),
        ({"conn_add_prob": 2.0}, "`genome.conn_add_prob` must be a number in [0, 1], but got 2.0"),
        ({"compatibility_threshold": -1.0}, "`species.compatibility_threshold`"),
        ({"generations": 0}, "`generations` must be an integer >= 1, but got generations=0"),
        ({"neat": [1]}, "`neat` must be a mapping of NEAT settings, but got neat=[1]"),
    ],
)
def test_bad_keys_and_values_are_named_with_the_value(config, named):
    with pytest.raises(ValueError) as info:
        evolve({"task": "xor", **config})
    assert named in str(info.value)


def test_reports_each_generation_and_solves_xor():
    reports = []
    out = evolve({"task": "xor", "generations": 150, "seed": 1}, report=lambda epoch, **m: reports.append((epoch, m)))
    generations = int(out["generations"])
    assert [e for e, _ in reports] == list(range(1, generations + 1))
    assert out["solved"] == 1.0 and out["best_fitness"] >= 3.9 and out["evaluations"] == 150 * generations
    scores = [m["score"] for _, m in reports]
    assert scores == sorted(scores) and scores[-1] == out["score"]
    assert out["score"] == pytest.approx(1 + 1 - out["evaluations"] / (150 * 150))  # solved: 1 + budget left
    assert all(m["best_fitness"] / 3.9 == pytest.approx(m["score"]) for _, m in reports[:-1])  # unsolved: fitness
    assert evolve({"task": "xor", "generations": 150, "seed": 1}) | {"seconds": 0} == out | {"seconds": 0}


class Stopped(Exception):
    """Stands for the worker's TrialStopped (models/ tests do not import service)."""


def test_a_stop_from_the_coordinator_ends_the_run():
    seen = []

    def report(epoch, **metrics):
        seen.append(epoch)
        if epoch == 2:  # after the second generation
            raise Stopped("stopped by the coordinator")

    with pytest.raises(Stopped):
        evolve({"task": "xor", "generations": 50, "seed": 0}, report=report)
    assert seen == [1, 2]


def test_evaluation_budget_and_context_seed():
    class Context:
        seed = 5

    out = evolve({"task": "xor", "generations": 100, "max_evaluations": 100, "pop_size": 30}, context=Context())
    assert out["evaluations"] == 120 and out["generations"] == 4  # stops at the first generation over the budget
    same = evolve({"task": "xor", "generations": 100, "max_evaluations": 100, "pop_size": 30, "seed": 5})
    assert same["best_fitness"] == out["best_fitness"]


def test_cartpole_runs_with_task_keys():
    out = evolve({"task": "cartpole", "generations": 2, "pop_size": 20, "episodes": 2, "max_steps": 50})
    assert out["generations"] == 2 and 0 < out["best_fitness"] <= 50 and out["solved"] == 0.0
    assert out["score"] == pytest.approx(out["best_fitness"] / 475.0)
