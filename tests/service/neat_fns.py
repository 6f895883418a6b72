"""NEAT fitness functions for the service tests (imported by Ray workers as ``neat_fns``)."""

from __future__ import annotations

import time

from models.neat_tasks import xor_fitness


def xor_failing_at_generation_1(batch, config):
    """XOR's fitness, except that every batch of generation 1 raises."""
    if config.get("generation") == 1:
        raise RuntimeError("fitness service unavailable in generation 1")
    return xor_fitness(batch)


def xor_slow_in_generation_3(batch, config):
    """XOR's fitness; every batch of generation 3 takes half a second (a window to kill the scheduler in)."""
    if config.get("generation") == 3:
        time.sleep(0.5)
    return xor_fitness(batch)


def xor_dying_once_in_generation_1(batch, config):
    """XOR's fitness; a batch of generation 1 kills its worker on its first attempt (a marker file remembers)."""
    import os

    if config.get("generation") == 1:
        marker = os.path.join(config["marker_dir"], str(batch.keys[0]))
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
    return xor_fitness(batch)
