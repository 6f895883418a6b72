"""Replica exchange (parallel tempering) over annealing chains: strategy ``anneal``.

Pure logic: the strategy hands out "run replica r for k steps at temperature T" and reads back
each replica's energy; the chains themselves (``models.anneal.Annealer``, run by
``models.anneal.run_replica``) live on the workers, so only scalars cross the network.

Example:
    >>> from search.base import Result, SearchConfig
    >>> s = AnnealStrategy(SearchConfig(space={}, n_trials=4, options={"replicas": 2, "steps": 10}))
    >>> [(p.trial_id, p.params["replica"], p.params["temperature"]) for p in s.ask(4)]
    [(0, 0, 0.001), (1, 1, 0.1)]
    >>> s.ask(1)  # the round is out: wait for its tells
    []
    >>> for p, energy in zip(s.pending(), [0.9, 0.2]):
    ...     s.tell(Result(p.trial_id, p.params, value=energy))
    >>> [p.params["temperature"] for p in s.ask(2)]  # the hot replica's lower energy went cold
    [0.1, 0.001]
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any

from search._chunks import FrozenChunks
from search._rng import dump_rng, load_rng
from search._trials import _check_config, _decode_float, _encode_float, decode_result, encode_result
from search.base import Decision, Proposal, Result, SearchConfig, Status

STATE_VERSION = 1

DEFAULTS: dict[str, Any] = {
    "replicas": 4,
    "t_min": 1e-3,
    "t_max": 1e-1,
    "steps": 200,
    "rounds": None,
    "boltzmann_k": 1.0,
}
"""Options of strategy ``anneal``; ``rounds=None`` means ``n_trials // replicas``."""


def geometric_ladder(t_min: float, t_max: float, n: int) -> list[float]:
    """``n`` temperatures from ``t_min`` to ``t_max`` with a constant ratio between neighbours.

    Example:
        >>> [round(t, 6) for t in geometric_ladder(0.01, 1.0, 3)]
        [0.01, 0.1, 1.0]
    """
    if n == 1:
        return [float(t_min)]
    ratio = (t_max / t_min) ** (1.0 / (n - 1))
    return [float(t_min)] + [t_min * ratio**i for i in range(1, n - 1)] + [float(t_max)]


def swap_probability(e_i: float, e_j: float, t_i: float, t_j: float, k: float = 1.0) -> float:
    """``min(1, exp[(E_i - E_j) * (1/(k T_i) - 1/(k T_j))])``: exchange the temperatures of two replicas.

    With ``T_i < T_j`` a swap that brings the lower energy to the colder temperature is always
    made; the reverse one with the Boltzmann probability of the energy gap.

    Example:
        >>> swap_probability(1.0, 0.5, 0.1, 1.0)  # the cold replica is worse: always swap
        1.0
        >>> round(swap_probability(0.5, 1.0, 0.1, 1.0), 6) == round(math.exp(-0.5 * 9.0), 6)
        True
    """
    exponent = (e_i - e_j) * (1.0 / (k * t_i) - 1.0 / (k * t_j))
    return 1.0 if exponent >= 0 else math.exp(exponent)


