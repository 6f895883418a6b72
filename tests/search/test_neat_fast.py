"""FastGenome: neat.DefaultGenome's populations, generation by generation, from the same seed."""

from __future__ import annotations

import pickle
import random

import neat
import pytest
from neat.graphs import creates_cycle

from models.neat_tasks import XOR_INPUTS, XOR_OUTPUTS
from search._neat_fast import FastGenome, _plan, _reaches, plain_genome
from search.base import Mode, SearchConfig
from search.neat import NeatStrategy, build_neat_config, resolve_neat_settings

HEAVY_MUTATION = {
    "genome": {
        "single_structural_mutation": True,
        "activation_mutate_rate": 0.3,
        "activation_options": "sigmoid tanh relu",
        "aggregation_mutate_rate": 0.2,
        "aggregation_options": "sum product max",
        "enabled_mutate_rate": 0.3,
        "enabled_rate_to_true_add": 0.05,
        "bias_replace_rate": 0.2,
        "weight_replace_rate": 0.2,
        "weight_init_type": "uniform",
        "response_mutate_rate": 0.3,
        "conn_delete_prob": 0.3,
        "node_delete_prob": 0.2,
    }
}


def xor_fitness(genomes: list, config) -> None:
    for _, g in genomes:
        net = neat.nn.FeedForwardNetwork.create(g, config)
        g.fitness = round(
            4.0 - sum((net.activate(x)[0] - y) ** 2 for x, y in zip(XOR_INPUTS, XOR_OUTPUTS, strict=True)), 9
        )


def snapshot(pop) -> tuple:
    """Everything a generation holds, in the genomes' own dict orders."""
    genomes = [
        (
            key,
            type(g) in (neat.DefaultGenome, FastGenome),
            g.fitness,
            [(k, n.key, n.bias, n.response, n.activation, n.aggregation, n.time_constant) for k, n in g.nodes.items()],
            [(k, c.key, c.innovation, c.weight, c.enabled) for k, c in g.connections.items()],
            [list(vars(n)) for n in g.nodes.values()] + [list(vars(c)) for c in g.connections.values()],
        )
        for key, g in pop.population.items()
    ]
    species = [(sid, list(s.members), s.representative.key) for sid, s in pop.species.species.items()]
    return genomes, species


def evolve(genome_type, settings: dict, seed: int, generations: int, feed_forward: bool = True) -> list[tuple]:
    stock = genome_type is neat.DefaultGenome  # all of neat-python's own classes, or all of ours
    config = build_neat_config(
        resolve_neat_settings({"fitness_threshold": None, **settings}, "xor"),
        genome_type,
        neat.DefaultSpeciesSet if stock else None,
    )
    config.genome_config.feed_forward = feed_forward
    random.seed(seed)
    pop = neat.Population(config)
    snaps: list[tuple] = []

    def evaluate(genomes: list, cfg) -> None:
        if feed_forward:
            xor_fitness(genomes, cfg)
        else:
            for _, g in genomes:
                g.fitness = round(random.random(), 9)
        snaps.append(snapshot(pop))

    pop.run(evaluate, generations)
    snaps.append((random.getstate(),))
    return snaps


@pytest.mark.parametrize(
    ("settings", "seed", "feed_forward"),
    [({}, 0, True), ({}, 7, True), (HEAVY_MUTATION, 3, True), ({}, 5, False)],
    ids=["defaults-seed0", "defaults-seed7", "heavy-mutation", "recurrent"],
)
def test_same_populations_as_default_genome(settings: dict, seed: int, feed_forward: bool) -> None:
    stock = evolve(neat.DefaultGenome, settings, seed, 40, feed_forward)
    fast = evolve(FastGenome, settings, seed, 40, feed_forward)
    assert len(fast) == len(stock) == 41
    for generation, (a, b) in enumerate(zip(stock, fast, strict=True)):
        assert a == b, f"generation {generation} differs"
    # the genomes grew: crossover, structural mutation and speciation were all exercised
    assert max(len(g[4]) for g in fast[-2][0]) > 4
    assert max(len(snap[1]) for snap in fast[:-1]) > 1


def test_distance_equals_default_genome_bit_for_bit() -> None:
    config = build_neat_config(resolve_neat_settings({"fitness_threshold": None, **HEAVY_MUTATION}, "xor"))
    random.seed(11)
    pop = neat.Population(config)
    pop.run(lambda genomes, cfg: xor_fitness(genomes, cfg), 15)
    genomes = list(pop.population.values())
    gc = config.genome_config
    pairs = [(a, b) for a in genomes[:40] for b in genomes[:40]]
    assert all(FastGenome.distance(a, b, gc) == neat.DefaultGenome.distance(a, b, gc) for a, b in pairs)
    assert any(FastGenome.distance(a, b, gc) > 0 for a, b in pairs)


def test_reaches_agrees_with_creates_cycle() -> None:
    rng = random.Random(3)
    for _ in range(300):
        nodes = list(range(-2, 8))
        edges: list[tuple[int, int]] = []
        for _ in range(rng.randrange(0, 20)):  # a random DAG: edges only from lower to higher rank
            a, b = sorted(rng.sample(nodes, 2))
            edges.append((a, b))
        successors: dict[int, list[int]] = {}
        for a, b in edges:
            successors.setdefault(a, []).append(b)
        i, o = rng.choice(nodes), rng.choice(nodes)
        assert (i == o or _reaches(successors, o, i)) == creates_cycle(edges, (i, o))


def test_other_gene_types_take_default_genome_code() -> None:
    class Node(neat.genes.DefaultNodeGene):
        pass

    config = build_neat_config(resolve_neat_settings({"fitness_threshold": None}, "xor"))
    config.genome_config.node_gene_type = Node
    assert _plan(config.genome_config) is None
    random.seed(2)
    pop = neat.Population(config)
    pop.run(xor_fitness, 5)
    # crossover made these nodes: DefaultGenome's code builds the config's gene class, ours would not
    assert {type(n) for g in pop.population.values() for n in g.nodes.values()} == {Node}
    assert _plan(build_neat_config(resolve_neat_settings({}, "xor")).genome_config) is not None


def test_strategy_uses_fast_genome_and_hands_out_plain_ones() -> None:
    s = NeatStrategy(SearchConfig(space={}, mode=Mode.MAX, seed=0, options={"task": "xor", "neat": {"pop_size": 20}}))
    assert all(type(g) is FastGenome for g in s._pop.population.values())
    genome = s._pop.population[next(iter(s._pop.population))]
    genome.fitness = 1.0
    plain = plain_genome(genome)
    assert type(plain) is neat.DefaultGenome
    assert plain.nodes is genome.nodes and plain.connections is genome.connections and plain.fitness == 1.0
    data = pickle.dumps(plain, protocol=4)
    assert b"_neat_fast" not in data  # loads with neat-python alone
    assert type(pickle.loads(data)) is neat.DefaultGenome
