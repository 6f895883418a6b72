"""The Strategy contract, run against every entry of ``search.STRATEGIES``."""

from __future__ import annotations

import json
import math

import pytest

from search import STRATEGIES, make_strategy, restore_strategy
from search._trials import TrialStrategy
from search.base import Decision, Mode, PrunerConfig, Result, SearchConfig, Status, Strategy
from search.space import Categorical, Float, Int

SPACE = {
    "x": Float(-2.0, 2.0),
    "lr": Float(1e-4, 1e-1, log=True),
    "units": Int(8, 64, log=True),
    "act": Categorical(("relu", "tanh")),
}

# Small, fast settings per strategy (bayes: a short initial design so the GP is exercised).
FAST_OPTIONS = {"bayes": {"n_initial_points": 3, "n_points": 300, "gp_restarts": 0}}


def objective(params: dict) -> float:
    return (params["x"] - 0.5) ** 2 + abs(math.log10(params["lr"]) + 2) + (params["act"] == "tanh")


# Strategies that work in rounds (anneal: fixed replicas, no search space; neat: a generation of
# genomes, fitness maximized) follow the protocol but not this suite's assumptions about params,
# modes and budgets; tests/search/test_anneal_strategy.py and test_neat.py check the protocol for them.
ROUND_BASED = {"anneal", "neat"}


@pytest.fixture(params=sorted(set(STRATEGIES) - ROUND_BASED))
def make(request):
    name = request.param

    def build(**kwargs) -> Strategy:
        kwargs.setdefault("space", SPACE)
        kwargs.setdefault("options", dict(FAST_OPTIONS.get(name, {})))
        return make_strategy(name, SearchConfig(**kwargs))

    build.strategy_name = name
    return build


def finish(strategy: Strategy, proposal, value=None, status=Status.OK) -> Result:
    value = objective(proposal.params) if value is None and status is Status.OK else value
    result = Result(proposal.trial_id, proposal.params, status=status, value=value)
    strategy.tell(result)
    return result


def test_is_a_strategy(make):
    assert isinstance(make(), Strategy)


def test_ask_respects_n_and_budget(make):
    s = make(n_trials=5)
    assert len(s.ask(2)) == 2
    assert len(s.ask(10)) == 3
    assert s.ask(1) == []
    assert s.ask(0) == []


def test_ask_rejects_bad_n(make):
    with pytest.raises(ValueError, match="n=-1"):
        make().ask(-1)


def test_ids_unique_and_increasing(make):
    s = make(n_trials=6)
    ids = [p.trial_id for p in s.ask(2) + s.ask(1) + s.ask(3)]
    assert ids == list(range(6))


def test_params_are_plain_json_values_in_space(make):
    s = make(n_trials=6)
    proposals = s.ask(3)
    for p in proposals[:2]:
        finish(s, p)
    proposals += s.ask(3)
    for p in proposals:
        assert set(p.params) == set(SPACE)
        assert type(p.params["x"]) is float and -2.0 <= p.params["x"] <= 2.0
        assert type(p.params["lr"]) is float and 1e-4 <= p.params["lr"] <= 1e-1
        assert type(p.params["units"]) is int and 8 <= p.params["units"] <= 64
        assert p.params["act"] in ("relu", "tanh") and type(p.params["act"]) is str
        json.dumps(p.params, allow_nan=False)


def test_done_after_budget_told(make):
    s = make(n_trials=4)
    proposals = s.ask(4)
    for p in proposals[:3]:
        finish(s, p)
        assert not s.done()
    finish(s, proposals[3])
    assert s.done()
    assert s.ask(2) == []


@pytest.mark.parametrize("mode", [Mode.MIN, Mode.MAX])
def test_best_respects_mode(make, mode):
    s = make(n_trials=4, mode=mode)
    values = [3.0, -1.0, 7.0, 2.0]
    for p, v in zip(s.ask(4), values, strict=True):
        finish(s, p, value=v)
    expected = min(values) if mode is Mode.MIN else max(values)
    assert s.best().value == expected
    assert s.best().trial_id == values.index(expected)


def test_best_is_none_before_any_success(make):
    s = make(n_trials=2)
    assert s.best() is None
    finish(s, s.ask(1)[0], status=Status.FAILED)
    assert s.best() is None


