"""A faster ``neat.DefaultGenome``: the same genomes from the same random numbers, in less time.

neat-python's reproduction is the bulk of a NEAT generation once the evaluation is spread
over workers (measured on XOR, 200 generations: crossover 38%, mutation 30% and the
speciation distances 14% of neat-python's serial loop, the evaluation 13%). Its hot loops
look every mutation rate up on the config by name, per gene, per attribute, and crossover
checks each inherited connection for a cycle by rescanning all the connections inherited so
far (quadratic in the genome's size).

:class:`FastGenome` overrides :meth:`configure_crossover`, :meth:`mutate` and
:meth:`distance` with loops that read the rates once per config and keep the inherited
connections' successors as they go. It draws the same random numbers in the same order,
builds genes with the same attributes in the same order and adds floats in the same order,
so a population evolves exactly as with ``neat.DefaultGenome`` (``tests/search`` compares
them generation by generation). Genes of any other type, or attributes other than
neat-python's defaults, take ``DefaultGenome``'s own code.
"""

from __future__ import annotations

import warnings
import weakref
from random import choice, gauss, random
from typing import Any

import neat
from neat.attributes import BoolAttribute, FloatAttribute, StringAttribute
from neat.genes import DefaultConnectionGene, DefaultNodeGene

_PLANS: weakref.WeakKeyDictionary[Any, _Plan | None] = weakref.WeakKeyDictionary()


def _mutator(attr: Any, config: Any) -> Any:
    """``attr.mutate_value(v, config)`` as a function of ``v`` alone, with the config read once."""
    if type(attr) is FloatAttribute:
        rate, power = getattr(config, attr.mutate_rate_name), getattr(config, attr.mutate_power_name)
        either = getattr(config, attr.replace_rate_name) + rate
        lo, hi = getattr(config, attr.min_value_name), getattr(config, attr.max_value_name)
        init = attr.init_value

        def mutate_float(v: Any) -> Any:
            r = random()
            if r < rate:
                return max(min(v + gauss(0.0, power), hi), lo)
            if r < either:
                return init(config)
            return v

        return mutate_float
    if type(attr) is BoolAttribute:
        rate = getattr(config, attr.mutate_rate_name)
        if_true = rate + getattr(config, attr.rate_to_false_add_name)
        if_false = rate + getattr(config, attr.rate_to_true_add_name)

        def mutate_bool(v: Any) -> Any:
            r = if_true if v else if_false
            if r > 0 and random() < r:
                return random() < 0.5
            return v

        return mutate_bool
    if type(attr) is StringAttribute:
        rate, options = getattr(config, attr.mutate_rate_name), getattr(config, attr.options_name)

        def mutate_string(v: Any) -> Any:
            if rate > 0 and random() < rate:
                return choice(options)
            return v

        return mutate_string
    raise TypeError(type(attr))


class _Plan:
    """A genome config's gene layouts and per-attribute mutators (built once per config)."""

    def __init__(self, config: Any) -> None:
        self.node_names = tuple(a.name for a in DefaultNodeGene._gene_attributes)
        self.node_mutators = tuple((a.name, _mutator(a, config)) for a in DefaultNodeGene._gene_attributes)
        self.weight, self.enabled = (_mutator(a, config) for a in DefaultConnectionGene._gene_attributes)
        self.coefficient = config.compatibility_weight_coefficient
        self.disjoint = config.compatibility_disjoint_coefficient


def _standard(config: Any) -> bool:
    """Whether ``config`` uses neat-python's default gene classes with their default attributes."""
    if config.node_gene_type is not DefaultNodeGene or config.connection_gene_type is not DefaultConnectionGene:
        return False
    kinds = (FloatAttribute, BoolAttribute, StringAttribute)
    node = [(a.name, type(a)) for a in DefaultNodeGene._gene_attributes]
    conn = [(a.name, type(a)) for a in DefaultConnectionGene._gene_attributes]
    return (
        all(kind in kinds for _, kind in node + conn)
        and [n for n, _ in node] == ["bias", "response", "activation", "aggregation", "time_constant"]
        and conn == [("weight", FloatAttribute), ("enabled", BoolAttribute)]
    )


