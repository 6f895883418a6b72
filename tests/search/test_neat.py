"""The `neat` strategy: ask/tell over generations, settings, failures, checkpoints, XOR."""

from __future__ import annotations

import base64
import itertools
import json
import pickle
import random
import time

import neat
import pytest

from models.neat_tasks import XOR_INPUTS, XOR_OUTPUTS, evaluate_batch
from models.neat_torch import genome_to_dict
from search import make_strategy, restore_strategy
from search._neat_genome import columns_to_dicts
from search._neat_state import population_data
from search.base import Decision, Mode, Result, SearchConfig, Status
from search.neat import NEAT_DEFAULTS, NeatStrategy, build_neat_config, neat_settings_issues, resolve_neat_settings


def make(seed: int = 0, generations: int = 50, batches: int = 3, pop: int = 30, **options) -> NeatStrategy:
    neat_settings = options.pop("neat", {})
    options = {"task": "xor", "batches": batches, "generations": generations, **options}
    options["neat"] = {"pop_size": pop, **neat_settings}
    return make_strategy("neat", SearchConfig(space={}, mode=Mode.MAX, seed=seed, options=options))


def run_batch(proposal, task: str = "xor") -> Result:
    metrics = evaluate_batch({"task": task, "dtype": "float64", **proposal.params})
    return Result(proposal.trial_id, proposal.params, value=metrics["batch_best"], metrics=metrics)


def step(s: NeatStrategy, n: int = 100) -> None:
    """Evaluate and tell whatever the strategy asks for right now."""
    for p in s.ask(n):
        s.tell(run_batch(p))


def run(s: NeatStrategy) -> NeatStrategy:
    while not s.done():
        step(s)
    return s


def all_keys(proposals) -> list[int]:
    return [k for p in proposals for k in p.params["genomes"]["keys"]]


def test_ask_tell_cycle_and_batches_cover_population_once():
    s = make(pop=31, batches=3)
    first = s.ask(2)
    assert [p.trial_id for p in first] == [0, 1]
    rest = s.ask(5)
    assert [p.trial_id for p in rest] == [2]
    assert s.ask(1) == []
    proposals = first + rest
    keys = all_keys(proposals)
    assert sorted(keys) == sorted(s._pop.population) and len(set(keys)) == 31
    assert sorted(len(p.params["genomes"]["keys"]) for p in proposals) == [10, 10, 11]
    for p in proposals:
        assert set(p.params) == {"generation", "seed", "genomes"} and p.params["generation"] == 0
        assert json.loads(json.dumps(p.params, allow_nan=False)) == p.params
        sent = columns_to_dicts(p.params["genomes"])  # the genomes as columns: exactly the genome dicts
        assert sent == [genome_to_dict(s._pop.population[k], s._neat_config) for k in p.params["genomes"]["keys"]]
    assert [p.trial_id for p in s.pending()] == [0, 1, 2]


def test_reproduction_happens_on_the_last_tell():
    s = make(pop=30, batches=3)
    proposals = s.ask(3)
    before = set(s._pop.population)
    s.tell(run_batch(proposals[0]))
    s.tell(run_batch(proposals[2]))
    assert s.generation == 0 and s.ask(3) == [] and s.generation_stats() == []
    s.tell(run_batch(proposals[1]))
    assert s.generation == 1 and len(s.generation_stats()) == 1
    nxt = s.ask(3)
    assert [p.trial_id for p in nxt] == [3, 4, 5]
    assert all(p.params["generation"] == 1 for p in nxt)
    assert set(all_keys(nxt)) != before and len(all_keys(nxt)) == 30


def test_failed_batch_gets_worst_fitness_and_generation_goes_on():
    s = make(pop=30, batches=3)
    a, b, c = s.ask(3)
    s.tell(run_batch(a))
    s.tell(Result(b.trial_id, b.params, status=Status.FAILED, reason="worker died"))
    good = run_batch(c)
    good.metrics.pop(f"fitness.{c.params['genomes']['keys'][0]}")  # one genome without a fitness
    s.tell(good)
    stats = s.generation_stats()[0]
    assert stats["failed"] == 11 and s.generation == 1
    told = [v for k, v in {**run_batch(a).metrics, **good.metrics}.items() if k.startswith("fitness.")]
    assert s.best().value == max(told)
    assert s.best().params["key"] not in all_keys([b])


