"""``neat.DefaultReproduction.reproduce`` in steps, so that a generation's first genomes can be evaluated early.

:class:`SteppedReproduction` runs neat-python 2's ``reproduce`` — the same statements, the
same random numbers in the same order — but builds the new population a genome at a time on
request: :meth:`~SteppedReproduction.advance` makes genomes until there are ``n``. The NEAT
strategy hands the first batch to a worker while the rest of the generation is still being
made. ``tests/search`` checks it against ``DefaultReproduction.reproduce`` generation by
generation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

_END = object()


class SteppedReproduction:
    """One call of ``DefaultReproduction.reproduce(config, species, pop_size, generation)``, in steps.

    The constructor does everything before the first genome (stagnation, adjusted fitness,
    spawn amounts; no random numbers). :attr:`population` fills in the order ``reproduce``
    fills its result; :attr:`total` is its final size. Run the steps with neat-python's
    random stream in place (the strategy's ``_neat_random``).
    """

    def __init__(self, reproduction: Any, config: Any, species: Any, pop_size: int, generation: int) -> None:
        self.population: dict[int, Any] = {}
        self.total = 0
        self.extinct = False  # no species left (``reproduce`` returned ``{}``)
        self._steps: Iterator[None] | None = None
        self._prepare(reproduction, config, species, pop_size, generation)

    @property
    def done(self) -> bool:
        """Whether the whole population has been made."""
        return self._steps is None

    def advance(self, n: int) -> None:
        """Make genomes until there are ``n`` (or all of them: then :attr:`done`)."""
        while self._steps is not None:
            made = len(self.population)
            if made >= n and made < self.total:
                return
            if next(self._steps, _END) is _END:  # past the last genome: only the loops' ends remain
                self._steps = None

    def finish(self) -> dict[int, Any]:
        """Make the rest; the new population (``reproduce``'s return value)."""
        self.advance(math.inf)  # type: ignore[arg-type]
        return self.population

    def _prepare(self, rep: Any, config: Any, species: Any, pop_size: int, generation: int) -> None:
        from neat.math_util import mean

        # neat/reproduction.py, DefaultReproduction.reproduce, up to the loop over species.
        config.genome_config.innovation_tracker = rep.innovation_tracker
        rep.innovation_tracker.reset_generation()
        all_fitnesses = []
        remaining_species = []
        for stag_sid, stag_s, stagnant in rep.stagnation.update(species, generation):
            if stagnant:
                rep.reporters.species_stagnant(stag_sid, stag_s)
            else:
                all_fitnesses.extend(m.fitness for m in stag_s.members.values())
                remaining_species.append(stag_s)
        if not remaining_species:
            species.species = {}
            self.extinct = True
            return
        min_fitness = min(all_fitnesses)
        max_fitness = max(all_fitnesses)
        fitness_range = max(1.0, max_fitness - min_fitness)
        for afs in remaining_species:
            msf = mean([m.fitness for m in afs.members.values()])
            af = (msf - min_fitness) / fitness_range
            afs.adjusted_fitness = af
        adjusted_fitnesses = [s.adjusted_fitness for s in remaining_species]
        avg_adjusted_fitness = mean(adjusted_fitnesses)
        rep.reporters.info(f"Average adjusted fitness: {avg_adjusted_fitness:.3f}")
        previous_sizes = [len(s.members) for s in remaining_species]
        min_species_size = rep.reproduction_config.min_species_size
        min_species_size = max(min_species_size, rep.reproduction_config.elitism)
        spawn_amounts = rep.compute_spawn(adjusted_fitnesses, previous_sizes, pop_size, min_species_size)
        spawn_amounts = rep._adjust_spawn_exact(spawn_amounts, pop_size, min_species_size)
        elitism = rep.reproduction_config.elitism
        self.total = sum(max(spawn, elitism) for spawn in spawn_amounts)
        species.species = {}
        self._steps = self._loop(rep, config, species, spawn_amounts, remaining_species)

    def _loop(self, rep: Any, config: Any, species: Any, spawn_amounts: list, remaining: list) -> Iterator[None]:
        # neat/reproduction.py, DefaultReproduction.reproduce, the loop over species.
        new_population = self.population
        for spawn, s in zip(spawn_amounts, remaining, strict=False):
            spawn = max(spawn, rep.reproduction_config.elitism)
            assert spawn > 0
            old_members = list(s.members.items())
            s.members = {}
            species.species[s.key] = s
            old_members.sort(reverse=True, key=lambda x: (x[1].fitness, x[0]))
            if rep.reproduction_config.elitism > 0:
                for i, m in old_members[: rep.reproduction_config.elitism]:
                    new_population[i] = m
                    spawn -= 1
                    yield
            if spawn <= 0:
                continue
            repro_cutoff = int(math.ceil(rep.reproduction_config.survival_threshold * len(old_members)))
            repro_cutoff = max(repro_cutoff, 2)
            old_members = old_members[:repro_cutoff]
            while spawn > 0:
                spawn -= 1
                parent1_id, parent1 = random.choice(old_members)
                parent2_id, parent2 = random.choice(old_members)
                gid = next(rep.genome_indexer)
                child = config.genome_type(gid)
                child.configure_crossover(parent1, parent2, config.genome_config)
                child.mutate(config.genome_config)
                new_population[gid] = child
                rep.ancestors[gid] = (parent1_id, parent2_id)
                yield


def stepped(reproduction: Any) -> bool:
    """Whether ``reproduction`` is neat-python's own (the code :class:`SteppedReproduction` copies)."""
    import neat

    return type(reproduction) is neat.DefaultReproduction