def _plan(config: Any) -> _Plan | None:
    """The :class:`_Plan` of a genome config, or ``None`` where the fast paths do not apply."""
    try:
        return _PLANS[config]
    except KeyError:
        plan = _Plan(config) if _standard(config) else None
        _PLANS[config] = plan
        return plan


def _reaches(successors: dict[int, list[int]], start: int, target: int) -> bool:
    """Whether ``target`` can be reached from ``start`` along ``successors``."""
    stack, seen = [start], {start}
    while stack:
        for node in successors.get(stack.pop(), ()):
            if node == target:
                return True
            if node not in seen:
                seen.add(node)
                stack.append(node)
    return False


def _conn_copy(gene: Any) -> Any:
    new = DefaultConnectionGene.__new__(DefaultConnectionGene)
    new.key, new.innovation, new.weight, new.enabled = gene.key, gene.innovation, gene.weight, gene.enabled
    return new


def _conn_cross(g1: Any, g2: Any) -> Any:
    new = DefaultConnectionGene.__new__(DefaultConnectionGene)
    new.key, new.innovation = g1.key, g1.innovation
    new.weight = g1.weight if random() > 0.5 else g2.weight
    new.enabled = g1.enabled if random() > 0.5 else g2.enabled
    if (not g1.enabled or not g2.enabled) and random() < 0.75:
        new.enabled = False
    return new


def _node_copy(gene: Any, names: tuple[str, ...]) -> Any:
    new = DefaultNodeGene.__new__(DefaultNodeGene)
    new.key = gene.key
    for name in names:
        setattr(new, name, getattr(gene, name))
    return new


def _node_cross(g1: Any, g2: Any, names: tuple[str, ...]) -> Any:
    new = DefaultNodeGene.__new__(DefaultNodeGene)
    new.key = g1.key
    for name in names:
        setattr(new, name, getattr(g1 if random() > 0.5 else g2, name))
    return new


