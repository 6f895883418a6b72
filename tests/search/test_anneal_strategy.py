"""Strategy ``anneal`` (replica exchange): the protocol, the swap rule, checkpoints and resuming."""

from __future__ import annotations

import base64
import json
import math

import pytest

from search import STRATEGIES, make_strategy, restore_strategy
from search.anneal import DEFAULTS, AnnealStrategy, geometric_ladder, swap_probability
from search.base import Decision, Mode, Result, SearchConfig, Status, Strategy
from search.space import Float


def make(n_trials: int = 40, seed: int = 0, mode: Mode = Mode.MIN, **options) -> AnnealStrategy:
    options = {"replicas": 4, "t_min": 0.01, "t_max": 1.0, "steps": 5, **options}
    return AnnealStrategy(SearchConfig(space={}, n_trials=n_trials, seed=seed, mode=mode, options=options))


def tell_all(s: AnnealStrategy, proposals, energies) -> None:
    for p, e in zip(proposals, energies, strict=True):
        s.tell(Result(p.trial_id, p.params, value=e, metrics={"energy": e, "accept_rate": 0.5}))


def by_replica(s: AnnealStrategy) -> list[float]:
    return s.temperatures()


# --- the protocol ---------------------------------------------------------------------------------


def test_registered_and_a_strategy() -> None:
    assert STRATEGIES["anneal"] is AnnealStrategy
    s = make_strategy("anneal", SearchConfig(space={}, n_trials=8, options={"replicas": 2}))
    assert isinstance(s, Strategy) and isinstance(s, AnnealStrategy)


def test_round_is_asked_then_nothing_until_its_last_tell() -> None:
    s = make()
    first = s.ask(3)
    assert [p.params["replica"] for p in first] == [0, 1, 2] and [p.trial_id for p in first] == [0, 1, 2]
    rest = s.ask(5)
    assert [p.trial_id for p in rest] == [3]
    assert s.ask(4) == [] and s.ask(0) == []
    proposals = first + rest
    for p in proposals[:3]:
        s.tell(Result(p.trial_id, p.params, value=1.0))
        assert s.ask(4) == []  # the round is not over
    assert [p.trial_id for p in s.pending()] == [3]
    s.tell(Result(3, proposals[3].params, value=1.0))
    second = s.ask(10)
    assert [p.trial_id for p in second] == [4, 5, 6, 7]
    assert all(p.params["round"] == 1 for p in second)


def test_proposal_params() -> None:
    s = make(steps=7)
    proposals = s.ask(4)
    ladder = geometric_ladder(0.01, 1.0, 4)
    for r, p in enumerate(proposals):
        assert p.params == {"replica": r, "temperature": ladder[r], "steps": 7, "round": 0, "checkpoint": None}
        json.dumps(p.params, allow_nan=False)
    assert ladder[0] == 0.01 and ladder[-1] == 1.0
    assert [round(b / a, 9) for a, b in zip(ladder, ladder[1:], strict=False)] == [round(100 ** (1 / 3), 9)] * 3


def test_ask_validates_n_and_stops_when_done() -> None:
    s = make(n_trials=4, replicas=2)  # rounds = 2
    with pytest.raises(ValueError, match="n=-1"):
        s.ask(-1)
    for _ in range(2):
        assert not s.done()
        tell_all(s, s.ask(2), [1.0, 2.0])
    assert s.done() and s.ask(3) == []


def test_rounds_option_overrides_n_trials() -> None:
    s = make(n_trials=1, replicas=2, rounds=3)
    for _ in range(3):
        tell_all(s, s.ask(2), [1.0, 2.0])
    assert s.done()


def test_double_unknown_and_report() -> None:
    s = make()
    proposals = s.ask(4)
    s.tell(Result(0, proposals[0].params, value=1.0))
    with pytest.raises(ValueError, match="trial_id=0: it was already told"):
        s.tell(Result(0, proposals[0].params, value=1.0))
    with pytest.raises(ValueError, match="trial_id=9"):
        s.tell(Result(9, {}, value=1.0))
    assert s.report(Result(1, proposals[1].params, value=0.5, step=1)) is Decision.CONTINUE
    with pytest.raises(ValueError, match="step"):
        s.report(Result(1, proposals[1].params, value=0.5))
    with pytest.raises(ValueError, match="trial_id=0"):
        s.report(Result(0, proposals[0].params, value=0.5, step=1))


# --- swaps ------------------------------------------------------------------------------------------


