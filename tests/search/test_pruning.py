"""Median stopping and ASHA: bad trials stop early, good ones go on, state round-trips."""

from __future__ import annotations

import json
import math

import pytest

from search import make_strategy
from search.base import Decision, Mode, PrunerConfig, Result, SearchConfig
from search.pruning import ASHA, MedianStopping, NoPruner, make_pruner
from search.space import Float

MEDIAN = PrunerConfig(kind="median", warmup_steps=1, min_trials=2)
ASHA_CFG = PrunerConfig(kind="asha", min_resource=1, reduction_factor=3)


def curve(final: float, step: int) -> float:
    """A loss curve that decays towards ``final``."""
    return final + 1.0 / (step + 1)


def run_epochs(pruner, finals: dict[int, float], epochs: int = 10, mode: Mode = Mode.MIN) -> dict[int, int]:
    """Round-robin epochs over trials; returns the epoch each trial was stopped at (or ``epochs``)."""
    stopped: dict[int, int] = {}
    for step in range(epochs):
        for trial, final in finals.items():
            if trial in stopped:
                continue
            value = curve(final, step) * mode.sign()
            if pruner.report(trial, step, value) is Decision.STOP:
                stopped[trial] = step
    return {t: stopped.get(t, epochs) for t in finals}


@pytest.mark.parametrize("mode", [Mode.MIN, Mode.MAX])
@pytest.mark.parametrize("config", [MEDIAN, ASHA_CFG], ids=["median", "asha"])
def test_bad_trial_stopped_early_good_ones_continue(config, mode):
    finals = {0: 0.10, 1: 0.12, 2: 0.11, 3: 5.0}  # trial 3 is clearly bad
    stopped_at = run_epochs(make_pruner(config, mode), finals, mode=mode)
    assert stopped_at[3] <= 1
    assert stopped_at[0] == 10  # the best trial always runs to the end


def test_median_waits_for_warmup_and_min_trials():
    pruner = MedianStopping(PrunerConfig(kind="median", warmup_steps=2, min_trials=2), Mode.MIN)
    assert pruner.report(0, 0, 1.0) is Decision.CONTINUE
    assert pruner.report(1, 0, 1.0) is Decision.CONTINUE
    assert pruner.report(2, 0, 99.0) is Decision.CONTINUE  # before warmup
    assert pruner.report(0, 2, 1.0) is Decision.CONTINUE
    assert pruner.report(2, 2, 99.0) is Decision.CONTINUE  # only one other trial at step 2
    assert pruner.report(1, 2, 1.0) is Decision.CONTINUE
    assert pruner.report(3, 2, 99.0) is Decision.STOP


def test_asha_rungs_and_top_fraction():
    pruner = ASHA(PrunerConfig(kind="asha", min_resource=1, reduction_factor=2), Mode.MIN)
    assert pruner.rung_steps(9) == [1, 2, 4, 8]
    assert pruner.report(0, 0, 5.0) is Decision.CONTINUE  # below the first rung
    assert pruner.report(0, 1, 1.0) is Decision.CONTINUE  # first at the rung
    assert pruner.report(1, 1, 2.0) is Decision.STOP  # 2 values, keeps the top 1
    assert pruner.report(2, 1, 0.5) is Decision.CONTINUE
    assert pruner.report(0, 3, 1.0) is Decision.CONTINUE  # between rungs: first at rung 2
    assert pruner.report(0, 3, 1.0) is Decision.CONTINUE  # already recorded there


def test_divergence_stops_unless_no_pruner():
    for config in (MEDIAN, ASHA_CFG):
        assert make_pruner(config, Mode.MIN).report(0, 3, math.nan) is Decision.STOP
    assert NoPruner(PrunerConfig(), Mode.MIN).report(0, 3, math.nan) is Decision.CONTINUE


