"""SteppedReproduction: neat-python's reproduce in steps; the strategy hands out genomes as they are made."""

from __future__ import annotations

import itertools
import json
import random

import neat
import pytest

from search import restore_strategy
from search._neat_reproduce import SteppedReproduction, stepped
from search.neat import build_neat_config, resolve_neat_settings
from tests.search.test_neat import make, run, run_batch
from tests.search.test_neat_fast import HEAVY_MUTATION, snapshot, xor_fitness


def evolve(settings: dict, seed: int, generations: int, steps: bool) -> list:
    """Snapshots of a neat-python run whose reproduce is stock or SteppedReproduction (in uneven steps)."""
    config = build_neat_config(resolve_neat_settings({"fitness_threshold": None, **settings}, "xor"))
    random.seed(seed)
    pop = neat.Population(config)
    if steps:
        sizes = itertools.cycle([1, 7, 30, 2])

        def reproduce(config, species, pop_size, generation):
            making = SteppedReproduction(pop.reproduction, config, species, pop_size, generation)
            while not making.done:
                making.advance(len(making.population) + next(sizes))
            assert making.finish() is making.population and len(making.population) == making.total
            return making.population

        pop.reproduction.reproduce = reproduce
    snaps: list = []

    def evaluate(genomes: list, cfg) -> None:
        xor_fitness(genomes, cfg)
        snaps.append(snapshot(pop))
        snaps.append(sorted(pop.reproduction.ancestors.items())[-5:])

    pop.run(evaluate, generations)
    snaps.append((random.getstate(), pop.reproduction.innovation_tracker.global_counter))
    return snaps


@pytest.mark.parametrize(
    ("settings", "seed"),
    [({}, 0), (HEAVY_MUTATION, 3), ({"stagnation": {"max_stagnation": 3}, "reproduction": {"elitism": 1}}, 5)],
    ids=["defaults", "heavy-mutation", "stagnation"],
)
def test_same_populations_as_reproduce(settings: dict, seed: int) -> None:
    assert evolve(settings, seed, 25, steps=True) == evolve(settings, seed, 25, steps=False)


def test_only_neat_pythons_own_reproduction_is_stepped() -> None:
    config = build_neat_config(resolve_neat_settings({}, "xor"))
    pop = neat.Population(config)
    assert stepped(pop.reproduction)

    class Mine(neat.DefaultReproduction):
        pass

    assert not stepped(Mine(config.reproduction_config, pop.reporters, pop.reproduction.stagnation))


def test_first_batch_goes_out_before_the_generation_is_made() -> None:
    s = make(seed=2, pop=40, batches=2)
    for p in s.ask(2):
        s.tell(run_batch(p))
    assert s.generation == 1
    making = s._making
    assert making is not None and making.total == 40 and not making.population  # reproduction waits for ask
    first = s.ask(1)
    assert len(first[0].params["genomes"]["keys"]) == 20
    assert s._making is making and len(making.population) == 20 and not making.done  # half made
    second = s.ask(1)
    assert len(second[0].params["genomes"]["keys"]) == 20 and s._making is None
    keys = [k for p in first + second for k in p.params["genomes"]["keys"]]
    assert keys == list(s._pop.population)


@pytest.mark.parametrize("when", ["before-ask", "after-first-batch"])
def test_state_while_genomes_are_being_made_restores_identically(when: str) -> None:
    a = run(make(seed=7, generations=8, batches=2))
    b = make(seed=7, generations=8, batches=2)
    for _ in range(3):
        for p in b.ask(2):
            b.tell(run_batch(p))
    out = b.ask(1) if when == "after-first-batch" else []
    assert b._making is not None
    state = json.loads(json.dumps(b.state(), allow_nan=False))
    assert b._making is None  # state() made the rest first
    c = restore_strategy("neat", b.config, state)
    assert c.pending() == out
    for p in c.pending():
        c.tell(run_batch(p))
    run(c)
    assert c.generation_stats() == a.generation_stats() and c.best() == a.best()
