"""One whole NEAT run as one trial: the trial function of a meta-search over NEAT's own settings.

A ``bayes`` (or ``random``) job whose ``objective.function`` is
``"models.neat_evolve:evolve"`` tunes NEAT itself: each trial maps its searched flat keys
(``pop_size``, ``compatibility_threshold``, ``conn_add_prob``, ...) onto NEAT settings,
runs a :class:`~search.neat.NeatStrategy` with :func:`~models.neat_tasks.evaluate_batch`
in-process, generation by generation, and reports after each generation so that the
coordinator sees progress and a pruner can stop a hopeless run early.

Config keys:

* run keys: ``task`` (default ``"xor"``), ``generations`` (most generations, default 100),
  ``max_evaluations`` (stop once this many genomes were evaluated; default: no limit),
  ``seed`` (default: the trial's seed from the worker, else 0), ``neat`` (nested NEAT
  settings every trial starts from, as a ``neat`` job's ``strategy_options.neat``);
* the NEAT task's keys (``episodes``, ``max_steps``, ``metric``, ``split``, ``max_samples``,
  ``data_seed``, ``function``, ``dtype``, ``device``), passed to ``evaluate_batch``;
* every other key is a NEAT setting: a top-level one (``pop_size``), a section's key by its
  own name (``compatibility_threshold`` -> ``species``, ``conn_add_prob`` -> ``genome``,
  ``max_stagnation`` -> ``stagnation``, ``elitism`` -> ``reproduction``), or a dotted path
  (``genome.weight_mutate_power``). Unknown keys and invalid values raise ``ValueError``
  naming the key and echoing the value.

Metrics (reported after each generation with ``epoch`` = generations evaluated so far, 1-based
like a trainer's epochs — MLflow keeps a trial's final metrics at step 0 — and returned at the end):
``best_fitness`` (best so far), ``mean_fitness``, ``species``, ``evaluations``
(cumulative), ``score``; at the end also ``generations``, ``solved`` (1.0 when the fitness
threshold was reached), ``mean_nodes``, ``mean_connections``, ``seconds``.

``score`` (higher is better) puts solved and unsolved runs on one scale: until the
threshold is reached it is ``best_fitness / fitness_threshold`` (below 1); a solved run
scores ``1 + the share of the evaluation budget it left unused`` (the budget is
``max_evaluations``, else ``generations x pop_size``), so solving with fewer evaluations
scores higher. Without a threshold it is ``best_fitness``.

Example:
    >>> out = evolve({"task": "xor", "generations": 3, "pop_size": 20, "conn_add_prob": 0.3})
    >>> out["generations"], out["evaluations"]
    (3.0, 60.0)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from models.neat_tasks import evaluate_batch
from search._neat_settings import NEAT_DEFAULTS, resolve_neat_settings
from search.base import Mode, Result, SearchConfig
from search.neat import NeatStrategy

RUN_KEYS = ("task", "generations", "max_evaluations", "seed", "neat")
"""Keys that shape the run rather than NEAT's settings."""

TASK_KEYS = ("episodes", "max_steps", "metric", "split", "max_samples", "data_seed", "function", "dtype", "device")
"""Keys passed on to :func:`~models.neat_tasks.evaluate_batch`."""

_SECTIONS = tuple(k for k, v in NEAT_DEFAULTS.items() if isinstance(v, dict))


def _plain(value: Any) -> Any:
    """NumPy scalars (what a sampler may hand over) as Python numbers."""
    return value.item() if hasattr(value, "item") and not isinstance(value, list | dict) else value


def _section_of(key: str) -> str | None:
    """The settings section holding ``key`` (``""`` for a top-level one), or ``None``."""
    if key in NEAT_DEFAULTS and not isinstance(NEAT_DEFAULTS[key], dict):
        return ""
    for section in _SECTIONS:
        if key in NEAT_DEFAULTS[section]:
            return section
    return None