@pytest.mark.parametrize("config", [MEDIAN, ASHA_CFG], ids=["median", "asha"])
def test_state_round_trip(config):
    a = make_pruner(config, Mode.MAX)
    for t in range(4):
        for step in range(4):
            a.report(t, step, float(t * 10 + step))
    state = json.loads(json.dumps(a.state(), allow_nan=False))
    b = make_pruner(config, Mode.MAX, state)
    assert b.state() == a.state()
    for t, v in [(5, 3.0), (6, 100.0), (7, 0.5)]:
        assert a.report(t, 3, v) is b.report(t, 3, v)


@pytest.mark.parametrize("config", [MEDIAN, ASHA_CFG], ids=["median", "asha"])
def test_state_log_freezes_into_chunks_and_restores(config, monkeypatch):
    """Reports are an append-only log in the state: full chunks never change again (the job store
    keeps each once), and a pruner restored mid-chunk decides as the original."""
    monkeypatch.setattr(type(make_pruner(config, Mode.MIN)), "LOG_CHUNK", 8)
    a = make_pruner(config, Mode.MIN)
    seen: list[list[str]] = []
    for step in range(1, 6):
        for t in range(5):
            a.report(t, step, curve(t * 0.3, step))
            seen.append(a.state()["log_chunks"])
    state = json.loads(json.dumps(a.state(), allow_nan=False))
    assert len(state["log_chunks"]) == 3 and len(state["log"]) == 1  # 25 reports = 8 + 8 + 8 + 1
    assert all(later[: len(earlier)] == earlier for earlier, later in zip(seen, seen[1:], strict=False))
    b = make_pruner(config, Mode.MIN, state)
    assert b.state() == state
    for t, v in [(9, 0.1), (10, 50.0), (11, 0.7), (12, 2.0)]:
        assert a.report(t, 5, v) is b.report(t, 5, v)
    assert b.state() == a.state()


@pytest.mark.parametrize(
    ("config", "legacy"),
    [
        (MEDIAN, {"kind": "median", "values": {"1": {"0": 1.5, "1": 2.5, "2": 3.5}, "2": {"0": 1.2, "1": 2.2}}}),
        (
            ASHA_CFG,
            {"kind": "asha", "rungs": {"0": {"0": 1.0, "1": 2.0, "2": 3.0, "3": 4.0}, "1": {"0": 0.5, "1": 1.5}}},
        ),
    ],
    ids=["median", "asha"],
)
def test_state_from_before_the_log_restores(config, legacy):
    """States written before the log (whole tables) still restore, to the same tables."""
    p = make_pruner(config, Mode.MIN, legacy)
    tables = p._values if config.kind == "median" else p._rungs
    key = "values" if config.kind == "median" else "rungs"
    assert {str(k): {str(t): v for t, v in row.items()} for k, row in tables.items()} == legacy[key]
    restored = make_pruner(config, Mode.MIN, json.loads(json.dumps(p.state())))
    assert restored.state() == p.state() and "log" in p.state()


def test_state_of_other_kind_rejected():
    state = make_pruner(MEDIAN, Mode.MIN).state()
    with pytest.raises(ValueError, match="median"):
        make_pruner(ASHA_CFG, Mode.MIN, state)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (PrunerConfig(kind="hyperband"), "kind='hyperband'"),
        (PrunerConfig(kind="median", min_trials=0), "min_trials=0"),
        (PrunerConfig(kind="asha", reduction_factor=1), "reduction_factor=1"),
    ],
)
def test_bad_config_names_the_argument(config, match):
    with pytest.raises(ValueError, match=match):
        make_pruner(config, Mode.MIN)


def test_strategy_report_delegates_to_pruner():
    config = SearchConfig(space={"x": Float(0.0, 1.0)}, n_trials=4, pruner=MEDIAN)
    s = make_strategy("random", config)
    proposals = s.ask(4)
    decisions = {}
    for step in range(3):
        for p, final in zip(proposals, [0.1, 0.2, 0.12, 9.0], strict=True):
            if p.trial_id not in decisions:
                d = s.report(Result(p.trial_id, p.params, value=curve(final, step), step=step))
                if d is Decision.STOP:
                    decisions[p.trial_id] = step
    assert decisions == {3: 1}
