"""What each search family needs from the service: objective, worker function, shared input, checks.

The job loop (``service.runner``) is one loop for every strategy. What differs between the
families is gathered here, so the loop, the spec and the tracking stay generic:

* ``bayes`` / ``random`` — a trial trains one network with the built-in trainer
  (``models.train``) or runs the user's ``objective.function``.
* ``anneal`` — a trial is one replica's round (``models.anneal.replica_trial``); the job's
  objective is the replica's ``energy`` (minimized); the task's data set is shared through
  the object store; the MLP's fixed hyperparameters pick the annealing trainer.
* ``neat`` — a trial is one batch of a generation's genomes
  (``models.neat_tasks.neat_trial``); the objective is the batch's best ``fitness``
  (maximized); the NEAT task settings go to the object store once per job.

This module imports neither torch, Ray nor MLflow (``service.spec`` validates with it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from models.catalog import TASKS, TRAINERS
from search.base import SearchConfig
from service.errors import SpecIssue

if TYPE_CHECKING:
    from service.spec import JobSpec

Add = Callable[[SpecIssue], None]

FAMILY_OBJECTIVES: dict[str, tuple[str, str]] = {"anneal": ("energy", "min"), "neat": ("fitness", "max")}
"""The objective ``(metric, mode)`` a family's strategy reads; the spec fills it in when omitted."""

_NEAT_RESERVED = ("task", "genomes", "generation", "seed", "device", "neat")
NEAT_TASK_KEYS = ("episodes", "max_steps", "metric", "split", "max_samples", "data_seed", "function", "dtype")
"""``fixed`` keys a NEAT job may set for its fitness task (see ``models.neat_tasks``)."""

_PRIVATE_PARAMS: dict[str, frozenset[str]] = {"anneal": frozenset({"checkpoint"}), "neat": frozenset({"genomes"})}

_WORKER_FUNCTIONS = {"anneal": "models.anneal:replica_trial", "neat": "models.neat_tasks:neat_trial"}


def trial_function(spec: JobSpec) -> str | Callable[..., dict[str, float]] | None:
    """What a worker runs for one trial: a family's function, the user's, or ``None`` (built-in trainer)."""
    return _WORKER_FUNCTIONS.get(spec.strategy, spec.objective.function)


def private_params(spec: JobSpec) -> frozenset[str]:
    """Proposal params that are work payload, not settings: sent to the worker, never stored or logged."""
    return _PRIVATE_PARAMS.get(spec.strategy, frozenset())


def streams_reports(spec: JobSpec) -> bool:
    """Whether a trial's per-step reports are streamed back (a NEAT batch makes none)."""
    return spec.strategy != "neat"


def rounds_budget(spec: JobSpec) -> int | None:
    """How many rounds the job's budget buys when it counts rounds, not trials (NEAT: generations), else ``None``."""
    if spec.strategy != "neat":
        return None
    from search._neat_settings import check_neat_options

    return int(check_neat_options(spec.search_config())["generations"])


def needs_shared(spec: JobSpec) -> bool:
    """Whether the job puts a shared input (data set, NEAT task settings) in the object store."""
    return spec.strategy in _WORKER_FUNCTIONS or spec.objective.function is None


def shared_input(spec: JobSpec) -> Any:
    """The job's input every trial shares, put in the object store once (imports torch for data sets)."""
    if spec.strategy == "neat":
        from search._neat_settings import resolve_neat_settings

        options = spec.strategy_options
        settings = resolve_neat_settings(options.get("neat") or {}, spec.task)
        return {**spec.fixed, "task": spec.task, "neat": settings}
    from models.data import load_task

    return load_task(spec.task, seed=spec.seed)