def test_failed_fitness_option_and_all_failed():
    s = make(pop=10, batches=2, failed_fitness=-5.0)
    for p in s.ask(2):
        s.tell(Result(p.trial_id, p.params, status=Status.FAILED))
    stats = s.generation_stats()[0]
    assert stats["best"] == stats["mean"] == -5.0 and stats["failed"] == 10
    assert s.best() is None
    assert len(s.ask(2)) == 2  # the search goes on


def test_report_and_unknown_trials():
    s = make()
    p = s.ask(1)[0]
    assert s.report(Result(p.trial_id, p.params, value=1.0, step=1)) is Decision.CONTINUE
    with pytest.raises(ValueError, match="step"):
        s.report(Result(p.trial_id, p.params, value=1.0))
    s.tell(run_batch(p))
    with pytest.raises(ValueError, match="trial_id=0"):
        s.tell(run_batch(p))
    with pytest.raises(ValueError, match="trial_id=9"):
        s.tell(Result(9, {}, value=1.0))
    with pytest.raises(ValueError, match="n=-1"):
        s.ask(-1)


def test_generation_budget_and_stats():
    s = run(make(generations=3, neat={"fitness_threshold": None}))
    assert s.done() and s.ended is None and s.ask(5) == []
    stats = s.generation_stats()
    assert [st["generation"] for st in stats] == [0, 1, 2]
    assert [st["evaluations"] for st in stats] == [30, 60, 90]
    for st in stats:
        assert sum(st["species_sizes"]) == 30 and st["species"] == len(st["species_sizes"])
        assert st["best"] >= st["mean"] and st["std"] >= 0 and st["mean_nodes"] >= 1 and st["mean_connections"] >= 0
    json.dumps(stats, allow_nan=False)
    # n_trials is the generation budget when `generations` is not given
    s = NeatStrategy(
        SearchConfig(space={}, mode=Mode.MAX, n_trials=2, options={"task": "xor", "neat": {"pop_size": 10}})
    )
    assert len(run(s).generation_stats()) == 2


def test_matches_neat_python_population_run():
    """Same seed, same fitness: the same generations as neat.Population.run, generation by generation."""
    settings = resolve_neat_settings({"pop_size": 50}, "xor")
    config = build_neat_config(settings)
    bests: list[float] = []

    def eval_genomes(genomes, cfg):
        for _, g in genomes:
            net = neat.nn.FeedForwardNetwork.create(g, cfg)
            g.fitness = 4.0
            for xi, xo in zip(XOR_INPUTS, XOR_OUTPUTS, strict=True):
                g.fitness -= (net.activate(xi)[0] - xo) ** 2
        bests.append(max(g.fitness for _, g in genomes))

    outer = random.getstate()
    random.seed(4)
    try:
        neat.Population(config).run(eval_genomes, 25)
    finally:
        random.setstate(outer)
    ours = run(make(seed=4, generations=25, pop=50, batches=4))
    assert [st["best"] for st in ours.generation_stats()] == pytest.approx(bests, abs=1e-12)


def test_global_random_untouched():
    random.seed(123)
    expected = [random.random() for _ in range(3)]
    random.seed(123)
    s = make()
    step(s)
    step(s)
    assert [random.random() for _ in range(3)] == expected


def finish_generation_partly(s: NeatStrategy) -> list:
    """Tell all but the last batch of the current generation; return the one still in flight."""
    proposals = s.ask(10)
    for p in proposals[:-1]:
        s.tell(run_batch(p))
    return proposals[-1:]


@pytest.mark.parametrize("mid_generation", [False, True])
def test_restore_continues_identically(mid_generation):
    a = run(make(seed=11, generations=12))
    b = make(seed=11, generations=12)
    for _ in range(5):
        step(b)
    in_flight = finish_generation_partly(b) if mid_generation else []
    config = b.config
    state = json.loads(json.dumps(b.state(), allow_nan=False))
    del b  # the process "dies"
    c = restore_strategy("neat", config, state)
    assert [p.trial_id for p in c.pending()] == [p.trial_id for p in in_flight]
    assert c.pending() == in_flight
    for p in c.pending():
        c.tell(run_batch(p))
    run(c)
    assert c.generation_stats() == a.generation_stats()
    assert c.best() == a.best()
    assert comparable(c.state()) == comparable(a.state())


