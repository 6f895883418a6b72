"""NEAT genomes as plain data: the format that crosses machines (no torch, no neat import).

A genome dict is JSON-able and equals its own JSON round trip::

    {"key": 12, "inputs": [-1, -2], "outputs": [0],
     "nodes": {"0": {"bias": 0.1, "response": 1.0, "activation": "sigmoid", "aggregation": "sum"},
               "5": {...}},
     "connections": [[-1, 0, 0.5, true], [-2, 5, 1.3, false], ...]}

``connections`` are ``[in, out, weight, enabled]`` in the genome's own order (the order
neat-python sums in). ``models.neat_torch`` evaluates batches of these dicts.

A batch travels to a worker as *columns* (:func:`genome_columns`): the same data, one flat
list per field for the whole batch, also plain JSON. It pickles and unpickles several times
faster than a list of dicts, and a worker lays it out with array operations;
:func:`columns_to_dicts` gives back exactly the dicts of :func:`genome_to_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def genome_to_dict(genome: Any, config: Any) -> dict[str, Any]:
    """A neat-python genome as plain JSON data (what a worker receives).

    Args:
        genome: A ``neat.DefaultGenome``.
        config: The ``neat.Config`` (or its ``genome_config``).

    Returns:
        ``{"key": int, "inputs": [-1, -2, ...], "outputs": [0, 1, ...],
        "nodes": {"<node key>": {"bias", "response", "activation", "aggregation"}},
        "connections": [[in, out, weight, enabled], ...]}``. Node keys are strings so that
        the dict equals its own JSON round trip; connections keep the genome's order (the
        order neat-python sums in).

    Example:
        >>> import neat  # doctest: +SKIP
        >>> genome_to_dict(genome, config)["inputs"]  # doctest: +SKIP
        [-1, -2]
    """
    gc = getattr(config, "genome_config", config)
    return {
        "key": int(genome.key),
        "inputs": [int(k) for k in gc.input_keys],
        "outputs": [int(k) for k in gc.output_keys],
        "nodes": {
            str(k): {
                "bias": float(n.bias),
                "response": float(n.response),
                "activation": str(n.activation),
                "aggregation": str(n.aggregation),
            }
            for k, n in genome.nodes.items()
        },
        "connections": [
            [int(c.key[0]), int(c.key[1]), float(c.weight), bool(c.enabled)] for c in genome.connections.values()
        ],
    }


COLUMNS = "crucible.genome_columns/1"
"""The ``format`` tag of :func:`genome_columns`'s dict."""


def genome_columns(genomes: Sequence[Any], config: Any) -> dict[str, Any]:
    """A batch of neat-python genomes as columns: flat lists, one per field, in batch order.

    Args:
        genomes: ``neat.DefaultGenome`` s (or subclasses), all of one config.
        config: The ``neat.Config`` (or its ``genome_config``).

    Returns:
        ``{"format": COLUMNS, "keys", "inputs", "outputs", "node_counts", "node_keys", "bias",
        "response", "activation", "aggregation", "functions", "connection_counts", "in", "out",
        "weight", "enabled"}``: per genome its key and its numbers of nodes and connections; per
        node (genome after genome, each genome's nodes in its own order) its key, bias,
        response and its activation's and aggregation's index in ``functions``; per connection
        (likewise) its ends, weight and enabled flag. Plain JSON data.

    Example:
        >>> cols = genome_columns([genome], config)  # doctest: +SKIP
        >>> columns_to_dicts(cols) == [genome_to_dict(genome, config)]  # doctest: +SKIP
        True
    """
    gc = getattr(config, "genome_config", config)
    keys, node_counts, node_keys, bias, response, act, agg = [], [], [], [], [], [], []
    conn_counts, ins, outs, weight, enabled = [], [], [], [], []
    index: dict[str, int] = {}
    for genome in genomes:
        keys.append(int(genome.key))
        nodes, conns = genome.nodes, genome.connections
        node_counts.append(len(nodes))
        conn_counts.append(len(conns))
        for k, n in nodes.items():
            node_keys.append(int(k))
            bias.append(float(n.bias))
            response.append(float(n.response))
            a, b = str(n.activation), str(n.aggregation)
            act.append(index.setdefault(a, len(index)))
            agg.append(index.setdefault(b, len(index)))
        for c in conns.values():
            i, o = c.key
            ins.append(int(i))
            outs.append(int(o))
            weight.append(float(c.weight))
            enabled.append(bool(c.enabled))
    return {
        "format": COLUMNS,
        "keys": keys,
        "inputs": [int(k) for k in gc.input_keys],
        "outputs": [int(k) for k in gc.output_keys],
        "node_counts": node_counts,
        "node_keys": node_keys,
        "bias": bias,
        "response": response,
        "activation": act,
        "aggregation": agg,
        "functions": list(index),
        "connection_counts": conn_counts,
        "in": ins,
        "out": outs,
        "weight": weight,
        "enabled": enabled,
    }


def is_columns(value: Any) -> bool:
    """Whether ``value`` is a batch in :func:`genome_columns`'s form."""
    return isinstance(value, Mapping) and value.get("format") == COLUMNS


def columns_to_dicts(columns: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The genome dicts (:func:`genome_to_dict`'s, equal to them) of a batch in columns."""
    names = columns["functions"]
    inputs, outputs = list(columns["inputs"]), list(columns["outputs"])
    out, n_at, c_at = [], 0, 0
    for key, n_nodes, n_conns in zip(
        columns["keys"], columns["node_counts"], columns["connection_counts"], strict=True
    ):
        nodes = {
            str(columns["node_keys"][j]): {
                "bias": float(columns["bias"][j]),
                "response": float(columns["response"][j]),
                "activation": names[columns["activation"][j]],
                "aggregation": names[columns["aggregation"][j]],
            }
            for j in range(n_at, n_at + n_nodes)
        }
        conns = [
            [int(columns["in"][j]), int(columns["out"][j]), float(columns["weight"][j]), bool(columns["enabled"][j])]
            for j in range(c_at, c_at + n_conns)
        ]
        out.append(
            {"key": int(key), "inputs": list(inputs), "outputs": list(outputs), "nodes": nodes, "connections": conns}
        )
        n_at, c_at = n_at + n_nodes, c_at + n_conns
    return out


def genome_size(genome: dict[str, Any]) -> tuple[int, int]:
    """``(nodes, enabled connections)`` of a genome dict, as neat-python's ``genome.size()``."""
    return len(genome["nodes"]), sum(1 for c in genome["connections"] if c[3])