def neat_settings_from_flat(config: Mapping[str, Any]) -> dict[str, Any]:
    """Nested NEAT settings (``config["neat"]`` overlaid with the flat NEAT keys of ``config``).

    Args:
        config: A trial config (see the module docstring).

    Returns:
        The user-level nested settings, valid for ``config["task"]``.

    Raises:
        ValueError: A key that is neither a run, task nor NEAT key; an invalid value.

    Example:
        >>> neat_settings_from_flat({"pop_size": 50, "compatibility_threshold": 2.5, "genome.node_add_prob": 0.1})
        {'pop_size': 50, 'species': {'compatibility_threshold': 2.5}, 'genome': {'node_add_prob': 0.1}}
    """
    base = config.get("neat") or {}
    if not isinstance(base, Mapping):
        raise ValueError(f"`neat` must be a mapping of NEAT settings, but got neat={base!r}.")
    settings = copy.deepcopy(dict(base))
    for key, value in config.items():
        if key in RUN_KEYS or key in TASK_KEYS:
            continue
        section, _, name = key.rpartition(".") if "." in key else (_section_of(key), "", key)
        if section is None or (section and (section not in _SECTIONS or name not in NEAT_DEFAULTS[section])):
            raise ValueError(
                f"`{key}` is neither a run key ({', '.join(RUN_KEYS)}), a task key ({', '.join(TASK_KEYS)}) nor a "
                f"NEAT setting (a top-level key, a key of {', '.join(_SECTIONS)}, or 'section.key'), but got "
                f"{key}={value!r}."
            )
        if section:
            settings.setdefault(section, {})[name] = _plain(value)
        else:
            settings[name] = _plain(value)
    task = config.get("task", "xor")
    resolve_neat_settings(settings, task)  # raises, naming every invalid setting and its value
    return settings


def _int(config: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = _plain(config.get(key, default))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{key}` must be an integer >= 1, but got {key}={value!r}.")
    return value


def evolve(
    config: Mapping[str, Any], report: Callable[..., None] | None = None, context: Any = None
) -> dict[str, float]:
    """Run NEAT on ``config["task"]`` with the trial's settings; report each generation.

    Args:
        config: Run, task and NEAT keys (see the module docstring).
        report: The trial's ``report(epoch=..., **metrics)``; it raises when the
            coordinator stops the trial (pruning), which ends the run.
        context: The worker's trial context (its ``seed`` is used when ``config`` has none).

    Returns:
        The metrics listed in the module docstring.

    Raises:
        ValueError: An unknown key or invalid value (named, with the value).
    """
    started = time.perf_counter()
    settings = neat_settings_from_flat(config)
    task = config.get("task", "xor")
    generations = _int(config, "generations", 100)
    max_evaluations = _int(config, "max_evaluations", None)
    seed = config.get("seed", getattr(context, "seed", 0))
    options = {"task": task, "neat": settings, "generations": generations, "batches": 1}
    strategy = NeatStrategy(SearchConfig(space={}, mode=Mode.MAX, n_trials=generations, seed=seed, options=options))
    full = strategy.settings
    threshold = full["fitness_threshold"]
    budget = max_evaluations or generations * full["pop_size"]
    extra = {"task": task, **{k: config[k] for k in TASK_KEYS if k in config}}
    best = float("-inf")
    stats: dict[str, Any] = {}
    while not strategy.done():
        for proposal in strategy.ask(1):
            metrics = evaluate_batch({**extra, **proposal.params})
            strategy.tell(Result(proposal.trial_id, proposal.params, metrics=metrics))
        stats = strategy.rounds()[-1]
        best = max(best, float(stats["best"]))
        out = {
            "best_fitness": best,
            "mean_fitness": float(stats["mean"]),
            "species": float(stats["species"]),
            "evaluations": float(stats["evaluations"]),
            "score": _score(best, threshold, strategy.ended == "solved", stats["evaluations"], budget),
        }
        if report is not None:
            report(epoch=int(stats["generation"]) + 1, **out)
        if max_evaluations is not None and stats["evaluations"] >= max_evaluations:
            break
    out.update(
        generations=float(len(strategy.rounds())),
        solved=float(strategy.ended == "solved"),
        mean_nodes=float(stats["mean_nodes"]),
        mean_connections=float(stats["mean_connections"]),
        seconds=time.perf_counter() - started,
    )
    return out


def _score(best: float, threshold: float | None, solved: bool, evaluations: int, budget: int) -> float:
    if threshold is None:
        return best
    if solved:
        return 1.0 + max(0.0, 1.0 - evaluations / budget)
    return min(best / threshold, 1.0) if threshold > 0 else best
