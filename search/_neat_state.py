"""A neat-python population as one compressed base64 pickle, for :meth:`search.neat.NeatStrategy.state`.

neat-python 2 keeps part of a run's state outside the ``Population`` object — the id
counters (``itertools.count``, which cannot be pickled past their position) on the
reproduction, genome config and species set, and the innovation tracker on the genome
config — so saving and restoring a run means saving these too and putting them back where
neat-python looks for them.
"""

from __future__ import annotations

import base64
import itertools
import pickle
import zlib
from typing import Any

_ZLIB = "zlib:"  # then base64 of the zlib-compressed pickle (level 1: ~3x smaller, ~0.6 ms)


def _peek(obj: Any, attr: str) -> int | None:
    """The next value of the ``itertools.count`` at ``obj.attr`` (left as it was), or ``None``."""
    counter = getattr(obj, attr)
    if counter is None:
        return None
    value = next(counter)
    setattr(obj, attr, itertools.count(value))
    return value


def dump_population(pop: Any, rng_state: Any) -> str:
    """``pop`` (a ``neat.Population``) with its counters, innovations and ``rng_state``, as text.

    The text is ``"zlib:"`` and the base64 of the zlib-compressed pickle (:func:`population_data` reads it).

    Reporters are left out (they are not part of a run's state).
    """
    species = pop.species
    reporters = species.reporters
    counters = {
        "genome": _peek(pop.reproduction, "genome_indexer"),
        "node": _peek(pop.config.genome_config, "node_indexer"),
        "species": _peek(species, "indexer"),
    }
    species.reporters, species.indexer = None, None
    try:
        data = {
            "population": pop.population,
            "species": species,
            "generation": pop.generation,
            "best_genome": pop.best_genome,
            "innovation": pop.reproduction.innovation_tracker,
            "counters": counters,
            "random": rng_state,
        }
        raw = pickle.dumps(data, protocol=4)
    finally:
        species.reporters, species.indexer = reporters, itertools.count(counters["species"])
    return _ZLIB + base64.b64encode(zlib.compress(raw, 1)).decode("ascii")


def population_data(blob: str) -> dict[str, Any]:
    """The dict a :func:`dump_population` text holds (also the uncompressed base64 of earlier states).

    ``blob`` is trusted data (the job store's own checkpoint).
    """
    if blob.startswith(_ZLIB):
        raw = zlib.decompress(base64.b64decode(blob[len(_ZLIB) :]))
    else:
        raw = base64.b64decode(blob)
    return pickle.loads(raw)  # noqa: S301 - the store's own checkpoint


def load_population(config: Any, blob: str) -> tuple[Any, Any]:
    """The ``neat.Population`` (on ``config``, whose genome config gets the counters back) and the random state.

    ``blob`` is :func:`dump_population`'s text: trusted data (the job store's own checkpoint).
    """
    import neat

    data = population_data(blob)
    species = data["species"]
    if type(species) is not config.species_set_type and issubclass(config.species_set_type, type(species)):
        species.__class__ = config.species_set_type  # a state saved before FastSpeciesSet: the same data
    pop = neat.Population(config, (data["population"], species, data["generation"]))
    pop.best_genome = data["best_genome"]
    tracker = data["innovation"]
    pop.reproduction.innovation_tracker = tracker
    config.genome_config.innovation_tracker = tracker
    counters = data["counters"]
    pop.reproduction.genome_indexer = itertools.count(counters["genome"])
    if counters["node"] is not None:
        config.genome_config.node_indexer = itertools.count(counters["node"])
    pop.species.indexer = itertools.count(counters["species"])
    version, words, gauss = data["random"]
    return pop, (version, tuple(words), gauss)