def test_swap_probability_formula() -> None:
    assert swap_probability(2.0, 1.0, 0.1, 1.0) == 1.0  # the colder replica has the higher energy
    assert swap_probability(1.0, 1.0, 0.1, 1.0) == 1.0
    assert swap_probability(1.0, 1.2, 0.1, 1.0) == pytest.approx(math.exp(-0.2 * 9.0))
    assert swap_probability(1.0, 1.2, 0.1, 1.0, k=2.0) == pytest.approx(math.exp(-0.2 * 4.5))
    assert swap_probability(0.0, 1e6, 1e-3, 1.0) == 0.0  # no overflow


def test_forced_swaps_permute_temperatures_with_even_odd_alternation() -> None:
    s = make(replicas=4, rounds=3)
    ladder = s.ladder
    # Round 0 (pairs (0,1), (2,3)): the colder replica of each pair is worse -> both swaps certain.
    tell_all(s, s.ask(4), [4.0, 3.0, 2.0, 1.0])
    assert by_replica(s) == [ladder[1], ladder[0], ladder[3], ladder[2]]
    assert s.history()[0]["swapped"] == [[0, 1], [2, 3]]
    # Round 1 (pair (1,2) only): rung 1 holds replica 0, rung 2 holds replica 3.
    proposals = s.ask(4)
    assert [p.params["temperature"] for p in proposals] == by_replica(s)  # replicas keep their id, not their T
    tell_all(s, proposals, [5.0, 0.0, 0.0, 0.0])
    assert by_replica(s) == [ladder[2], ladder[0], ladder[3], ladder[1]]
    assert s.history()[1]["swapped"] == [[1, 2]] and s.history()[1]["swaps_attempted"] == 1
    assert sorted(by_replica(s)) == ladder  # a permutation of the ladder, always
    assert all(p["checkpoint"] is None for p in (q.params for q in s.ask(4)))  # no weights move


def test_worse_to_colder_swaps_happen_at_the_boltzmann_rate() -> None:
    d, t_min, t_max = 0.01, 0.01, 1.0
    expected = math.exp(-d * (1 / t_min - 1 / t_max))  # ~0.37
    s = make(replicas=2, t_min=t_min, t_max=t_max, rounds=3000, seed=3)
    while not s.done():
        proposals = s.ask(2)
        cold = min(range(2), key=lambda r: proposals[r].params["temperature"])
        tell_all(s, proposals, [1.0 if r == cold else 1.0 + d for r in range(2)])  # the cold one is better
    (pair,) = s.swap_stats()
    assert pair["attempted"] == 1500  # K = 2: the only pair is tried in even rounds
    n = pair["attempted"]
    assert pair["rate"] == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / n))


def test_mode_max_negates_the_value_into_an_energy() -> None:
    s = make(replicas=2, mode=Mode.MAX)
    tell_all(s, s.ask(2), [0.9, 0.2])  # accuracy-like: the cold replica is better -> energy -0.9 < -0.2
    assert s.history()[0]["energy"] == {"r0": -0.9, "r1": -0.2}
    assert s.best().value == 0.9


# --- failures -----------------------------------------------------------------------------------------


def test_failed_replica_keeps_its_energy_and_sits_out_the_swaps() -> None:
    s = make(replicas=3, rounds=3)
    tell_all(s, s.ask(3), [1.0, 5.0, 0.5])  # round 0: pair (0,1) -> replica 1 worse and hotter: p < 1
    before = by_replica(s)
    proposals = s.ask(3)
    s.tell(Result(proposals[0].trial_id, proposals[0].params, status=Status.FAILED, reason="worker died"))
    s.tell(Result(proposals[1].trial_id, proposals[1].params, value=float("nan")))
    s.tell(Result(proposals[2].trial_id, proposals[2].params, value=0.1))
    entry = s.history()[1]
    assert entry["failed"] == [0, 1] and entry["swaps_attempted"] == 0
    assert entry["energy"] == {"r0": 1.0, "r1": 5.0, "r2": 0.1}  # previous energies kept
    assert by_replica(s) == before
    assert len(s.ask(3)) == 3  # the job goes on with every replica
    assert s.best().value == 0.1 and s.best().status is Status.OK


def test_best_is_the_lowest_energy_and_none_before_any() -> None:
    s = make(replicas=2)
    assert s.best() is None
    proposals = s.ask(2)
    s.tell(Result(proposals[0].trial_id, proposals[0].params, status=Status.FAILED))
    assert s.best() is None
    s.tell(Result(proposals[1].trial_id, proposals[1].params, value=0.7))
    tell_all(s, s.ask(2), [0.4, 0.9])
    assert s.best().value == 0.4 and s.best().params["round"] == 1


# --- history, statistics, state ------------------------------------------------------------------------