def test_state_population_is_compressed_and_earlier_plain_pickles_restore():
    a = run(make(seed=4, generations=6))
    b = make(seed=4, generations=6)
    for _ in range(3):
        step(b)
    state = json.loads(json.dumps(b.state()))
    assert state["population"].startswith("zlib:")
    raw = pickle.dumps(population_data(state["population"]), protocol=4)
    assert len(state["population"]) < 0.7 * len(base64.b64encode(raw))  # ~3x at 150 genomes, less at 30
    legacy = dict(state, population=base64.b64encode(raw).decode("ascii"))  # as states were written before
    c = restore_strategy("neat", b.config, legacy)
    run(c)
    assert c.generation_stats() == a.generation_stats()
    assert comparable(c.state()) == comparable(a.state())


def test_one_population_pickle_per_generation_and_restore_after_idle():
    """As the scheduler does: state() at every dispatch and every tell. Speciation (idle) draws
    no random numbers, so the pickle taken before it stays the state (a restore re-runs it)
    and each generation writes one population pickle, not two."""
    a = run(make(seed=5, generations=8))
    b = make(seed=5, generations=8)
    pickles: list[str] = []
    saved = None
    while not b.done():
        proposals = b.ask(10)
        pickles.append(b.state()["population"])
        b.idle()
        for i, p in enumerate(proposals):
            b.tell(run_batch(p))
            state = b.state()
            pickles.append(state["population"])
            if b.generation == 4 and i == 0 and saved is None:
                saved = json.loads(json.dumps(state, allow_nan=False))  # speciated, one batch told
    distinct = [k for k, _ in itertools.groupby(pickles)]
    # one per generation (8), and the last generation with its fitness; before, 2 per generation from the 2nd on
    assert len(distinct) == len(set(distinct)) == 9
    # speciation (of generation 4, numbered 3 as neat-python passes it) is still to run on restore
    assert saved is not None and saved["unspeciated"] == 3 and len(saved["pending"]) == 2
    c = restore_strategy("neat", b.config, saved)
    for p in c.pending():
        c.tell(run_batch(p))
    run(c)
    assert c.generation_stats() == a.generation_stats()
    assert comparable(c.state()) == comparable(a.state())


