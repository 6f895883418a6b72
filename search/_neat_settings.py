"""NEAT settings from a job spec: defaults for every neat-python 2 key, validation, INI text.

Torch-free and neat-free, so ``service.spec`` can validate a spec on a laptop. Users write
only what they want to change, nested by neat-python's config sections::

    {
        "pop_size": 150,                      # [NEAT]
        "fitness_threshold": 3.9,             # null: no fitness termination (generation budget only)
        "genome": {"conn_add_prob": 0.5},     # [DefaultGenome]      (neat-python's key names)
        "species": {"compatibility_threshold": 3.0},            # [DefaultSpeciesSet]
        "stagnation": {"max_stagnation": 20},                   # [DefaultStagnation]
        "reproduction": {"elitism": 2},                         # [DefaultReproduction]
    }

Top-level keys are the ``[NEAT]`` section's; ``genome.num_inputs`` / ``num_outputs`` come from
the task (:data:`NEAT_TASK_IO`) and must be given only for a task that does not fix them (a
user ``function``). ``fitness_threshold`` defaults to the task's (:data:`TASK_THRESHOLDS`).
String lists (``activation_options``) are JSON lists. Unknown keys and invalid values are
reported with their dotted path (relative to these settings), the value, and what is allowed.
The ``[NEAT]`` ``seed`` key is not accepted: the job's seed drives the strategy's RNG.

Example:
    >>> full = resolve_neat_settings({"genome": {"node_add_prob": 0.3}}, task="xor")
    >>> full["pop_size"], full["fitness_threshold"], full["genome"]["num_inputs"]
    (150, 3.9, 2)
    >>> neat_settings_issues({"pop_size": 1, "genome": {"conn_add_prob": 2}}, task="xor")[0]
    ('pop_size', 1, 'must be an integer >= 2')
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from search.base import Mode, SearchConfig

NEAT_TASK_IO: dict[str, tuple[int, int]] = {
    "xor": (2, 1),
    "cartpole": (4, 1),
    "wine": (13, 3),
    "digits": (64, 10),
    "breast_cancer": (30, 2),
}
"""``(num_inputs, num_outputs)`` of the built-in NEAT tasks (see ``models.neat_tasks``)."""

TASK_THRESHOLDS: dict[str, float | None] = {"xor": 3.9, "cartpole": 475.0}
"""Default ``fitness_threshold`` per task (XOR: 4 - SSE >= 3.9; CartPole-v1: mean return >= 475,
gymnasium's own ``reward_threshold``); other tasks run their generation budget."""

ACTIVATION_NAMES: tuple[str, ...] = (
    "sigmoid", "tanh", "sin", "gauss", "relu", "elu", "lelu", "selu", "softplus",
    "identity", "clamped", "inv", "log", "exp", "abs", "hat", "square", "cube",
)  # fmt: skip
"""Activations neat-python 2 registers by default; ``models.neat_torch`` evaluates all of them."""

AGGREGATION_NAMES: tuple[str, ...] = ("sum", "product", "max", "min", "maxabs", "median", "mean")
"""Aggregations neat-python 2 registers by default; ``models.neat_torch`` evaluates all of them."""

CONNECTIVITY: tuple[str, ...] = (
    "unconnected", "fs_neat_nohidden", "fs_neat", "fs_neat_hidden", "full_nodirect", "full", "full_direct",
    "partial_nodirect", "partial", "partial_direct",
)  # fmt: skip

_SECTIONS = {
    "genome": "DefaultGenome",
    "species": "DefaultSpeciesSet",
    "stagnation": "DefaultStagnation",
    "reproduction": "DefaultReproduction",
}


def _float_gene(
    name: str, mean: float, stdev: float, power: float, rate: float, replace: float, lo: float, hi: float
) -> dict[str, Any]:
    """neat-python's 8 keys of a float gene attribute (init: mean, stdev; mutation: power, rate, replace)."""
    values = {
        "init_mean": mean, "init_stdev": stdev, "init_type": "gaussian", "mutate_power": power,
        "mutate_rate": rate, "replace_rate": replace, "min_value": lo, "max_value": hi,
    }  # fmt: skip
    return {f"{name}_{k}": v for k, v in values.items()}


NEAT_DEFAULTS: dict[str, Any] = {
    "pop_size": 150,
    "fitness_criterion": "max",
    "fitness_threshold": None,
    "no_fitness_termination": False,
    "reset_on_extinction": True,
    "genome": {
        "num_inputs": None,
        "num_outputs": None,
        "num_hidden": 0,
        "feed_forward": True,
        "initial_connection": "full_direct",
        "compatibility_disjoint_coefficient": 1.0,
        "compatibility_weight_coefficient": 0.5,
        "conn_add_prob": 0.5,
        "conn_delete_prob": 0.05,
        "node_add_prob": 0.2,
        "node_delete_prob": 0.02,
        "single_structural_mutation": False,
        "structural_mutation_surer": "default",
        "activation_default": "sigmoid",
        "activation_options": ["sigmoid"],
        "activation_mutate_rate": 0.0,
        "aggregation_default": "sum",
        "aggregation_options": ["sum"],
        "aggregation_mutate_rate": 0.0,
        **_float_gene("bias", 0.0, 1.0, 0.5, 0.7, 0.1, -30.0, 30.0),
        **_float_gene("response", 1.0, 0.0, 0.0, 0.0, 0.0, -30.0, 30.0),
        **_float_gene("weight", 0.0, 1.0, 0.5, 0.8, 0.1, -30.0, 30.0),
        **_float_gene("time_constant", 1.0, 0.0, 0.0, 0.0, 0.0, 0.01, 10.0),
        "enabled_default": "true",
        "enabled_mutate_rate": 0.01,
        "enabled_rate_to_true_add": 0.0,
        "enabled_rate_to_false_add": 0.0,
    },
    "species": {"compatibility_threshold": 3.0},
    "stagnation": {"species_fitness_func": "max", "max_stagnation": 15, "species_elitism": 0},
    "reproduction": {"elitism": 2, "survival_threshold": 0.1, "min_species_size": 2},
}
"""Every key neat-python 2 demands, with Crucible's defaults; ``None`` means "from the task".

neat-python's XOR example config, changed where it helped on XOR (150 genomes, 4 - SSE >= 3.9;
100 seeds each, see ``benchmarks/results/neat.md``): rarer deletions (``conn_delete_prob``
0.5 -> 0.05, ``node_delete_prob`` 0.2 -> 0.02: hidden nodes survive long enough to be tuned),
no species protected from stagnation (``species_elitism`` 2 -> 0, ``max_stagnation`` 20 -> 15)
with ``reset_on_extinction`` (a population stuck on the "OR" plateau at fitness 3.0 dies out
and restarts instead of wasting the budget), ``min_species_size`` 2, ``initial_connection``
``full_direct``, and parents from the top 10% of each species, not 20% (``survival_threshold``
0.2 -> 0.1; at least 2 parents). Seeds 0-99: all solved, mean 32.0 generations (4,804
evaluations; 49.7 and 7,460 with 0.2); held-out seeds 200-299: all solved, 34.5 generations
(58.7 with 0.2). The example config solved 18 of seeds 0-19, in 99 generations on average."""

# -- validation rules: key -> (kind, argument) ---------------------------------------------------

_BOOL_WORDS = ("true", "false")
_RULES: dict[str, tuple[str, Any]] = {
    "pop_size": ("int", 2),
    "fitness_criterion": ("choice", ("max", "min", "mean")),
    "fitness_threshold": ("threshold", None),
    "no_fitness_termination": ("bool", None),
    "reset_on_extinction": ("bool", None),
    "num_inputs": ("int", 1),
    "num_outputs": ("int", 1),
    "num_hidden": ("int", 0),
    "feed_forward": ("true", None),
    "initial_connection": ("connection", None),
    "compatibility_disjoint_coefficient": ("nonneg", None),
    "compatibility_weight_coefficient": ("nonneg", None),
    "single_structural_mutation": ("bool", None),
    "structural_mutation_surer": ("choice", ("default", "true", "false")),
    "activation_default": ("choice", ("random", *ACTIVATION_NAMES)),
    "activation_options": ("names", ACTIVATION_NAMES),
    "aggregation_default": ("choice", ("random", *AGGREGATION_NAMES)),
    "aggregation_options": ("names", AGGREGATION_NAMES),
    "enabled_default": ("choice", ("true", "false", "random")),
    "compatibility_threshold": ("pos", None),
    "species_fitness_func": ("choice", ("max", "min", "mean", "median", "median2")),
    "max_stagnation": ("int", 1),
    "species_elitism": ("int", 0),
    "elitism": ("int", 0),
    "survival_threshold": ("unit_open", None),
    "min_species_size": ("int", 1),
}
for _gene in ("bias", "response", "weight", "time_constant"):
    _RULES.update({
        f"{_gene}_init_mean": ("float", None), f"{_gene}_init_stdev": ("nonneg", None),
        f"{_gene}_init_type": ("choice", ("gaussian", "normal", "uniform")), f"{_gene}_mutate_power": ("nonneg", None),
        f"{_gene}_mutate_rate": ("prob", None), f"{_gene}_replace_rate": ("prob", None),
        f"{_gene}_min_value": ("float", None), f"{_gene}_max_value": ("float", None),
    })  # fmt: skip
for _key in (
    "conn_add_prob",
    "conn_delete_prob",
    "node_add_prob",
    "node_delete_prob",
    "activation_mutate_rate",
    "aggregation_mutate_rate",
    "enabled_mutate_rate",
    "enabled_rate_to_true_add",
    "enabled_rate_to_false_add",
):
    _RULES[_key] = ("prob", None)  # fmt: skip


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check(kind: str, arg: Any, v: Any) -> str | None:
    """Why ``v`` is not allowed (``None`` when it is), as an ``allowed`` phrase."""
    if kind == "int":
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= arg
        return None if ok else f"must be an integer >= {arg}"
    if kind == "float":
        return None if _is_num(v) else "must be a finite number"
    if kind == "nonneg":
        return None if _is_num(v) and v >= 0 else "must be a finite number >= 0"
    if kind == "pos":
        return None if _is_num(v) and v > 0 else "must be a finite number > 0"
    if kind == "prob":
        return None if _is_num(v) and 0 <= v <= 1 else "must be a number in [0, 1]"
    if kind == "unit_open":
        return None if _is_num(v) and 0 < v <= 1 else "must be a number in (0, 1]"
    if kind == "threshold":
        return None if v is None or _is_num(v) else "must be a finite number, or null for no fitness termination"
    if kind == "bool":
        return None if isinstance(v, bool) else "must be true or false"
    if kind == "true":
        return None if v is True else "must be true (Crucible evaluates feed-forward networks only)"
    if kind == "choice":
        word = str(v).lower() if isinstance(v, bool) and "true" in arg else v
        return None if isinstance(word, str) and word in arg else "must be one of " + ", ".join(map(repr, arg))
    if kind == "names":
        names = v.split() if isinstance(v, str) else v
        ok = isinstance(names, list) and names and all(isinstance(n, str) and n in arg for n in names)
        return None if ok else "must be a non-empty list of names from " + ", ".join(map(repr, arg))
    if kind == "connection":
        parts = v.split() if isinstance(v, str) else []
        if parts and parts[0] in CONNECTIVITY and len(parts) == (2 if parts[0].startswith("partial") else 1):
            if len(parts) == 1:
                return None
            try:
                if 0.0 <= float(parts[1]) <= 1.0:
                    return None
            except ValueError:
                pass
        return (
            "must be one of " + ", ".join(map(repr, CONNECTIVITY)) + " (the partial ones followed by a fraction in "
            "[0, 1], e.g. 'partial_direct 0.5')"
        )
    raise AssertionError(kind)  # pragma: no cover - every rule kind is handled above


def neat_settings_issues(raw: Any, task: str | None = None) -> list[tuple[str, Any, str]]:
    """Every problem with user NEAT settings, as ``(path, value, allowed)``.

    Args:
        raw: The user's settings (see the module docstring); ``{}`` takes every default.
        task: The job's task, which fixes ``num_inputs`` / ``num_outputs`` (and the default
            ``fitness_threshold``); ``None`` or an unknown task: both must be given.

    Returns:
        ``[]`` when the settings are valid. ``path`` is dotted and relative to the settings
        (``"genome.conn_add_prob"``); ``allowed`` reads after the path (``"must be ..."``).
    """
    if not isinstance(raw, Mapping):
        return [("", raw, "must be a mapping of NEAT settings")]
    issues: list[tuple[str, Any, str]] = []
    _walk(raw, NEAT_DEFAULTS, "", issues)
    if issues:
        return issues
    full = _merge(raw, task)
    g = full["genome"]
    io = NEAT_TASK_IO.get(task) if task else None
    for i, key in enumerate(("num_inputs", "num_outputs")):
        given = raw.get("genome", {}).get(key)
        if io is not None and given is not None and given != io[i]:
            issues.append((f"genome.{key}", given, f"must be {io[i]} for task {task!r} (or left out)"))
        elif g[key] is None:
            issues.append((f"genome.{key}", None, "must be an integer >= 1 (the task does not fix it)"))
    for gene in ("bias", "response", "weight", "time_constant"):
        lo, hi = g[f"{gene}_min_value"], g[f"{gene}_max_value"]
        if lo > hi:
            issues.append((f"genome.{gene}_max_value", hi, f"must be >= genome.{gene}_min_value ({lo})"))
    for what in ("activation", "aggregation"):
        default, options = g[f"{what}_default"], _names(g[f"{what}_options"])
        if default != "random" and default not in options:
            issues.append((f"genome.{what}_default", default, f"must be 'random' or one of {what}_options {options}"))
    for section, key in (("reproduction", "elitism"), ("reproduction", "min_species_size")):
        if full[section][key] > full["pop_size"]:
            issues.append((f"{section}.{key}", full[section][key], f"must be <= pop_size ({full['pop_size']})"))
    return issues


def _walk(raw: Mapping[str, Any], defaults: Mapping[str, Any], prefix: str, issues: list) -> None:
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            issues.append((path, value, "is not a known setting; allowed: " + ", ".join(sorted(defaults))))
        elif isinstance(defaults[key], dict):
            if isinstance(value, Mapping):
                _walk(value, defaults[key], path + ".", issues)
            else:
                issues.append((path, value, f"must be a mapping of [{_SECTIONS[key]}] settings"))
        else:
            kind, arg = _RULES[key]
            why = None if value is None and key in ("num_inputs", "num_outputs") else _check(kind, arg, value)
            if why:
                issues.append((path, value, why))


def _names(v: str | list[str]) -> list[str]:
    return v.split() if isinstance(v, str) else list(v)


def _merge(raw: Mapping[str, Any], task: str | None) -> dict[str, Any]:
    full = copy.deepcopy(NEAT_DEFAULTS)
    if task in NEAT_TASK_IO:
        full["genome"]["num_inputs"], full["genome"]["num_outputs"] = NEAT_TASK_IO[task]
    full["fitness_threshold"] = TASK_THRESHOLDS.get(task) if task else None
    for key, value in raw.items():
        if isinstance(full[key], dict):
            full[key].update({k: v for k, v in value.items() if v is not None})
        else:
            full[key] = value
    return full


def resolve_neat_settings(raw: Mapping[str, Any] | None = None, task: str | None = None) -> dict[str, Any]:
    """Defaults, the task's inputs/outputs/threshold, and the user's settings, merged and checked.

    Args:
        raw: The user's settings (``None`` or ``{}``: all defaults).
        task: The job's task (see :func:`neat_settings_issues`).

    Returns:
        A complete settings dict (every key of :data:`NEAT_DEFAULTS`, nothing ``None`` except a
        ``fitness_threshold`` of "no threshold"); plain JSON data.

    Raises:
        ValueError: Listing every issue as ``path=value: allowed``.
    """
    raw = {} if raw is None else raw
    issues = neat_settings_issues(raw, task)
    if issues:
        raise ValueError(
            "Invalid NEAT settings: " + "; ".join(f"`{p or '<settings>'}` {why}, but got {v!r}" for p, v, why in issues)
        )
    full = _merge(raw, task)
    for what in ("activation", "aggregation"):
        full["genome"][f"{what}_options"] = _names(full["genome"][f"{what}_options"])
    for key in ("structural_mutation_surer", "enabled_default"):
        if isinstance(full["genome"][key], bool):
            full["genome"][key] = str(full["genome"][key]).lower()
    return full


def _ini_value(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return " ".join(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def neat_config_text(full: Mapping[str, Any]) -> str:
    """neat-python's INI text for resolved settings (from :func:`resolve_neat_settings`).

    A ``fitness_threshold`` of ``None`` is written as ``no_fitness_termination = True`` (the
    threshold line then holds a placeholder neat-python never reads).
    """
    top = {k: v for k, v in full.items() if not isinstance(v, dict)}
    if top["fitness_threshold"] is None:
        top["fitness_threshold"], top["no_fitness_termination"] = 0.0, True
    lines = ["[NEAT]", *(f"{k} = {_ini_value(v)}" for k, v in top.items())]
    for key, section in _SECTIONS.items():
        lines += ["", f"[{section}]", *(f"{k} = {_ini_value(v)}" for k, v in full[key].items())]
    return "\n".join(lines) + "\n"


OPTIONS = ("task", "neat", "batches", "generations", "failed_fitness")
"""Options of strategy ``neat`` (``SearchConfig.options``)."""


def check_neat_options(config: SearchConfig) -> dict[str, Any]:
    """Strategy ``neat``'s options from ``config``, checked, with defaults (errors name the option, echo the value)."""
    if not isinstance(config, SearchConfig):
        raise ValueError(f"`config` must be a SearchConfig, but got config={config!r}.")
    if config.mode is not Mode.MAX:
        raise ValueError(f"`mode` must be Mode.MAX for neat (fitness is maximized), but got mode={config.mode!r}.")
    if config.space:
        raise ValueError(
            f"`space` must be empty for neat (genomes are evolved, not sampled), but got {config.space!r}."
        )
    if config.pruner.kind != "none":
        raise ValueError(f"`pruner.kind` must be 'none' for neat, but got {config.pruner.kind!r}.")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int):
        raise ValueError(f"`seed` must be an int, but got seed={config.seed!r}.")
    opts = dict(config.options)
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(f"`options` may only hold {', '.join(OPTIONS)}, but got unknown {unknown}.")
    task = opts.get("task")
    if task is not None and task not in NEAT_TASK_IO and task != "function":
        raise ValueError(f"`task` must be one of {sorted(NEAT_TASK_IO)}, 'function' or None, but got task={task!r}.")
    for key, default in (("batches", 1), ("generations", config.n_trials)):
        name = key if key in opts or key == "batches" else "n_trials"  # n_trials: the default budget
        value = opts.setdefault(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1, but got {name}={value!r}.")
    failed = opts.setdefault("failed_fitness", None)
    if failed is not None and not (
        isinstance(failed, int | float) and not isinstance(failed, bool) and math.isfinite(failed)
    ):
        raise ValueError(f"`failed_fitness` must be a finite number or None, but got failed_fitness={failed!r}.")
    return opts


def build_neat_config(settings: Mapping[str, Any], genome_type: Any = None, species_set_type: Any = None) -> Any:
    """A ``neat.Config`` from resolved settings (INI text written to a temporary directory).

    Args:
        settings: The output of :func:`~search._neat_settings.resolve_neat_settings`.
        genome_type: The genome class; default :class:`~search._neat_fast.FastGenome`
            (``neat.DefaultGenome``'s genomes from the same random numbers, faster).
        species_set_type: The species set class; default
            :class:`~search._neat_species.FastSpeciesSet` (``neat.DefaultSpeciesSet``'s species, faster).
    """
    import neat

    from search._neat_fast import FastGenome
    from search._neat_species import FastSpeciesSet

    with tempfile.TemporaryDirectory(prefix="crucible-neat-") as tmp:
        path = os.path.join(tmp, "neat.ini")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(neat_config_text(settings))
        config = neat.Config(
            neat.DefaultGenome, neat.DefaultReproduction, neat.DefaultSpeciesSet, neat.DefaultStagnation, path
        )
    config.genome_type = genome_type or FastGenome  # after parsing: neat.Config reads the section of that name
    config.species_set_type = species_set_type or FastSpeciesSet
    return config