def test_history_and_swap_stats_are_plain_data() -> None:
    s = make(replicas=3, rounds=4)
    for _ in range(4):
        tell_all(s, s.ask(3), [3.0, 2.0, 1.0])
    history = s.history()
    assert [h["round"] for h in history] == [0, 1, 2, 3] and s.rounds() == history
    assert set(history[0]) == {"round", "temperature", "energy", "accept_rate", "failed", "swaps_attempted",
                               "swaps_accepted", "swapped", "best_energy"}  # fmt: skip
    assert history[0]["accept_rate"] == {"r0": 0.5, "r1": 0.5, "r2": 0.5}
    stats = s.swap_stats()
    assert [st["pair"] for st in stats] == [[0, 1], [1, 2]]
    assert sum(st["attempted"] for st in stats) == sum(h["swaps_attempted"] for h in history) == 4
    json.dumps([history, stats], allow_nan=False)


def blob(replica: int, round_: int) -> str:
    return base64.b64encode(f"state of replica {replica} after round {round_}".encode()).decode()


def test_checkpoints_ride_only_on_the_first_proposals_after_a_restore() -> None:
    config = SearchConfig(space={}, n_trials=12, seed=5, options={"replicas": 3, "t_min": 0.01, "t_max": 1.0})
    a = AnnealStrategy(config)
    for g in range(2):  # two full rounds, each replica checkpointed by the service after each
        proposals = a.ask(3)
        assert all(p.params["checkpoint"] is None for p in proposals)  # no restore: never a blob
        for p, e in zip(proposals, [1.0, 0.5, 0.8], strict=True):
            a.checkpoint_replica(p.params["replica"], blob(p.params["replica"], g))
            a.tell(Result(p.trial_id, p.params, value=e, metrics={"accept_rate": 0.3}))
    proposals = a.ask(2)  # round 2: replicas 0 and 1 handed out; 0 finishes, 1 is in flight
    a.checkpoint_replica(0, blob(0, 2))
    a.tell(Result(proposals[0].trial_id, proposals[0].params, value=0.9))

    state = json.loads(json.dumps(a.state(), allow_nan=False))
    assert state["checkpoints"] == {"0": blob(0, 2), "1": blob(1, 1), "2": blob(2, 1)}
    assert state["round"] == 2 and state["temperature_of"] == {str(r): t for r, t in enumerate(a.temperatures())}
    b = restore_strategy("anneal", config, state)

    (pending,) = b.pending()  # replica 1, in flight at the crash: it carries its last checkpoint
    assert pending.trial_id == 7 and pending.params["checkpoint"] == blob(1, 1)
    assert a.pending()[0].params["checkpoint"] is None
    (fresh,) = b.ask(3)  # replica 2's first proposal after the restore
    assert fresh.params["replica"] == 2 and fresh.params["checkpoint"] == blob(2, 1)
    assert [p.trial_id for p in a.ask(3)] == [fresh.trial_id]

    for s in (a, b):  # the same tells to both
        s.tell(Result(7, pending.params, value=0.6))
        s.tell(Result(fresh.trial_id, fresh.params, value=0.7))
    next_a, next_b = a.ask(3), b.ask(3)
    assert [p.params["checkpoint"] for p in next_b] == [blob(0, 2), None, None]  # replica 0 not rerun since
    assert [(p.trial_id, {**p.params, "checkpoint": None}) for p in next_b] == [(p.trial_id, p.params) for p in next_a]
    for s in (a, b):
        tell_all(s, next_a, [0.2, 0.3, 0.4])
    assert all(p.params["checkpoint"] is None for p in b.ask(3))
    assert a.state() == b.state()
    assert all(r.params["checkpoint"] is None for r in b.results)  # no blobs in the history