class FastGenome(neat.DefaultGenome):
    """``neat.DefaultGenome`` with faster crossover, mutation and distance (same results, see the module)."""

    def configure_crossover(self, genome1: Any, genome2: Any, config: Any) -> None:
        """``DefaultGenome.configure_crossover``: the same genes from the same random numbers."""
        plan = _plan(config)
        if plan is None:
            return super().configure_crossover(genome1, genome2, config)
        parent1, parent2 = (genome1, genome2) if genome1.fitness > genome2.fitness else (genome2, genome1)
        by_innovation1 = {cg.innovation: cg for cg in parent1.connections.values()}
        by_innovation2 = {cg.innovation: cg for cg in parent2.connections.values()}
        connections, feed_forward = self.connections, config.feed_forward
        successors: dict[int, list[int]] = {}
        for a, b in connections:
            successors.setdefault(a, []).append(b)
        # The same set, built the same way, so that it iterates in DefaultGenome's order.
        for innovation in set(by_innovation1.keys()) | set(by_innovation2.keys()):
            cg1 = by_innovation1.get(innovation)
            if cg1 is None:
                continue  # genes only in the less fit parent are not inherited
            cg2 = by_innovation2.get(innovation)
            if cg2 is None:
                new = _conn_copy(cg1)
            elif cg1.key != cg2.key:
                warnings.warn(
                    f"Innovation number collision: innovation {innovation} assigned to both "
                    f"{cg1.key} and {cg2.key}. Treating as disjoint genes.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                new = _conn_copy(cg1)
            else:
                new = _conn_cross(cg1, cg2)
            i, o = new.key
            if feed_forward and (i == o or _reaches(successors, o, i)):
                continue
            connections[new.key] = new
            successors.setdefault(i, []).append(o)
        nodes2, names = parent2.nodes, plan.node_names
        for key, ng1 in parent1.nodes.items():
            ng2 = nodes2.get(key)
            self.nodes[key] = _node_copy(ng1, names) if ng2 is None else _node_cross(ng1, ng2, names)

    def mutate(self, config: Any) -> None:
        """``DefaultGenome.mutate``: the same structural and attribute mutations from the same random numbers."""
        plan = _plan(config)
        if plan is None:
            return super().mutate(config)
        if config.single_structural_mutation:
            div = max(
                1, (config.node_add_prob + config.node_delete_prob + config.conn_add_prob + config.conn_delete_prob)
            )
            r = random()
            if r < (config.node_add_prob / div):
                self.mutate_add_node(config)
            elif r < ((config.node_add_prob + config.node_delete_prob) / div):
                self.mutate_delete_node(config)
            elif r < ((config.node_add_prob + config.node_delete_prob + config.conn_add_prob) / div):
                self.mutate_add_connection(config)
            elif r < (
                (config.node_add_prob + config.node_delete_prob + config.conn_add_prob + config.conn_delete_prob) / div
            ):
                self.mutate_delete_connection()
        else:
            if random() < config.node_add_prob:
                self.mutate_add_node(config)
            if random() < config.node_delete_prob:
                self.mutate_delete_node(config)
            if random() < config.conn_add_prob:
                self.mutate_add_connection(config)
            if random() < config.conn_delete_prob:
                self.mutate_delete_connection()
        weight, enabled = plan.weight, plan.enabled
        for cg in self.connections.values():
            cg.weight = weight(cg.weight)
            cg.enabled = enabled(cg.enabled)
        mutators = plan.node_mutators
        for ng in self.nodes.values():
            for name, mutate in mutators:
                setattr(ng, name, mutate(getattr(ng, name)))

    def distance(self, other: Any, config: Any) -> float:
        """``DefaultGenome.distance``: the same sums in the same order."""
        plan = _plan(config)
        if plan is None:
            return super().distance(other, config)
        coefficient, disjoint_coefficient = plan.coefficient, plan.disjoint
        node_distance = 0.0
        nodes1, nodes2 = self.nodes, other.nodes
        # The node and connection parts are inlined, not one helper with a per-gene function:
        # a call per homologous gene would cost about as much as the distance itself.
        if nodes1 or nodes2:
            disjoint = len(nodes2.keys() - nodes1.keys())
            for k1, n1 in nodes1.items():
                n2 = nodes2.get(k1)
                if n2 is None:
                    disjoint += 1
                else:
                    d = abs(n1.bias - n2.bias) + abs(n1.response - n2.response)
                    d += abs(n1.time_constant - n2.time_constant)
                    if n1.activation != n2.activation:
                        d += 1.0
                    if n1.aggregation != n2.aggregation:
                        d += 1.0
                    node_distance += d * coefficient
            node_distance = (node_distance + (disjoint_coefficient * disjoint)) / max(len(nodes1), len(nodes2))
        connection_distance = 0.0
        conns1, conns2 = self.connections, other.connections
        if conns1 or conns2:
            disjoint = len(conns2.keys() - conns1.keys())
            for k1, c1 in conns1.items():
                c2 = conns2.get(k1)
                if c2 is None:
                    disjoint += 1
                else:
                    d = abs(c1.weight - c2.weight)
                    if c1.enabled != c2.enabled:
                        d += 1.0
                    connection_distance += d * coefficient
            connection_distance = (connection_distance + (disjoint_coefficient * disjoint)) / max(
                len(conns1), len(conns2)
            )
        return node_distance + connection_distance


def plain_genome(genome: Any) -> Any:
    """``genome`` as a ``neat.DefaultGenome`` (the same genes), e.g. to pickle for users of neat-python alone."""
    if type(genome) is neat.DefaultGenome:
        return genome
    plain = neat.DefaultGenome.__new__(neat.DefaultGenome)
    plain.__dict__.update(genome.__dict__)
    return plain