class AnnealStrategy:
    """Replica exchange: K annealing chains on a temperature ladder that trade temperatures.

    1. A geometric ladder ``t_min = T_0 < ... < T_{K-1} = t_max`` is laid out; replica ``r``
       starts at ``T_r``.
    2. A round: each replica runs ``steps`` annealing steps at its current temperature. The
       round's proposals are ``Proposal(trial_id, {"replica": r, "temperature": T, "steps":
       k, "round": g, "checkpoint": ...})`` with ``trial_id = g * K + r``. ``ask(n)`` hands out
       the round's proposals not yet handed out (up to ``n``, in replica order) and then
       ``[]`` until the round's last tell.
    3. A tell reads ``result.value`` as the replica's energy (``mode`` min: the value; max:
       its negation) and ``metrics["accept_rate"]`` when present. A failed replica-round (or
       a non-finite value) keeps the replica's previous energy and temperature and leaves it
       out of this round's swaps; the replica runs again next round and the job goes on.
    4. The round's last tell runs the swap step: neighbours on the ladder — slots
       ``(0,1), (2,3), ...`` in even rounds and ``(1,2), (3,4), ...`` in odd rounds, the usual
       alternation, so each pair is tried every other round and no replica is in two pairs
       at once — exchange *temperatures* (never weights) with probability
       :func:`swap_probability`, drawn from the strategy's own seeded RNG.

    Checkpoints: the weights belong to the workers. The service hands each replica's latest
    state to :meth:`checkpoint_replica` (base64 text of ``Annealer.get_state()``) and
    :meth:`state` keeps it. After :meth:`restore`, each replica's next proposal (a pending one
    re-dispatched, or its first in the next round) carries ``params["checkpoint"]`` so that a
    fresh worker can rebuild the replica; at every other time ``params["checkpoint"]`` is
    ``None`` (the worker that ran the replica keeps it). The results kept in the history never
    hold blobs.

    :meth:`history` (also :meth:`rounds`, the runner's hook for round statistics) lists each
    finished round's temperatures, energies, acceptance rates and swaps; :meth:`swap_stats`
    the attempts and acceptances per neighbouring pair. :meth:`best` is the lowest-energy
    result told (in ``mode``'s direction).

    Args:
        config: ``space`` must be empty (the network's hyperparameters are fixed in the
            spec); ``options`` (see :data:`DEFAULTS`): ``replicas`` K, ``t_min``, ``t_max``,
            ``steps`` per round, ``rounds`` (default ``n_trials // replicas``) and
            ``boltzmann_k`` (use the trainer's ``boltzmann_k``).

    Raises:
        ValueError: A bad option (the message names it and echoes the value) or a non-empty space.
    """

    name = "anneal"
    LOG_CHUNK = 64
    """Entries per frozen chunk of ``history`` / ``results`` in :meth:`state` (see there)."""

    def __init__(self, config: SearchConfig) -> None:
        _check_config(config)
        if config.space:
            raise ValueError(
                f"`space` must be empty for strategy 'anneal' (fix the network's hyperparameters instead), "
                f"but got space keys {sorted(config.space)}."
            )
        self._config = config
        opts = check_anneal_options(config)
        self._k, self._steps, self._kb = opts["replicas"], opts["steps"], opts["boltzmann_k"]
        self._rounds = opts["rounds"]
        self._ladder = geometric_ladder(opts["t_min"], opts["t_max"], self._k)
        self._rng = random.Random(config.seed)
        self._round = 0
        self._slot = list(range(self._k))  # replica -> its rung on the ladder
        self._energy: list[float | None] = [None] * self._k
        self._accept: list[float | None] = [None] * self._k
        self._handed: set[int] = set()  # replicas handed out this round
        self._told: set[int] = set()  # replicas told this round
        self._failed: set[int] = set()  # replicas whose round failed
        self._pending: dict[int, Proposal] = {}
        self._pairs = [[0, 0] for _ in range(self._k - 1)]  # per rung pair: attempted, accepted
        self._history: list[dict[str, Any]] = []
        self._results: list[Result] = []
        self._history_chunks = FrozenChunks(self.LOG_CHUNK)
        self._results_chunks = FrozenChunks(self.LOG_CHUNK)
        self._checkpoints: dict[int, str] = {}
        self._needs_checkpoint: set[int] = set()

    @property
    def config(self) -> SearchConfig:
        """The configuration this strategy was built with."""
        return self._config

    @property
    def ladder(self) -> list[float]:
        """The temperatures, coldest first."""
        return list(self._ladder)

    def temperatures(self) -> list[float]:
        """Each replica's current temperature, by replica."""
        return [self._ladder[s] for s in self._slot]

    # -- asking -----------------------------------------------------------------------------------

    def _with_checkpoint(self, proposal: Proposal) -> Proposal:
        r = proposal.params["replica"]
        blob = self._checkpoints.get(r) if r in self._needs_checkpoint else None
        return Proposal(proposal.trial_id, {**proposal.params, "checkpoint": blob})

    def ask(self, n: int) -> list[Proposal]:
        """The current round's proposals not yet handed out, up to ``n``; ``[]`` until the round ends.

        Args:
            n: How many proposals the caller can run now, ``>= 0``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"`n` must be an int >= 0, but got n={n!r}.")
        out: list[Proposal] = []
        if self.done():
            return out
        for r in range(self._k):
            if len(out) >= n:
                break
            if r in self._handed:
                continue
            params = {"replica": r, "temperature": self._ladder[self._slot[r]], "steps": self._steps,
                      "round": self._round, "checkpoint": None}  # fmt: skip
            proposal = Proposal(self._round * self._k + r, params)
            self._handed.add(r)
            self._pending[proposal.trial_id] = proposal
            out.append(self._with_checkpoint(proposal))
        return out

    def pending(self) -> list[Proposal]:
        """Proposals handed out and not yet told (after :meth:`restore`: with their checkpoints)."""
        return [self._with_checkpoint(p) for _, p in sorted(self._pending.items())]

    def checkpoint_replica(self, replica: int, blob: str) -> None:
        """Keep ``replica``'s latest state (base64 text of ``Annealer.get_state()``) for :meth:`state`."""
        if isinstance(replica, bool) or not isinstance(replica, int) or not 0 <= replica < self._k:
            raise ValueError(f"`replica` must be an int in [0, {self._k}), but got replica={replica!r}.")
        if not isinstance(blob, str):
            raise ValueError(f"`blob` must be base64 text, but got a {type(blob).__name__}.")
        self._checkpoints[replica] = blob

    # -- telling ----------------------------------------------------------------------------------

    def _check_in_flight(self, result: Result, verb: str) -> Proposal:
        if not isinstance(result, Result):
            raise ValueError(f"`result` must be a Result, but got result={result!r}.")
        if not isinstance(result.status, Status):
            raise ValueError(f"`status` must be a Status, but got status={result.status!r}.")
        if result.trial_id in self._pending:
            return self._pending[result.trial_id]
        told = any(r.trial_id == result.trial_id for r in self._results)
        what = "it was already told" if told else "unknown trial (not handed out, or from another round)"
        raise ValueError(f"Cannot {verb} trial_id={result.trial_id!r}: {what}.")

    def tell(self, result: Result) -> None:
        """One replica's round: its energy (``result.value``), or a failure.

        Raises:
            ValueError: Unknown ``trial_id``, or a trial told twice.
        """
        proposal = self._check_in_flight(result, "tell")
        r = proposal.params["replica"]
        del self._pending[result.trial_id]
        value = result.value
        if result.status is not Status.FAILED and value is not None and math.isfinite(value):
            self._energy[r] = self._config.mode.sign() * float(value)
            rate = result.metrics.get("accept_rate")
            self._accept[r] = float(rate) if rate is not None and math.isfinite(rate) else None
        else:
            self._failed.add(r)
            self._accept[r] = None
        self._results.append(
            Result(result.trial_id, dict(proposal.params), result.status, value, dict(result.metrics), result.reason)
        )
        self._needs_checkpoint.discard(r)
        self._told.add(r)
        if len(self._told) == self._k:
            self._end_round()

    def _end_round(self) -> None:
        """Swap temperatures between neighbours (even or odd pairs) and record the round."""
        temps = self.temperatures()
        at = {slot: r for r, slot in enumerate(self._slot)}
        swapped, attempted = [], 0
        for i in range(self._round % 2, self._k - 1, 2):
            a, b = at[i], at[i + 1]
            ea, eb = self._energy[a], self._energy[b]
            if a in self._failed or b in self._failed or ea is None or eb is None:
                continue
            p = swap_probability(ea, eb, self._ladder[i], self._ladder[i + 1], self._kb)
            self._pairs[i][0] += 1
            attempted += 1
            if self._rng.random() < p:
                self._slot[a], self._slot[b] = i + 1, i
                self._pairs[i][1] += 1
                swapped.append([i, i + 1])
        known = [e for e in self._energy if e is not None]
        self._history.append({
            "round": self._round,
            "temperature": {f"r{r}": t for r, t in enumerate(temps)},
            "energy": {f"r{r}": e for r, e in enumerate(self._energy)},
            "accept_rate": {f"r{r}": a for r, a in enumerate(self._accept)},
            "failed": sorted(self._failed),
            "swaps_attempted": attempted,
            "swaps_accepted": len(swapped),
            "swapped": swapped,
            "best_energy": min(known) if known else None,
        })  # fmt: skip
        self._round += 1
        self._handed.clear()
        self._told.clear()
        self._failed.clear()

    def report(self, result: Result) -> Decision:
        """Intermediate reports of a replica are accepted and never stop it (no pruning of replicas)."""
        self._check_in_flight(result, "report")
        if result.step is None:
            raise ValueError(
                f"`step` must be set on an intermediate report, but got step=None for trial_id={result.trial_id!r}."
            )
        return Decision.CONTINUE

    def done(self) -> bool:
        """True once ``rounds`` rounds have ended."""
        return self._round >= self._rounds

    def best(self) -> Result | None:
        """The ``Status.OK`` result with the best finite value (lowest energy); ties go to the earliest."""
        best: Result | None = None
        for r in self._results:
            if r.status is Status.OK and r.ok and (best is None or self._config.mode.better(r.value, best.value)):
                best = r
        return best

    @property
    def results(self) -> list[Result]:
        """Every told result, in tell order (``params["checkpoint"]`` is always ``None`` here)."""
        return list(self._results)

    # -- statistics ---------------------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        """Statistics of each finished round, oldest first.

        Each is a dict: ``round``; ``temperature``, ``energy`` and ``accept_rate`` by replica
        (keys ``"r0"``, ``"r1"``, ...: the temperatures the round ran at, the energies after
        it); ``failed`` (replicas); ``swaps_attempted``, ``swaps_accepted``, ``swapped`` (rung
        pairs) and ``best_energy``.
        """
        return copy.deepcopy(self._history)

    def rounds(self) -> list[dict[str, Any]]:
        """:meth:`history` without the copy of each entry (the runner's per-tell hook; read only)."""
        return list(self._history)

    def swap_stats(self) -> list[dict[str, Any]]:
        """Per neighbouring pair of rungs: ``pair``, ``t_low``, ``t_high``, ``attempted``, ``accepted``, ``rate``."""
        return [
            {"pair": [i, i + 1], "t_low": self._ladder[i], "t_high": self._ladder[i + 1], "attempted": att,
             "accepted": acc, "rate": acc / att if att else None}
            for i, (att, acc) in enumerate(self._pairs)
        ]  # fmt: skip

    # -- checkpointing --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Strict-JSON state: ladder, temperatures, energies, swaps, RNG, round, pending, checkpoints.

        The round history and the told results grow with the run: every full run of
        :attr:`LOG_CHUNK` entries is frozen into one JSON string (``history_chunks``,
        ``results_chunks``) that never changes again, so a store that keeps long strings by
        content writes each once.
        """
        history_chunks, history = self._history_chunks.dump(self._history, copy.deepcopy)
        results_chunks, results = self._results_chunks.dump(self._results, encode_result)
        return {
            "strategy": self.name,
            "version": STATE_VERSION,
            "round": self._round,
            "ladder": list(self._ladder),
            "slot": list(self._slot),
            "temperature_of": {str(r): t for r, t in enumerate(self.temperatures())},
            "energies": [_encode_float(e) for e in self._energy],
            "accept_rates": [_encode_float(a) for a in self._accept],
            "handed": sorted(self._handed),
            "told": sorted(self._told),
            "failed": sorted(self._failed),
            "pending": [{"trial_id": p.trial_id, "params": dict(p.params)} for _, p in sorted(self._pending.items())],
            "swaps": [list(pair) for pair in self._pairs],
            "history_chunks": history_chunks,
            "history": history,
            "results_chunks": results_chunks,
            "results": results,
            "checkpoints": {str(r): blob for r, blob in sorted(self._checkpoints.items())},
            "rng": dump_rng(self._rng),
        }

    @classmethod
    def restore(cls, config: SearchConfig, state: dict[str, Any]) -> AnnealStrategy:
        """Rebuild from :meth:`state`; pending replica-rounds stay pending.

        Every replica's next proposal carries its checkpoint (see the class docstring).

        Args:
            config: The job's config (``rounds`` or ``n_trials`` may grow on resume; the ladder
                must stay the same).
            state: A previous :meth:`state`.

        Raises:
            ValueError: ``state`` belongs to another strategy or version, or to another ladder.
        """
        if state.get("strategy") != cls.name or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"`state` must come from {cls.name!r} version {STATE_VERSION}, but got "
                f"strategy={state.get('strategy')!r}, version={state.get('version')!r}."
            )
        s = cls(config)
        if [float(t) for t in state["ladder"]] != s._ladder:
            raise ValueError(
                f"`state` has the ladder {state['ladder']!r} but the options give {s._ladder!r}: "
                "keep `replicas`, `t_min` and `t_max` when resuming."
            )
        s._round = int(state["round"])
        s._slot = [int(v) for v in state["slot"]]
        s._energy = [_decode_float(e) for e in state["energies"]]
        s._accept = [_decode_float(a) for a in state["accept_rates"]]
        s._handed, s._told, s._failed = ({int(r) for r in state[key]} for key in ("handed", "told", "failed"))
        s._pending = {int(p["trial_id"]): Proposal(int(p["trial_id"]), dict(p["params"])) for p in state["pending"]}
        s._pairs = [[int(a), int(b)] for a, b in state["swaps"]]
        s._history = copy.deepcopy(s._history_chunks.load(state.get("history_chunks", []), state["history"]))
        results = s._results_chunks.load(state.get("results_chunks", []), state["results"])
        s._results = [decode_result(d) for d in results]
        s._checkpoints = {int(r): str(blob) for r, blob in state["checkpoints"].items()}
        s._needs_checkpoint = set(range(s._k))
        load_rng(s._rng, state["rng"])
        return s


def check_anneal_options(config: SearchConfig) -> dict[str, Any]:
    """Validated options with defaults; errors name the option and echo the value."""
    opts = config.options
    if not isinstance(opts, dict):
        raise ValueError(f"`options` must be a dict, but got options={opts!r}.")
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown option(s) {', '.join(map(repr, unknown))} for strategy 'anneal'; "
                         f"allowed are {', '.join(DEFAULTS)}.")  # fmt: skip
    o = {**DEFAULTS, **opts}

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    for key in ("replicas", "steps"):
        if not is_int(o[key]) or o[key] < 1:
            raise ValueError(f"`{key}` must be an int >= 1, but got {key}={o[key]!r}.")
    for key in ("t_min", "t_max", "boltzmann_k"):
        if not is_number(o[key]) or o[key] <= 0:
            raise ValueError(f"`{key}` must be a finite number > 0, but got {key}={o[key]!r}.")
    if o["t_max"] < o["t_min"]:
        raise ValueError(f"`t_min <= t_max` must hold, but got (t_min={o['t_min']!r}, t_max={o['t_max']!r}).")
    if o["rounds"] is None:
        o["rounds"] = config.n_trials // o["replicas"]
        if o["rounds"] < 1:
            raise ValueError(
                f"`n_trials` must be >= `replicas` (one round runs every replica), but got "
                f"n_trials={config.n_trials!r}, replicas={o['replicas']!r}."
            )
    elif not is_int(o["rounds"]) or o["rounds"] < 1:
        raise ValueError(f"`rounds` must be an int >= 1, but got rounds={o['rounds']!r}.")
    o["t_min"], o["t_max"], o["boltzmann_k"] = float(o["t_min"]), float(o["t_max"]), float(o["boltzmann_k"])
    return o