@pytest.mark.parametrize("chunk", [64, 3])  # 3: history and results freeze into chunks along the way
def test_restore_mid_round_resumes_identically(chunk: int, monkeypatch) -> None:
    monkeypatch.setattr(AnnealStrategy, "LOG_CHUNK", chunk)
    config = SearchConfig(space={}, n_trials=30, seed=11, options={"replicas": 5, "t_min": 0.001, "t_max": 0.1})
    a = AnnealStrategy(config)
    energies = iter([0.5 + 0.01 * ((7 * i) % 13) for i in range(200)])
    for _ in range(2):
        for p in a.ask(5):
            a.tell(Result(p.trial_id, p.params, value=next(energies)))
    half = a.ask(3)
    a.tell(Result(half[1].trial_id, half[1].params, value=next(energies)))
    b = AnnealStrategy.restore(config, json.loads(json.dumps(a.state())))
    assert b.temperatures() == a.temperatures() and b.history() == a.history() and b.best() == a.best()
    tells = [(half[0], next(energies)), (half[2], next(energies))]
    rest_a, rest_b = a.ask(5), b.ask(5)
    assert [p.trial_id for p in rest_a] == [p.trial_id for p in rest_b]
    tells += [(p, next(energies)) for p in rest_a]
    for s in (a, b):
        for p, e in tells:
            s.tell(Result(p.trial_id, {}, value=e))
        while not s.done():
            for p in s.ask(5):
                s.tell(Result(p.trial_id, p.params, value=1.0 / (1 + p.trial_id)))
    assert a.state() == b.state() and a.swap_stats() == b.swap_stats()
    if chunk == 3:
        state = a.state()
        assert len(state["results_chunks"]) == 10 and state["results"] == []  # 30 results
        assert len(state["history_chunks"]) == 2 and len(state["history"]) == 0  # 6 rounds


def test_restore_rejects_other_state_and_other_ladder() -> None:
    s = make(replicas=2)
    with pytest.raises(ValueError, match="nope"):
        AnnealStrategy.restore(s.config, dict(s.state(), strategy="nope"))
    other = SearchConfig(space={}, n_trials=40, options={"replicas": 2, "t_min": 0.5, "t_max": 1.0})
    with pytest.raises(ValueError, match="ladder"):
        AnnealStrategy.restore(other, s.state())


def test_checkpoint_replica_validates() -> None:
    s = make(replicas=2)
    with pytest.raises(ValueError, match="replica=2"):
        s.checkpoint_replica(2, "abc")
    with pytest.raises(ValueError, match="base64 text"):
        s.checkpoint_replica(0, b"abc")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"replica": 4}, "'replica'.*allowed are replicas"),
        ({"replicas": 0}, "`replicas`.*replicas=0"),
        ({"replicas": 2.5}, "replicas=2.5"),
        ({"t_min": -1.0}, "`t_min`.*t_min=-1.0"),
        ({"t_min": 0.5, "t_max": 0.1}, r"t_min <= t_max.*t_min=0.5, t_max=0.1"),
        ({"t_max": float("inf")}, "t_max=inf"),
        ({"steps": 0}, "steps=0"),
        ({"rounds": 0}, "rounds=0"),
        ({"boltzmann_k": 0}, "boltzmann_k=0"),
        ({"replicas": 50}, "n_trials=40, replicas=50"),
    ],
)
def test_bad_options_are_named_and_echoed(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**options)


def test_a_search_space_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"`space` must be empty.*\['lr'\]"):
        AnnealStrategy(SearchConfig(space={"lr": Float(0.1, 1.0)}))
    assert set(DEFAULTS) == {"replicas", "t_min", "t_max", "steps", "rounds", "boltzmann_k"}


# --- end to end with real chains (in-process, no service) -----------------------------------------------


def test_replica_exchange_with_real_chains_resumes_bit_for_bit() -> None:
    pytest.importorskip("torch")
    from models.anneal import run_replica
    from models.data import load_task

    task = load_task("xor")
    fixed = {"trainer": "cauchy", "hidden_layers": 1, "units": 8, "anneal_rho": 1.0}
    config = SearchConfig(space={}, n_trials=9, seed=2, options={"replicas": 3, "t_min": 0.001, "t_max": 0.1,
                                                                  "steps": 20})  # fmt: skip

    def drive(s: AnnealStrategy, chains: dict, stop_after_round: int | None = None) -> None:
        while not s.done():
            if stop_after_round is not None and len(s.history()) == stop_after_round:
                return
            for p in s.pending() or s.ask(3):
                chain, metrics = run_replica({**fixed, **p.params}, task, seed=p.params["replica"],
                                             chain=chains.get(p.params["replica"]))  # fmt: skip
                chains[p.params["replica"]] = chain
                s.checkpoint_replica(p.params["replica"], base64.b64encode(metrics.pop("__blob__")).decode())
                s.tell(Result(p.trial_id, p.params, value=metrics["energy"], metrics=metrics))

    straight = AnnealStrategy(config)
    drive(straight, {})
    interrupted = AnnealStrategy(config)
    drive(interrupted, {}, stop_after_round=1)
    resumed = AnnealStrategy.restore(config, json.loads(json.dumps(interrupted.state())))
    drive(resumed, {})  # fresh workers: every chain is rebuilt from its checkpoint
    assert resumed.history() == straight.history()
    assert resumed.best() == straight.best()
    assert straight.history()[-1]["best_energy"] < straight.history()[0]["best_energy"]  # the chains learn
