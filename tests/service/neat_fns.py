"""NEAT fitness functions for the service tests (imported by Ray workers as ``neat_fns``)."""

from __future__ import annotations

from models.neat_tasks import xor_fitness


def xor_failing_at_generation_1(batch, config):
    """XOR's fitness, except that every batch of generation 1 raises."""
    if config.get("generation") == 1:
        raise RuntimeError("fitness service unavailable in generation 1")
    return xor_fitness(batch)
