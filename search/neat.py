"""NEAT: a neat-python 2 population, stepped one generation per ask/tell round.

neat-python is imported on first use, so ``import search`` stays cheap and
:func:`neat_settings_issues` / :data:`NEAT_DEFAULTS` (re-exported here) need neither
neat-python nor torch.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import random
import statistics
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from search._chunks import FrozenChunks
from search._neat_genome import genome_columns, genome_to_dict
from search._neat_settings import (
    NEAT_DEFAULTS,
    build_neat_config,
    check_neat_options,
    neat_settings_issues,
    resolve_neat_settings,
)
from search._neat_state import dump_population, load_population
from search._trials import decode_result, encode_result
from search.base import Decision, Proposal, Result, SearchConfig, Status

if TYPE_CHECKING:
    from search._neat_reproduce import SteppedReproduction

STATE_VERSION = 1
_RANDOM_LOCK = threading.Lock()


class NeatStrategy:
    """NEAT topology evolution (neat-python 2), one generation per ask/tell round.

    The steps of ``neat.Population.run``, split where the fitness is evaluated:

    1. **ask** hands out the current generation's genomes as plain data, cut into ``batches``
       contiguous proposals (one per worker): ``params = {"generation": g, "seed": seed,
       "genomes": columns}``, a batch's genomes as columns
       (:func:`~search._neat_genome.genome_columns`: flat lists, several times faster to ship
       than genome dicts; :func:`~search._neat_genome.columns_to_dicts` gives the dicts).
       ``ask(n)`` returns up to ``n`` batches not handed out yet, then ``[]`` until the
       generation's last tell.
    2. **tell** takes one batch's ``metrics["fitness.<genome key>"]``. A FAILED batch, and a
       genome whose fitness is missing or not finite, gets the *worst* fitness: the option
       ``failed_fitness`` if set, else the lowest fitness evaluated in that generation (0.0
       if none was); the generation goes on.
    3. The generation's **last tell** does the rest of ``run``'s loop body: reporters'
       ``post_evaluate``, the best genome, the fitness-threshold test (``fitness_criterion``
       of the population's fitness >= ``fitness_threshold`` ends the search), then
       ``reproduce`` (stagnation, fitness sharing, elitism, crossover and mutation),
       complete-extinction handling (a fresh population with ``reset_on_extinction``, else
       the search ends) and speciation, which :meth:`idle` defers until the new generation's
       batches are out, so that it overlaps their evaluation. The search also ends after
       ``generations`` evaluated generations (option; default ``n_trials``).

       With neat-python's own ``DefaultReproduction``, ``reproduce`` runs in steps
       (:class:`~search._neat_reproduce.SteppedReproduction`): the last tell does what comes
       before the first new genome, and each ``ask`` makes the genomes of the batch it hands
       out, so the first batch is evaluated while the rest of the generation is made. The
       genomes and the random numbers are the same; anything that needs the whole population
       (:meth:`idle`, the next tell, :meth:`state`) makes the rest first.

    neat-python draws from the global :mod:`random` module. The strategy owns that stream:
    every call into neat-python runs under a process-wide lock with the global state swapped
    for the strategy's own (seeded from ``config.seed``) and swapped back after, so two
    strategies in one process do not disturb each other (code outside neat-python that uses
    the global :mod:`random` from another thread during such a call could).

    ``state()`` is strict JSON: bookkeeping in plain fields, plus ``"population"``: a
    zlib-compressed base64 pickle (protocol 4) of the population, species, innovation tracker, id counters
    and the random state, made once per generation and cached (a ``state()`` after every
    tell stays cheap). It is trusted data (the job store's own) and needs the same
    neat-python version (pinned). A search restored from any ``state()`` — between
    generations or in the middle of one (its batches in flight are :meth:`pending`) —
    continues exactly as the original would have.

    Args:
        config: ``mode`` must be ``Mode.MAX``, ``space`` empty, no pruner. ``options``:
            ``task`` (fixes inputs/outputs and the default threshold), ``neat`` (settings,
            see :mod:`search._neat_settings`), ``batches`` (proposals per generation,
            default 1), ``generations`` (default ``n_trials``), ``failed_fitness``.

    Example:
        >>> from search.base import Mode, Result, SearchConfig
        >>> s = NeatStrategy(SearchConfig(space={}, mode=Mode.MAX, n_trials=2, seed=1,
        ...                  options={"task": "xor", "batches": 2, "neat": {"pop_size": 10}}))
        >>> [len(p.params["genomes"]["keys"]) for p in s.ask(4)]
        [5, 5]
    """

    name: ClassVar[str] = "neat"
    STATS_CHUNK: ClassVar[int] = 64
    """Generations per frozen chunk of statistics in :meth:`state` (see there)."""

    def __init__(self, config: SearchConfig, _state: Mapping[str, Any] | None = None) -> None:
        self._config = config
        self._options = check_neat_options(config)
        self._settings = resolve_neat_settings(self._options.get("neat") or {}, self._options.get("task"))
        self._neat_config = build_neat_config(self._settings)
        self._rng_state = random.Random(config.seed).getstate()
        self._next_id = 0
        self._pending: dict[int, list[int]] = {}  # trial id -> genome keys
        self._queue: list[list[int] | tuple[int, int]] = []  # batches not asked yet: (start, end), or keys (restored)
        self._making: SteppedReproduction | None = None  # this generation's genomes, still being made
        self._fitness: dict[int, float] = {}  # this generation, evaluated
        self._failed: list[int] = []  # this generation, failed genome keys
        self._trial_of: dict[int, int] = {}  # genome key -> trial that evaluated it
        self._stats: list[dict[str, Any]] = []
        self._stats_chunks = FrozenChunks(self.STATS_CHUNK)  # _stats in state(): frozen JSON chunks + tail
        self._best: Result | None = None
        self._ended: str | None = None  # "solved" or "extinct"
        self._evaluated = False  # this generation's fitness is in; reproduction pending
        self._unspeciated: int | None = None  # speciation of this generation deferred (see idle)
        self._blob: str | None = None  # state()'s population pickle, cached until the population changes
        self._blob_unspeciated: int | None = None  # `unspeciated` as of that pickle
        if _state is None:
            import neat

            with self._neat_random():
                self._pop = neat.Population(self._neat_config)
            self._start_generation()
        else:
            self._load(_state)

    # -- neat-python's global random stream, owned by this strategy ------------------------

    @contextlib.contextmanager
    def _neat_random(self) -> Iterator[None]:
        with _RANDOM_LOCK:
            outer = random.getstate()
            random.setstate(self._rng_state)
            try:
                yield
            finally:
                self._rng_state = random.getstate()
                random.setstate(outer)

    # -- ask / tell --------------------------------------------------------------------------

    @property
    def config(self) -> SearchConfig:
        """The configuration this strategy was built with."""
        return self._config

    @property
    def generation(self) -> int:
        """Index of the current generation (0-based)."""
        return int(self._pop.generation)

    def add_reporter(self, reporter: Any) -> None:
        """Attach a neat-python reporter (e.g. ``neat.StdOutReporter(True)``); not part of the state."""
        self._pop.add_reporter(reporter)

    def _start_generation(self) -> None:
        total = len(self._pop.population) if self._making is None else self._making.total
        n = min(self._options["batches"], total)
        size, extra = divmod(total, n)
        bounds = list(itertools.accumulate([0] + [size + (i < extra) for i in range(n)]))
        self._queue = list(itertools.pairwise(bounds))  # ranges of the population's order (see _take)
        self._fitness, self._failed, self._trial_of = {}, [], {}
        self._evaluated, self._blob = False, None
        if self._unspeciated is None:
            self._pop.reporters.start_generation(self._pop.generation)

    def _params(self, keys: list[int]) -> dict[str, Any]:
        population = self._pop.population
        return {
            "generation": self.generation,
            "seed": self._config.seed,
            "genomes": genome_columns([population[k] for k in keys], self._neat_config),
        }

    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` batches of the current generation not handed out yet; ``[]`` = wait.

        Args:
            n: Free worker slots, ``>= 0``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"`n` must be an int >= 0, but got n={n!r}.")
        if self._evaluated and not self.done():
            self._advance()  # a restore with a larger budget
        out = []
        while self._queue and len(out) < n and not self.done():
            keys = self._take(self._queue.pop(0))
            trial_id = self._next_id
            self._next_id += 1
            self._pending[trial_id] = keys
            out.append(Proposal(trial_id=trial_id, params=self._params(keys)))
        return out

    def _take(self, batch: list[int] | tuple[int, int]) -> list[int]:
        """A queued batch's genome keys: a range of the population's order, made first if need be (keys as restored)."""
        if not isinstance(batch, tuple):
            return batch
        start, end = batch
        if self._making is not None:
            with self._neat_random():
                self._making.advance(end)
            if self._making.done:
                self._making = None
        return list(itertools.islice(self._pop.population, start, end))

    def _made(self) -> None:
        """Make the rest of this generation's genomes (before anything that needs all of them)."""
        if self._making is not None:
            with self._neat_random():
                self._making.finish()
            self._making = None

    def pending(self) -> list[Proposal]:
        """Batches handed out and not told yet (after :meth:`restore`: the ones to re-dispatch)."""
        return [Proposal(trial_id=t, params=self._params(keys)) for t, keys in self._pending.items()]

    def _in_flight(self, result: Result, verb: str) -> list[int]:
        if not isinstance(result, Result):
            raise ValueError(f"`result` must be a Result, but got result={result!r}.")
        if not isinstance(result.status, Status):
            raise ValueError(f"`status` must be a Status, but got status={result.status!r}.")
        if result.trial_id not in self._pending:
            raise ValueError(
                f"Cannot {verb} trial_id={result.trial_id!r}: not a batch in flight "
                f"(in flight: {sorted(self._pending)})."
            )
        return self._pending[result.trial_id]

    def tell(self, result: Result) -> None:
        """One batch's fitness (``metrics["fitness.<key>"]``); the last one ends the generation.

        Raises:
            ValueError: A ``trial_id`` not in flight (unknown, or told already).
        """
        keys = self._in_flight(result, "tell")
        self.idle()
        del self._pending[result.trial_id]
        for key in keys:
            value = None if result.status is Status.FAILED else result.metrics.get(f"fitness.{key}")
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                self._fitness[key] = float(value)
                self._trial_of[key] = result.trial_id
            else:
                self._failed.append(key)
        if not self._queue and not self._pending:
            self._end_generation()

    def report(self, result: Result) -> Decision:
        """Intermediate reports of a batch are accepted and never stop it."""
        self._in_flight(result, "report")
        if result.step is None:
            raise ValueError(f"`step` must be set on an intermediate report, but got step=None "
                             f"for trial_id={result.trial_id!r}.")  # fmt: skip
        return Decision.CONTINUE

    # -- the generation's end: neat.Population.run's loop body after the evaluation ------------

    def _end_generation(self) -> None:
        pop = self._pop
        worst = self._options["failed_fitness"]
        if worst is None:
            worst = min(self._fitness.values(), default=0.0)
        for key, genome in pop.population.items():
            genome.fitness = self._fitness.get(key, worst)
        best = None
        for genome in pop.population.values():
            if best is None or genome.fitness > best.fitness:
                best = genome
        with self._neat_random():
            pop.reporters.post_evaluate(pop.config, pop.population, pop.species, best)
        if pop.best_genome is None or best.fitness > pop.best_genome.fitness:
            pop.best_genome = best
        self._record(best)
        self._evaluated, self._blob = True, None
        if not pop.config.no_fitness_termination:
            fv = pop.fitness_criterion(g.fitness for g in pop.population.values())
            if fv >= pop.config.fitness_threshold:
                with self._neat_random():
                    pop.reporters.found_solution(pop.config, pop.generation, best)
                self._ended = "solved"
                return
        if len(self._stats) >= self._options["generations"]:
            if pop.config.no_fitness_termination:
                with self._neat_random():
                    pop.reporters.found_solution(pop.config, pop.generation, pop.best_genome)
            return
        self._advance()

    def _advance(self) -> None:
        """Reproduce and handle extinction: the next generation, whose speciation waits for :meth:`idle`."""
        from search._neat_reproduce import SteppedReproduction, stepped

        pop = self._pop
        with self._neat_random():
            if stepped(pop.reproduction):
                making = SteppedReproduction(
                    pop.reproduction, pop.config, pop.species, pop.config.pop_size, pop.generation
                )
                pop.population = making.population
                self._making = None if making.extinct else making
            else:
                pop.population = pop.reproduction.reproduce(
                    pop.config, pop.species, pop.config.pop_size, pop.generation
                )
            if not pop.species.species and self._making is None:
                pop.reporters.complete_extinction()
                if not pop.config.reset_on_extinction:
                    self._ended, self._blob = "extinct", None
                    return
                pop.population = pop.reproduction.create_new(
                    pop.config.genome_type, pop.config.genome_config, pop.config.pop_size
                )
        self._unspeciated = pop.generation
        pop.generation += 1
        self._start_generation()

    def idle(self) -> None:
        """Do the work that can wait until this generation's batches are out: its speciation.

        Speciation needs the genomes, not their fitness, so it is deferred from the
        generation's start to here: the runner calls ``idle()`` once it has dispatched the
        batches and is about to wait for them, and the workers evaluate while the
        coordinator speciates. Any later step that needs the species (a tell, or a strategy
        restored from a :meth:`state` taken before it ran) runs it first. neat-python's
        reporters still see ``end_generation`` before the next ``start_generation``.

        Speciation draws no random numbers, so a :meth:`state` pickle taken before it stays
        valid after it (with ``unspeciated`` set: a restore speciates again, to the same
        species): each generation writes one population pickle to a store, not two.
        """
        generation = self._unspeciated
        if generation is None:
            return
        self._made()
        pop = self._pop
        with self._neat_random():
            pop.species.speciate(pop.config, pop.population, generation)
            pop.reporters.end_generation(pop.config, pop.population, pop.species)
            self._unspeciated = None  # the cached pickle stays valid: see state()
            pop.reporters.start_generation(pop.generation)

    def _record(self, best: Any) -> None:
        pop = self._pop
        fitness = [g.fitness for g in pop.population.values()]
        sizes = [g.size() for g in pop.population.values()]
        ids = sorted(pop.species.species)
        species = [len(pop.species.species[sid].members) for sid in ids]
        self._stats.append({
            "generation": self.generation,
            "best": best.fitness,
            "mean": statistics.fmean(fitness),
            "std": statistics.pstdev(fitness),
            "species": len(species),
            "species_sizes": species,
            "species_ids": [int(sid) for sid in ids],
            "mean_nodes": statistics.fmean(n for n, _ in sizes),
            "mean_connections": statistics.fmean(c for _, c in sizes),
            "evaluations": (self._stats[-1]["evaluations"] if self._stats else 0) + len(fitness),
            "failed": len(self._failed),
            "best_key": best.key,
        })  # fmt: skip
        if best.key in self._fitness and (self._best is None or best.fitness > self._best.value):
            params = genome_to_dict(best, self._neat_config)
            self._best = Result(
                trial_id=self._trial_of[best.key],
                params=params,
                status=Status.OK,
                value=best.fitness,
                metrics={"fitness": best.fitness, "generation": float(self.generation), "genome_key": float(best.key)},
            )

    # -- results -----------------------------------------------------------------------------

    def done(self) -> bool:
        """Solved, extinct (without ``reset_on_extinction``), or ``generations`` evaluated."""
        return self._ended is not None or len(self._stats) >= self._options["generations"]

    def best(self) -> Result | None:
        """The fittest genome evaluated so far: ``params`` is its genome dict, ``value`` its fitness."""
        return self._best

    def generation_stats(self) -> list[dict[str, Any]]:
        """One dict per evaluated generation, for logging and plots.

        Keys: ``generation``, ``best``, ``mean``, ``std`` (fitness; failed genomes count with
        their substituted worst fitness), ``species`` (count), ``species_sizes`` and
        ``species_ids`` (in species-id order), ``mean_nodes``, ``mean_connections`` (enabled),
        ``evaluations`` (cumulative), ``failed`` (genomes), ``best_key``.
        """
        return [_copy(s) for s in self._stats]

    def rounds(self) -> list[dict[str, Any]]:
        """:meth:`generation_stats` without copies, for the runner's per-tell hook (read only).

        The last entry also carries ``"champion"``: :meth:`best_genome` (a live neat-python
        object, not part of :meth:`state`), so that a reporter can save the genome itself.
        """
        out = list(self._stats)
        if out:
            out[-1] = {**out[-1], "champion": self.best_genome()}
        return out

    def best_genome(self) -> Any:
        """The neat-python genome of :meth:`best` (``neat.DefaultGenome``), or ``None`` if there is none yet."""
        genome = self._pop.best_genome
        if genome is None or self._best is None or genome.key != self._best.params.get("key"):
            return None
        from search._neat_fast import plain_genome

        return plain_genome(genome)

    @property
    def ended(self) -> str | None:
        """Why the search ended early: ``"solved"``, ``"extinct"``, or ``None``."""
        return self._ended

    @property
    def settings(self) -> dict[str, Any]:
        """The resolved NEAT settings (every key)."""
        return copy.deepcopy(self._settings)

    # -- checkpointing -----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Strict-JSON state (see the class docstring), valid at any moment.

        The per-generation statistics grow with the run, so every full run of
        :attr:`STATS_CHUNK` generations is frozen into one JSON string (``stats_chunks``) that
        never changes again, and only the rest is a plain list (``stats``): a store that keeps
        long strings by content (the service's does) writes each chunk once.
        """
        self._made()
        if self._blob is None:
            self._blob = dump_population(self._pop, self._rng_state)
            self._blob_unspeciated = self._unspeciated
        chunks, tail = self._stats_chunks.dump(self._stats, _copy)
        return {
            "strategy": self.name,
            "version": STATE_VERSION,
            "next_id": self._next_id,
            "pending": [{"trial_id": t, "keys": keys} for t, keys in self._pending.items()],
            "queue": [self._take(keys) for keys in self._queue],
            "fitness": {str(k): v for k, v in self._fitness.items()},
            "failed": list(self._failed),
            "trial_of": {str(k): v for k, v in self._trial_of.items()},
            "evaluated": self._evaluated,
            "unspeciated": self._blob_unspeciated,
            "ended": self._ended,
            "stats_chunks": chunks,
            "stats": tail,
            "best": None if self._best is None else encode_result(self._best),
            "population": self._blob,
        }

    def _load(self, state: Mapping[str, Any]) -> None:
        self._pop, self._rng_state = load_population(self._neat_config, state["population"])
        self._next_id = int(state["next_id"])
        self._pending = {int(p["trial_id"]): [int(k) for k in p["keys"]] for p in state["pending"]}
        self._queue = [[int(k) for k in keys] for keys in state["queue"]]
        self._fitness = {int(k): float(v) for k, v in state["fitness"].items()}
        self._failed = [int(k) for k in state["failed"]]
        self._trial_of = {int(k): int(v) for k, v in state["trial_of"].items()}
        self._evaluated = bool(state["evaluated"])
        unspeciated = state.get("unspeciated")
        self._unspeciated = None if unspeciated is None else int(unspeciated)
        self._ended = state["ended"]
        self._stats = [dict(s) for s in self._stats_chunks.load(state.get("stats_chunks", []), state["stats"])]
        self._best = None if state["best"] is None else decode_result(state["best"])
        self._blob, self._blob_unspeciated = state["population"], self._unspeciated

    @classmethod
    def restore(cls, config: SearchConfig, state: Mapping[str, Any]) -> NeatStrategy:
        """Rebuild from :meth:`state`; batches in flight stay pending (see :meth:`pending`).

        Args:
            config: The job's config (``n_trials`` / ``generations`` may grow on resume).
            state: A previous :meth:`state`.

        Raises:
            ValueError: When ``state`` belongs to another strategy or version.
        """
        if state.get("strategy") != cls.name or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"`state` must come from {cls.name!r} version {STATE_VERSION}, but got "
                f"strategy={state.get('strategy')!r}, version={state.get('version')!r}."
            )
        return cls(config, _state=state)


def _copy(stats: dict[str, Any]) -> dict[str, Any]:
    return dict(stats, species_sizes=list(stats["species_sizes"]), species_ids=list(stats.get("species_ids", [])))


__all__ = [
    "NEAT_DEFAULTS",
    "NeatStrategy",
    "build_neat_config",
    "neat_settings_issues",
    "resolve_neat_settings",
]