def test_failed_results_accepted_and_search_continues(make):
    s = make(n_trials=8)
    first = s.ask(4)
    finish(s, first[0], status=Status.FAILED)
    s.tell(Result(first[1].trial_id, first[1].params, status=Status.OK, value=float("nan")))
    finish(s, first[2])
    finish(s, first[3], value=float("inf"))
    more = s.ask(4)
    assert [p.trial_id for p in more] == [4, 5, 6, 7]
    for p in more:
        finish(s, p)
    assert s.done()
    assert s.best().status is Status.OK and math.isfinite(s.best().value)
    json.dumps(s.state(), allow_nan=False)


def test_pruned_result_without_value_uses_last_report(make):
    s = make(n_trials=2, pruner=PrunerConfig(kind="none"))
    p = s.ask(1)[0]
    assert s.report(Result(p.trial_id, p.params, value=4.0, step=1)) is Decision.CONTINUE
    s.tell(Result(p.trial_id, p.params, status=Status.PRUNED, value=None))
    assert s.results[0].value == 4.0


def test_double_and_unknown_tell_rejected(make):
    s = make(n_trials=3)
    p = s.ask(1)[0]
    finish(s, p)
    with pytest.raises(ValueError, match="trial_id=0"):
        finish(s, p)
    with pytest.raises(ValueError, match="trial_id=7"):
        s.tell(Result(7, {}, value=1.0))
    with pytest.raises(ValueError, match="trial_id=0"):
        s.report(Result(0, p.params, value=1.0, step=1))


def test_report_needs_step(make):
    s = make(n_trials=2)
    p = s.ask(1)[0]
    with pytest.raises(ValueError, match="step"):
        s.report(Result(p.trial_id, p.params, value=1.0))


def test_all_in_flight_returns_empty(make):
    s = make(n_trials=3)
    assert len(s.ask(3)) == 3
    assert s.ask(1) == []
    assert [p.trial_id for p in s.pending()] == [0, 1, 2]


@pytest.mark.parametrize("chunk", [64, 2])  # 2: told results freeze into chunks along the way
def test_state_json_and_restore_continues_identically(make, chunk, monkeypatch):
    monkeypatch.setattr(TrialStrategy, "LOG_CHUNK", chunk)
    config = SearchConfig(
        space=SPACE,
        n_trials=9,
        seed=7,
        options=dict(FAST_OPTIONS.get(make.strategy_name, {})),
        pruner=PrunerConfig(kind="median", warmup_steps=0, min_trials=1),
    )
    a = make_strategy(make.strategy_name, config)
    proposals = a.ask(3)
    finish(a, proposals[0])
    finish(a, proposals[1], status=Status.FAILED)
    a.report(Result(proposals[2].trial_id, proposals[2].params, value=1.5, step=1))
    proposals += a.ask(2)  # trial 2 still in flight, 3 and 4 new
    finish(a, proposals[3])

    state = json.loads(json.dumps(a.state(), allow_nan=False))
    b = restore_strategy(make.strategy_name, config, state)
    assert b.pending() == a.pending()
    assert b.best() == a.best()

    for s in (a, b):  # the same tells, in the same order, to both
        finish(s, proposals[2], status=Status.PRUNED)
        finish(s, proposals[4])
    next_a, next_b = a.ask(3), b.ask(3)
    assert next_a == next_b
    for s in (a, b):
        for p in next_a:
            finish(s, p)
    assert a.ask(2) == b.ask(2)
    assert a.state() == b.state()
    if chunk == 2:
        assert len(a.state()["results_chunks"]) == 4 and a.state()["results"] == []  # 8 told


def test_restore_rejects_other_strategy_state(make):
    s = make(n_trials=2)
    state = dict(s.state(), strategy="nope")
    with pytest.raises(ValueError, match="nope"):
        restore_strategy(make.strategy_name, s.config, state)


def test_bad_config_rejected(make):
    with pytest.raises(ValueError, match="n_trials=0"):
        make(n_trials=0)


def test_unknown_strategy_name_lists_allowed():
    with pytest.raises(ValueError, match="bayes.*random"):
        make_strategy("grid", SearchConfig(space=SPACE))
