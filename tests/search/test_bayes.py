"""Bayes-specific behaviour: parallel asks, failure policy, options, and that it beats random."""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys

import pytest

from search import make_strategy
from search.base import Mode, Result, SearchConfig, Status
from search.bayes import DEFAULTS, BayesStrategy
from search.space import Float

SPACE = {"x": Float(-2.0, 2.0), "y": Float(-2.0, 2.0)}
FAST = {"n_initial_points": 4, "n_points": 300, "gp_restarts": 0}


def quadratic(p: dict) -> float:
    return (p["x"] - 0.3) ** 2 + (p["y"] + 0.2) ** 2


def told(n_told: int, **options) -> BayesStrategy:
    s = BayesStrategy(SearchConfig(space=SPACE, n_trials=30, seed=1, options={**FAST, **options}))
    for p in s.ask(n_told):
        s.tell(Result(p.trial_id, p.params, value=quadratic(p.params)))
    return s


def distinct(points: list[dict]) -> bool:
    return all(abs(a["x"] - b["x"]) + abs(a["y"] - b["y"]) > 1e-6 for a, b in itertools.combinations(points, 2))


def test_batch_ask_gives_distinct_points():
    s = told(6)
    batch = s.ask(4)
    assert distinct([p.params for p in batch])


def test_repeated_single_asks_with_pending_never_duplicate():
    s = told(6)
    in_flight = [s.ask(1)[0] for _ in range(4)]
    assert distinct([p.params for p in in_flight])
    s.tell(Result(in_flight[0].trial_id, in_flight[0].params, value=quadratic(in_flight[0].params)))
    in_flight = in_flight[1:] + s.ask(2)
    assert distinct([p.params for p in in_flight])


def test_initial_design_is_space_filling_and_asked_at_once():
    s = BayesStrategy(SearchConfig(space=SPACE, n_trials=10, seed=3, options={**FAST, "n_initial_points": 8}))
    batch = s.ask(8)
    assert distinct([p.params for p in batch])
    xs = sorted(p.params["x"] for p in batch)
    assert xs[0] < -1.0 and xs[-1] > 1.0


@pytest.mark.parametrize("policy", ["worst", "skip"])
def test_failed_trials_policy(policy):
    s = BayesStrategy(SearchConfig(space=SPACE, n_trials=10, seed=0, options={**FAST, "on_failure": policy}))
    ps = s.ask(4)
    s.tell(Result(ps[0].trial_id, ps[0].params, value=1.0))
    s.tell(Result(ps[1].trial_id, ps[1].params, value=5.0))
    s.tell(Result(ps[2].trial_id, ps[2].params, status=Status.FAILED, reason="boom"))
    s.tell(Result(ps[3].trial_id, ps[3].params, value=float("nan")))
    xs, ys = s._observations()
    assert ys == ([1.0, 5.0, 5.0, 5.0] if policy == "worst" else [1.0, 5.0])
    assert len(xs) == len(ys)
    assert len(s.ask(2)) == 2  # the model is fitted without NaN


def test_max_mode_is_negated_internally():
    s = BayesStrategy(SearchConfig(space=SPACE, n_trials=10, seed=0, mode=Mode.MAX, options=FAST))
    for p in s.ask(2):
        s.tell(Result(p.trial_id, p.params, value=float(p.trial_id + 1)))
    assert s._observations()[1] == [-1.0, -2.0]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"acq_fun": "EI"}, "acq_fun"),
        ({"acq_func": "gp_hedge"}, "acq_func='gp_hedge'"),
        ({"n_initial_points": 0}, "n_initial_points=0"),
        ({"noise": -1.0}, "noise=-1.0"),
        ({"gp_prior": "yes"}, "gp_prior='yes'"),
    ],
)
def test_bad_options_name_the_argument(options, match):
    with pytest.raises(ValueError, match=match):
        BayesStrategy(SearchConfig(space=SPACE, options=options))


def test_defaults_are_valid():
    BayesStrategy(SearchConfig(space=SPACE, options=dict(DEFAULTS)))


def test_bayes_beats_random_on_a_quadratic():
    def run(name: str, seed: int) -> float:
        options = FAST if name == "bayes" else {}
        s = make_strategy(name, SearchConfig(space=SPACE, n_trials=14, seed=seed, options=options))
        while not s.done():
            for p in s.ask(2):
                s.tell(Result(p.trial_id, p.params, value=quadratic(p.params)))
        return s.best().value

    seeds = range(3)
    bayes = statistics.mean(run("bayes", seed) for seed in seeds)
    random = statistics.mean(run("random", seed) for seed in seeds)
    assert bayes < random
    assert bayes < 0.05


def test_package_import_stays_light():
    code = "import sys, search, search.space; print(any(m in sys.modules for m in ('skopt', 'numpy', 'sklearn')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_discrete_spaces_run_to_completion_without_in_flight_duplicates():
    from search.space import Categorical, Int

    space = {"a": Categorical(("p", "q", "r")), "b": Categorical((1, 2, 3)), "n": Int(1, 4)}
    s = BayesStrategy(SearchConfig(space=space, n_trials=12, seed=0, options={**FAST, "n_initial_points": 3}))
    while not s.done():
        batch = s.ask(3)
        in_flight = [p.params for p in s.pending()]
        assert all(a != b for a, b in itertools.combinations(in_flight, 2))
        for p in batch:
            value = (p.params["a"] == "q") + p.params["b"] + abs(p.params["n"] - 2)
            s.tell(Result(p.trial_id, p.params, value=float(value)))
    assert s.best().value <= 2.0
