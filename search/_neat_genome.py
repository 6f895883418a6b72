"""NEAT genomes as plain data: the format that crosses machines (no torch, no neat import).

A genome dict is JSON-able and equals its own JSON round trip::

    {"key": 12, "inputs": [-1, -2], "outputs": [0],
     "nodes": {"0": {"bias": 0.1, "response": 1.0, "activation": "sigmoid", "aggregation": "sum"},
               "5": {...}},
     "connections": [[-1, 0, 0.5, true], [-2, 5, 1.3, false], ...]}

``connections`` are ``[in, out, weight, enabled]`` in the genome's own order (the order
neat-python sums in). ``models.neat_torch`` evaluates batches of these dicts.
"""

from __future__ import annotations

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


def genome_size(genome: dict[str, Any]) -> tuple[int, int]:
    """``(nodes, enabled connections)`` of a genome dict, as neat-python's ``genome.size()``."""
    return len(genome["nodes"]), sum(1 for c in genome["connections"] if c[3])