def trial_config(spec: JobSpec, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's full config: fixed parameters overlaid with its proposal's (the family's defaults first)."""
    if spec.strategy == "anneal":
        return {"trainer": "hybrid", **spec.fixed, **params}
    if spec.strategy == "neat":
        return dict(params)  # the task settings travel once, in the shared input
    return {**spec.fixed, **params}


def search_options(spec: JobSpec) -> dict[str, Any]:
    """Strategy options as the strategy takes them (NEAT: its task, and one batch per parallel worker)."""
    options = dict(spec.strategy_options) if isinstance(spec.strategy_options, dict) else {}
    if spec.strategy == "neat":
        options.setdefault("task", spec.task)
        options.setdefault("batches", spec.budget.parallel)
    return options


def validate(spec: JobSpec, add: Add) -> None:
    """Family-specific checks of a spec whose strategy is ``anneal`` or ``neat`` (others: nothing)."""
    if not isinstance(spec.strategy, str) or spec.strategy not in FAMILY_OBJECTIVES:
        return
    metric, mode = FAMILY_OBJECTIVES[spec.strategy]
    if spec.objective.metric != metric or spec.objective.mode != mode:
        got = {"metric": spec.objective.metric, "mode": spec.objective.mode}
        add(SpecIssue("objective", got, f"must be metric {metric!r}, mode {mode!r} for strategy {spec.strategy!r}"))
    if spec.objective.function is not None:
        add(SpecIssue("objective.function", spec.objective.function, f"must be null for strategy {spec.strategy!r}"))
    if spec.space:
        add(SpecIssue("space", {k: d.to_dict() for k, d in spec.space.items()},
                      f"must be empty for strategy {spec.strategy!r} (it proposes its own work)"))  # fmt: skip
    if spec.pruning.kind != "none":
        add(SpecIssue("pruning.kind", spec.pruning.kind, f"must be 'none' for strategy {spec.strategy!r}"))
    if spec.strategy == "anneal":
        _validate_anneal(spec, add)
    else:
        _validate_neat(spec, add)
    _validate_options(spec, add)


def _validate_anneal(spec: JobSpec, add: Add) -> None:
    if spec.task not in TASKS:
        add(SpecIssue("task", spec.task, f"must be one of {', '.join(map(repr, TASKS))}"))
    if spec.model != "mlp":
        add(SpecIssue("model", spec.model, "must be 'mlp' for strategy 'anneal' (its weights are annealed)"))
    if not isinstance(spec.fixed, dict):
        return
    trainer = spec.fixed.get("trainer", "hybrid")
    annealers = tuple(t for t in TRAINERS if t != "backprop")
    if trainer not in annealers:
        add(SpecIssue("fixed.trainer", trainer, f"must be one of {', '.join(map(repr, annealers))} "
                      "for strategy 'anneal' (default 'hybrid')"))  # fmt: skip
    for key in ("replica", "temperature", "steps", "round", "checkpoint"):
        if key in spec.fixed:
            add(SpecIssue(f"fixed.{key}", spec.fixed[key], "is set by strategy 'anneal' per round; remove it"))


def _validate_neat(spec: JobSpec, add: Add) -> None:
    from search._neat_settings import NEAT_TASK_IO, neat_settings_issues

    tasks = (*NEAT_TASK_IO, "function")
    if spec.task not in tasks:
        add(SpecIssue("task", spec.task, f"must be one of {', '.join(map(repr, tasks))} for strategy 'neat'"))
    if spec.model is not None:
        add(SpecIssue("model", spec.model, "must be null for strategy 'neat' (the genomes are the networks)"))
    if isinstance(spec.fixed, dict):
        for key, value in spec.fixed.items():
            if key in _NEAT_RESERVED:
                add(SpecIssue(f"fixed.{key}", value, "is set by strategy 'neat' for every batch; remove it"))
            elif key not in NEAT_TASK_KEYS and spec.task != "function":  # a user's fitness gets its own keys
                add(
                    SpecIssue(
                        f"fixed.{key}",
                        value,
                        f"is not a NEAT task setting; allowed: {', '.join(NEAT_TASK_KEYS)} "
                        "(any key with task 'function', for the fitness function's own settings)",
                    )
                )
        if spec.task == "function" and not isinstance(spec.fixed.get("function"), str):
            add(SpecIssue("fixed.function", spec.fixed.get("function"),
                          "must be an import path 'pkg.module:fitness' for task 'function'"))  # fmt: skip
    options = spec.strategy_options if isinstance(spec.strategy_options, dict) else {}
    settings = options.get("neat") or {}
    if not isinstance(settings, dict):
        add(SpecIssue("strategy_options.neat", settings, "must be a mapping of NEAT settings"))
        return
    task = spec.task if spec.task in NEAT_TASK_IO else None
    for path, value, why in neat_settings_issues(settings, task):
        add(SpecIssue(f"strategy_options.neat.{path}", value, why))


def _validate_options(spec: JobSpec, add: Add) -> None:
    """Let the strategy check its options (messages name the option and echo its value)."""
    if not isinstance(spec.strategy_options, dict):
        return
    if spec.objective.mode not in ("min", "max") or not isinstance(spec.budget.trials, int):
        return  # reported already
    from search._neat_settings import check_neat_options as neat_options
    from search.anneal import check_anneal_options as anneal_options

    config = SearchConfig(space={}, mode=spec.mode, n_trials=spec.budget.trials, seed=spec.seed,
                          options=search_options(spec))  # fmt: skip
    try:
        (anneal_options if spec.strategy == "anneal" else neat_options)(config)
    except (ValueError, TypeError) as err:
        add(SpecIssue("strategy_options", spec.strategy_options, str(err)))
