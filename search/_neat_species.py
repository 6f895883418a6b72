"""A faster ``neat.DefaultSpeciesSet``: the same species, with the distances computed in arrays.

neat-python's speciation calls ``genome.distance`` once per (representative, genome) pair:
about a thousand Python-level distance calls a generation on XOR with 150 genomes, a third
of what the coordinator does per generation once the evaluation is on workers.
:class:`FastSpeciesSet` lays the population's genes out once as arrays (one column per gene
key) and computes one representative's distance to every genome in a few array operations.

The results are the same to the bit, so the species are too:

- each gene's term is computed with the same float operations in the same order, and the
  terms are summed sequentially (``np.cumsum``) in the representative's gene order, as
  ``DefaultGenome.distance`` does with ``self`` the representative;
- neat-python caches each pair's distance under both orders, so a pair met a second time
  with the genomes swapped reuses the first value. Only old representatives that survive
  into the new population (elites) can be met that way; their rows are kept and reused.

Anything else (other gene or genome classes, a reporter that prints the mean genetic
distance, fewer genomes than species) takes ``DefaultSpeciesSet.speciate`` unchanged.
"""

from __future__ import annotations

from itertools import chain, count
from operator import attrgetter
from typing import Any

import neat
import numpy as np
from neat.reporting import BaseReporter
from neat.species import Species

from search._neat_fast import FastGenome, _plan

_DISTANCES = (neat.DefaultGenome.distance, FastGenome.distance)
_BIAS, _RESPONSE, _TIME_CONSTANT = attrgetter("bias"), attrgetter("response"), attrgetter("time_constant")
_WEIGHT, _ENABLED = attrgetter("weight"), attrgetter("enabled")


def _activations(genes: list) -> list[str]:
    return list(map(attrgetter("activation"), genes))


def _aggregations(genes: list) -> list[str]:
    return list(map(attrgetter("aggregation"), genes))


def _floats(get: Any, genes: list) -> np.ndarray:
    return np.fromiter(map(get, genes), dtype=float, count=len(genes))


def _columns(genes: list[dict]) -> dict[Any, int]:
    """A column per gene key found in any of ``genes``."""
    return dict(zip(set().union(*genes), count()))


class _Genes:
    """A list of genomes' node and connection genes as arrays: row = genome, column = gene key."""

    def __init__(self, genomes: list[Any]) -> None:
        nodes = [g.nodes for g in genomes]
        conns = [g.connections for g in genomes]
        self.node_col, self.conn_col = _columns(nodes), _columns(conns)
        node_genes = list(chain.from_iterable(n.values() for n in nodes))
        activation, aggregation = _activations(node_genes), _aggregations(node_genes)
        self.codes = dict(zip(set(activation) | set(aggregation), count()))
        code = self.codes.__getitem__
        self.nodes = _Table(nodes, self.node_col, [
            _floats(_BIAS, node_genes), _floats(_RESPONSE, node_genes), _floats(_TIME_CONSTANT, node_genes),
            np.fromiter(map(code, activation), dtype=np.int64, count=len(node_genes)),
            np.fromiter(map(code, aggregation), dtype=np.int64, count=len(node_genes)),
        ])  # fmt: skip
        conn_genes = list(chain.from_iterable(c.values() for c in conns))
        self.conns = _Table(conns, self.conn_col, [_floats(_WEIGHT, conn_genes), _floats(_ENABLED, conn_genes)])

    def row(self, genome: Any, coefficient: float, disjoint: float) -> np.ndarray:
        """``genome.distance(g)`` for every genome ``g`` of the table, as ``DefaultGenome`` computes it."""
        code = self.codes.get
        nodes = genome.nodes
        mine = [
            (n.bias, n.response, n.time_constant, code(n.activation, -1), code(n.aggregation, -1))
            for n in nodes.values()
        ]
        node_distance = self.nodes.distances(list(map(self.node_col.get, nodes)), mine, coefficient, disjoint)
        conns = genome.connections
        mine = [(c.weight, c.enabled) for c in conns.values()]
        return node_distance + self.conns.distances(list(map(self.conn_col.get, conns)), mine, coefficient, disjoint)


