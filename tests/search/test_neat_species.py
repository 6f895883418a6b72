"""FastSpeciesSet: neat.DefaultSpeciesSet's species, from distances computed in arrays."""

from __future__ import annotations

import copy
import pickle
import random

import neat
import numpy as np
import pytest

from search._neat_fast import FastGenome
from search._neat_species import FastSpeciesSet, _Genes
from search._neat_state import dump_population, load_population
from search.neat import build_neat_config, resolve_neat_settings
from tests.search.test_neat_fast import HEAVY_MUTATION, xor_fitness


def config_for(settings: dict, species_set_type=None, genome_type=None):
    merged = {"fitness_threshold": None, **settings}
    return build_neat_config(resolve_neat_settings(merged, "xor"), genome_type, species_set_type)


def speciation_trace(species_set_type, settings: dict, seed: int, generations: int) -> list:
    """Per generation: each species' members (in order) and representative; then the final genomes."""
    config = config_for(settings, species_set_type)
    random.seed(seed)
    pop = neat.Population(config)
    trace: list = []

    def evaluate(genomes: list, cfg) -> None:
        xor_fitness(genomes, cfg)
        trace.append([(sid, list(s.members), s.representative.key) for sid, s in pop.species.species.items()])
        trace.append(sorted(pop.species.genome_to_species.items()))

    try:
        pop.run(evaluate, generations)
    except RuntimeError as err:  # too many species for the population: must happen to both alike
        trace.append(str(err))
    trace.append(sorted(pop.population))
    return trace


@pytest.mark.parametrize(
    ("settings", "seed"),
    [
        ({}, 0),
        ({}, 9),
        ({"species": {"compatibility_threshold": 1.2}, "reproduction": {"elitism": 4}}, 1),
        ({**HEAVY_MUTATION, "species": {"compatibility_threshold": 2.0}}, 4),
    ],
    ids=["defaults-seed0", "defaults-seed9", "many-species-elitism", "heavy-mutation"],
)
def test_same_species_as_default_species_set(settings: dict, seed: int) -> None:
    stock = speciation_trace(neat.DefaultSpeciesSet, settings, seed, 30)
    fast = speciation_trace(FastSpeciesSet, settings, seed, 30)
    assert fast == stock
    assert max(len(entry) for entry in fast[:-1:2]) > 2  # several species were formed and kept


def test_rows_equal_genome_distance_bit_for_bit() -> None:
    config = config_for(HEAVY_MUTATION)
    random.seed(11)
    pop = neat.Population(config)
    pop.run(xor_fitness, 12)
    earlier = [g for g in pop.population.values()][:5]
    pop.run(xor_fitness, 3)
    genomes = [pop.population[k] for k in sorted(pop.population)]
    outsider = copy.deepcopy(genomes[0])  # with genes no genome of the table has
    node = copy.deepcopy(next(iter(outsider.nodes.values())))
    node.key, node.bias = 999, 0.25
    outsider.nodes[999] = node
    conn = copy.deepcopy(next(iter(outsider.connections.values())))
    conn.key = (-1, 999)
    outsider.connections[conn.key] = conn
    table = _Genes(genomes)
    gc = config.genome_config
    for me in [*genomes[:10], *earlier, outsider]:
        row = table.row(me, gc.compatibility_weight_coefficient, gc.compatibility_disjoint_coefficient)
        expected = np.array([neat.DefaultGenome.distance(me, g, gc) for g in genomes])
        assert row.tolist() == expected.tolist()  # exact floats, not approximately
    assert (-1, 999) not in table.conn_col and 999 not in table.node_col


def test_genomes_without_connections() -> None:
    config = config_for({"genome": {"initial_connection": "unconnected"}})
    random.seed(0)
    pop = neat.Population(config)
    genomes = list(pop.population.values())
    assert all(not g.connections for g in genomes)
    gc = config.genome_config
    row = _Genes(genomes).row(genomes[0], gc.compatibility_weight_coefficient, gc.compatibility_disjoint_coefficient)
    assert row.tolist() == [neat.DefaultGenome.distance(genomes[0], g, gc) for g in genomes]


def test_falls_back_to_default_code_with_a_reporter_that_prints(capsys: pytest.CaptureFixture) -> None:
    config = config_for({})
    random.seed(3)
    pop = neat.Population(config)
    pop.add_reporter(neat.StdOutReporter(False))
    pop.run(xor_fitness, 2)
    assert "Mean genetic distance" in capsys.readouterr().out  # DefaultSpeciesSet's own report


def test_default_species_set_state_restores_as_fast() -> None:
    old = config_for({}, neat.DefaultSpeciesSet)
    random.seed(5)
    pop = neat.Population(old)
    pop.run(xor_fitness, 3)
    assert type(pop.species) is neat.DefaultSpeciesSet
    blob = dump_population(pop, random.getstate())
    restored, _ = load_population(config_for({}), blob)
    assert type(restored.species) is FastSpeciesSet
    assert [list(s.members) for s in restored.species.species.values()] == [
        list(s.members) for s in pop.species.species.values()
    ]
    assert b"_neat_species" not in pickle.dumps(pop.species)


def test_strategy_config_uses_fast_classes() -> None:
    config = config_for({})
    assert config.genome_type is FastGenome and config.species_set_type is FastSpeciesSet
    stock = config_for({}, neat.DefaultSpeciesSet, neat.DefaultGenome)
    assert stock.genome_type is neat.DefaultGenome and stock.species_set_type is neat.DefaultSpeciesSet