class Order(neat.reporting.BaseReporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def start_generation(self, generation: int) -> None:
        self.events.append(("start", generation))

    def end_generation(self, config, population, species_set) -> None:
        self.events.append(("end", len(species_set.genome_to_species)))


def test_idle_speciates_while_the_batches_are_out():
    """The runner calls idle() once a generation's batches are dispatched: speciation happens
    there instead of in the last tell, with the same evolution and reporter order."""
    a = run(make(seed=5, generations=8))
    b = make(seed=5, generations=8)
    order = Order()
    b.add_reporter(order)
    speciated = []
    while not b.done():
        proposals = b.ask(100)
        species = b._pop.species
        before = dict(species.genome_to_species)
        b.idle()
        speciated.append(species.genome_to_species != before)
        assert set(species.genome_to_species) == set(b._pop.population)
        for p in proposals:
            b.tell(run_batch(p))
    assert speciated == [False] + [True] * 7  # generation 0 is speciated by neat.Population itself
    assert b.generation_stats() == a.generation_stats()
    assert b.best() == a.best()
    # added after generation 0 started; each end_generation sees the whole population speciated
    assert order.events == [e for g in range(1, 8) for e in (("end", 30), ("start", g))]


def comparable(state: dict) -> dict:
    """A state with its population pickle decoded into plain values (pickles of equal objects may
    differ in how they share memo entries)."""
    data = population_data(state["population"])
    species = data["species"]
    population = {
        key: (genome_to_dict(g, build_neat_config(resolve_neat_settings({}, "xor"))), g.fitness)
        for key, g in data["population"].items()
    }
    return dict(
        state,
        population={
            "population": population,
            "species": {
                sid: (sorted(s.members), s.representative.key, s.fitness_history, s.last_improved, s.created)
                for sid, s in species.species.items()
            },
            "generation": data["generation"],
            "best": data["best_genome"].key,
            "innovation": data["innovation"].global_counter,
            "counters": data["counters"],
            "random": data["random"],
        },
    )


def test_statistics_freeze_into_chunks_that_never_change(monkeypatch):
    monkeypatch.setattr(NeatStrategy, "STATS_CHUNK", 4)
    a = run(make(seed=3, generations=10, pop=20))
    b = make(seed=3, generations=10, pop=20)
    seen: list[list[str]] = []
    while not b.done():
        step(b)
        seen.append(b.state()["stats_chunks"])
    state = b.state()
    assert len(state["stats_chunks"]) == 2 and len(state["stats"]) == 2  # 10 generations = 4 + 4 + 2
    assert all(later[: len(earlier)] == earlier for earlier, later in itertools.pairwise(seen))  # append-only
    c = restore_strategy("neat", b.config, json.loads(json.dumps(state)))
    assert c.generation_stats() == a.generation_stats() == b.generation_stats()
    assert c.state()["stats_chunks"] == state["stats_chunks"]


def test_restore_with_a_larger_budget_goes_on():
    a = run(make(seed=2, generations=6, neat={"fitness_threshold": None}))
    b = run(make(seed=2, generations=3, neat={"fitness_threshold": None}))
    config = SearchConfig(space={}, mode=Mode.MAX, seed=2, options=dict(b.config.options, generations=6))
    c = run(NeatStrategy.restore(config, json.loads(json.dumps(b.state()))))
    assert c.generation_stats() == a.generation_stats()


def test_restore_rejects_other_state():
    s = make()
    with pytest.raises(ValueError, match="'bayes'"):
        NeatStrategy.restore(s.config, dict(s.state(), strategy="bayes"))


def test_extinction():
    # Constant fitness never improves: with max_stagnation 1 every species goes stagnant at once.
    settings = {"reset_on_extinction": False, "stagnation": {"max_stagnation": 1}}
    s = make(pop=20, batches=1, neat=settings)
    while not s.done():
        for p in s.ask(1):
            metrics = {f"fitness.{k}": 1.0 for k in p.params["genomes"]["keys"]}
            s.tell(Result(p.trial_id, p.params, value=1.0, metrics=metrics))
    assert s.ended == "extinct" and len(s.generation_stats()) < 50
    s = make(pop=20, batches=1, generations=6, neat=dict(settings, reset_on_extinction=True))
    while not s.done():
        for p in s.ask(1):
            metrics = {f"fitness.{k}": 1.0 for k in p.params["genomes"]["keys"]}
            s.tell(Result(p.trial_id, p.params, value=1.0, metrics=metrics))
    assert s.ended is None and len(s.generation_stats()) == 6


def test_solves_xor_in_process():
    started = time.perf_counter()
    s = run(make(seed=0, generations=300, pop=150, batches=2))
    assert s.ended == "solved"
    best = s.best()
    assert best.value >= 3.9 and best.status is Status.OK
    out = evaluate_batch({"task": "xor", "genomes": [best.params], "dtype": "float64"})
    assert out[f"fitness.{best.params['key']}"] == pytest.approx(best.value)
    assert time.perf_counter() - started < 20


# -- settings --------------------------------------------------------------------------------------


def neat_known_keys() -> dict[str, set[str]]:
    """Every parameter neat-python 2's classes read, by our section names."""
    from neat.genes import DefaultConnectionGene, DefaultNodeGene

    gc = build_neat_config(resolve_neat_settings({}, "xor")).genome_config
    genome = {p.name for p in gc._params}
    genome |= {p.name for p in DefaultNodeGene.get_config_params() + DefaultConnectionGene.get_config_params()}
    return {
        "": {p.name for p in neat.Config._Config__params} - {"seed"},  # the job's seed drives the RNG
        "genome": genome,
        "species": {p.name for p in neat.DefaultSpeciesSet.parse_config({"compatibility_threshold": "1"})._params},
        "stagnation": {p.name for p in neat.DefaultStagnation.parse_config({})._params},
        "reproduction": {p.name for p in neat.DefaultReproduction.parse_config({})._params},
    }


def test_defaults_are_complete():
    known = neat_known_keys()
    top = {k for k, v in NEAT_DEFAULTS.items() if not isinstance(v, dict)}
    assert top == known[""]
    for section in ("genome", "species", "stagnation", "reproduction"):
        assert set(NEAT_DEFAULTS[section]) == known[section], section
    for task in ("xor", "cartpole", "wine", "digits", "breast_cancer"):
        config = build_neat_config(resolve_neat_settings({}, task))
        assert config.pop_size == 150 and config.genome_config.feed_forward
    config = build_neat_config(resolve_neat_settings({"genome": {"num_inputs": 3, "num_outputs": 2}}, "function"))
    assert config.no_fitness_termination and config.genome_config.num_inputs == 3


def test_settings_reach_neat_python():
    raw = {
        "pop_size": 40,
        "fitness_threshold": 3.5,
        "genome": {"conn_add_prob": 0.25, "activation_options": "tanh sigmoid", "activation_default": "tanh",
                   "initial_connection": "partial_direct 0.5", "enabled_default": True},
        "species": {"compatibility_threshold": 2.0},
        "reproduction": {"elitism": 1},
    }  # fmt: skip
    config = build_neat_config(resolve_neat_settings(raw, "xor"))
    gc = config.genome_config
    assert (config.pop_size, config.fitness_threshold, gc.conn_add_prob) == (40, 3.5, 0.25)
    assert gc.activation_options == ["tanh", "sigmoid"] and gc.initial_connection == "partial_direct"
    assert gc.connection_fraction == 0.5 and config.species_set_config.compatibility_threshold == 2.0
    assert config.reproduction_config.elitism == 1


@pytest.mark.parametrize(
    ("raw", "path", "allowed"),
    [
        ({"pop_size": 1}, "pop_size", "integer >= 2"),
        ({"popsize": 10}, "popsize", "not a known setting; allowed: fitness_criterion"),
        ({"genome": {"conn_add_prob": 1.5}}, "genome.conn_add_prob", "in [0, 1]"),
        ({"genome": {"conn_ad_prob": 0.5}}, "genome.conn_ad_prob", "not a known setting"),
        ({"genome": 3}, "genome", "mapping of [DefaultGenome] settings"),
        ({"genome": {"activation_options": ["sigmoid", "swish"]}}, "genome.activation_options", "'sigmoid'"),
        ({"genome": {"activation_default": "tanh"}}, "genome.activation_default", "activation_options"),
        ({"genome": {"feed_forward": False}}, "genome.feed_forward", "feed-forward"),
        ({"genome": {"initial_connection": "partial 2"}}, "genome.initial_connection", "fraction"),
        ({"genome": {"weight_min_value": 5.0, "weight_max_value": 1.0}}, "genome.weight_max_value", ">="),
        ({"genome": {"num_inputs": 3}}, "genome.num_inputs", "must be 2 for task 'xor'"),
        ({"fitness_threshold": float("nan")}, "fitness_threshold", "finite number, or null"),
        ({"fitness_criterion": "best"}, "fitness_criterion", "'max', 'min', 'mean'"),
        ({"stagnation": {"species_fitness_func": "sum"}}, "stagnation.species_fitness_func", "'median2'"),
        ({"reproduction": {"elitism": 500}}, "reproduction.elitism", "<= pop_size"),
        ({"reproduction": {"survival_threshold": 0}}, "reproduction.survival_threshold", "(0, 1]"),
        ({"seed": 3}, "seed", "not a known setting"),
        ({"species": {"compatibility_threshold": True}}, "species.compatibility_threshold", "> 0"),
    ],
)
def test_settings_issues(raw, path, allowed):
    issues = neat_settings_issues(raw, task="xor")
    assert len(issues) == 1, issues
    got_path, value, why = issues[0]
    assert got_path == path and allowed in why
    assert why.startswith(("must", "is not"))
    with pytest.raises(ValueError, match=path.replace(".", r"\.")):
        make(neat=raw)


def test_settings_issues_without_task_and_not_a_mapping():
    assert [p for p, _, _ in neat_settings_issues({}, task=None)] == ["genome.num_inputs", "genome.num_outputs"]
    assert neat_settings_issues({"genome": {"num_inputs": 4, "num_outputs": 2}}) == []
    assert neat_settings_issues([1, 2]) == [("", [1, 2], "must be a mapping of NEAT settings")]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": Mode.MIN}, "Mode.MAX"),
        ({"space": {"x": 1}}, "`space` must be empty"),
        ({"options": {"task": "xor", "batch": 2}}, "unknown \\['batch'\\]"),
        ({"options": {"task": "pong"}}, "`task` must be one of"),
        ({"options": {"task": "xor", "batches": 0}}, "batches=0"),
        ({"options": {"task": "xor", "failed_fitness": float("inf")}}, "failed_fitness=inf"),
    ],
)
def test_bad_config(kwargs, match):
    config = {"space": {}, "mode": Mode.MAX, "options": {"task": "xor"}} | kwargs
    with pytest.raises(ValueError, match=match):
        NeatStrategy(SearchConfig(**config))