class _Table:
    """One gene kind (nodes or connections) of :class:`_Genes`."""

    def __init__(self, genes: list[dict], col: dict, values: list[np.ndarray]) -> None:
        n, width = len(genes), len(col)
        self.sizes = np.fromiter(map(len, genes), dtype=np.intp, count=n)
        rows = np.repeat(np.arange(n), self.sizes)
        keys = chain.from_iterable(genes)
        cols = np.fromiter(map(col.__getitem__, keys), dtype=np.intp, count=len(rows))
        self.present = np.zeros((n, width), dtype=bool)
        self.present[rows, cols] = True
        self.values = []
        for v in values:  # attribute -> (genome x key)
            table = np.zeros((n, width), dtype=v.dtype)
            table[rows, cols] = v
            self.values.append(table)

    def distances(self, cols: list[int | None], mine: list[tuple], coefficient: float, disjoint: float) -> Any:
        """The part of ``DefaultGenome.distance`` of this gene kind, from one genome to every row.

        ``cols``: each of the genome's genes' column (``None``: a key no row has), in its own
        gene order; ``mine``: their attribute values (and name codes), in the same order.
        """
        sizes, size = self.sizes, len(cols)
        keep = [j for j, c in enumerate(cols) if c is not None]
        if keep:
            at = np.asarray([cols[j] for j in keep], dtype=np.intp)
            own = np.asarray([mine[j] for j in keep], dtype=float).T  # attribute x gene
            values = [v[:, at] for v in self.values]
            if len(values) == 2:  # connections: |w1 - w2|, + 1.0 where `enabled` differs
                d = np.abs(own[0] - values[0]) + (own[1] != values[1])
            else:  # nodes: |bias| + |response|, + |time constant|, + 1.0 per differing name
                d = np.abs(own[0] - values[0]) + np.abs(own[1] - values[1])
                d += np.abs(own[2] - values[2])
                d += own[3] != values[3]
                d += own[4] != values[4]
            d *= coefficient
            present = self.present[:, at]
            d[~present] = 0.0
            total = np.cumsum(d, axis=1)[:, -1]  # sequential, in the genome's gene order
            shared = present.sum(axis=1)
        else:
            total = np.zeros(len(sizes))
            shared = np.zeros(len(sizes), dtype=np.intp)
        apart = (size - shared) + (sizes - shared)
        widest = np.maximum(sizes, size)
        out = (total + disjoint * apart) / np.maximum(widest, 1)
        out[widest == 0] = 0.0  # neither genome has genes of this kind: no term
        return out


def _wants_info(reporters: Any) -> bool:
    return any(type(r).info is not BaseReporter.info for r in getattr(reporters, "reporters", []))


class FastSpeciesSet(neat.DefaultSpeciesSet):
    """``neat.DefaultSpeciesSet`` with array distances: the same species (see the module docstring)."""

    def speciate(self, config: Any, population: dict[int, Any], generation: int) -> None:
        """Place genomes into species, exactly as ``DefaultSpeciesSet.speciate`` does."""
        genome_config = config.genome_config
        plan = _plan(genome_config)
        if (
            plan is None
            or _wants_info(self.reporters)
            or len(population) < max(2, len(self.species))
            or any(type(g).distance not in _DISTANCES for g in population.values())
            or any(type(s.representative).distance not in _DISTANCES for s in self.species.values())
        ):
            super().speciate(config, population, generation)
            return
        threshold = self.species_set_config.compatibility_threshold
        keys = sorted(population)
        index = {k: i for i, k in enumerate(keys)}
        genes = _Genes([population[k] for k in keys])
        coefficient, disjoint = plan.coefficient, plan.disjoint
        free = np.ones(len(keys), dtype=bool)
        # Old representatives in the population: their rows and who was unspeciated then (the
        # pairs neat-python's distance cache holds with them as `self`).
        selves: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def row(genome: Any) -> np.ndarray:
            d = genes.row(genome, coefficient, disjoint)
            at = index.get(genome.key)
            if at is not None:
                for other, (other_row, other_free) in selves.items():
                    if other != genome.key and other_free[at]:
                        d[index[other]] = other_row[at]  # cached with `other` as self
            return d

        reps: dict[int, int] = {}  # species id -> representative's index, in neat-python's order
        members: dict[int, list[int]] = {}
        columns: list[np.ndarray] = []
        for sid in sorted(self.species):
            rep = self.species[sid].representative
            d = row(rep)
            if rep.key in index:
                selves[rep.key] = (d, free.copy())
            at = int(np.argmin(np.where(free, d, np.inf)))
            reps[sid] = at
            members[sid] = [at]
            free[at] = False
        for at in reps.values():
            # An old representative chosen again (the usual case) has its row already: the same
            # values, since no later old representative met it while it was unspeciated.
            kept = selves.get(keys[at])
            columns.append(kept[0] if kept is not None else row(population[keys[at]]))
        rest = np.flatnonzero(free)
        while rest.size:
            if columns:
                d = np.stack(columns, axis=1)[rest]
                near = d < threshold
                found = near.any(axis=1)
                stop = int(np.argmin(found)) if not found.all() else rest.size
                choice = np.argmin(np.where(near[:stop], d[:stop], np.inf), axis=1)
                sids = list(reps)
                for at, c in zip(rest[:stop].tolist(), choice.tolist(), strict=True):
                    members[sids[c]].append(at)
            else:
                stop = 0
            if stop == rest.size:
                break
            at = int(rest[stop])
            sid = next(self.indexer)
            reps[sid] = at
            members[sid] = [at]
            columns.append(row(population[keys[at]]))
            rest = rest[stop + 1 :]
        self._update(population, generation, {sid: keys[at] for sid, at in reps.items()},
                     {sid: [keys[at] for at in ats] for sid, ats in members.items()})  # fmt: skip

    def _update(self, population: dict, generation: int, reps: dict[int, int], members: dict[int, list[int]]) -> None:
        """The end of ``DefaultSpeciesSet.speciate``: the species collection from the new partition."""
        self.genome_to_species = {}
        for sid in sorted(reps):
            s = self.species.get(sid)
            if s is None:
                s = Species(sid, generation)
                self.species[sid] = s
            for gid in members[sid]:
                self.genome_to_species[gid] = sid
            s.update(population[reps[sid]], {gid: population[gid] for gid in members[sid]})
