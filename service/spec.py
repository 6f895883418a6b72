"""JobSpec: what to search, how, on what, and where to log it — and all validation of it.

A spec is validated when it is built (from YAML, a dict or Python), so a bad spec fails
at submit time with every problem listed, each naming the field path, echoing the value
and saying what is allowed. This module imports neither torch, Ray nor MLflow.

Example:
    >>> spec = JobSpec.from_dict({
    ...     "name": "demo", "task": "xor", "model": "mlp",
    ...     "objective": {"metric": "val_accuracy", "mode": "max"},
    ...     "budget": {"trials": 4, "parallel": 2},
    ...     "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
    ...     "fixed": {"epochs": 5},
    ... })
    >>> spec.budget.parallel
    2
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.catalog import METRICS, MODELS, TASKS, HParam
from search.base import Mode, PrunerConfig, SearchConfig
from search.space import Categorical, Dimension, Float, Int
from service import families
from service.errors import SpecError, SpecIssue

STRATEGY_NAMES = ("bayes", "random", "anneal", "neat")
PRUNER_NAMES = ("none", "median", "asha")


@dataclass(frozen=True)
class Objective:
    """What a trial optimizes.

    Attributes:
        metric: Name of the metric to optimize (built-in: see ``models.catalog.METRICS``).
        mode: ``"min"`` or ``"max"``.
        function: Custom trial ``fn(config, report) -> dict`` as a callable (embedded mode)
            or an import path ``"pkg.module:fn"``; ``None`` runs the built-in task/model.
    """

    metric: str = "val_accuracy"
    mode: str = "max"
    function: str | Callable[..., dict[str, float]] | None = None


@dataclass(frozen=True)
class Budget:
    """How much work a job may do.

    Attributes:
        trials: Number of trials.
        parallel: Trials in flight at once (one Ray actor each).
        max_wall_seconds: Optional wall-clock limit for the whole job.
        target: Optional objective value that ends the job early once reached.
        max_trial_seconds: Optional time limit of one trial; a trial over it is stopped and failed.
        trial_retries: Times a trial whose worker died is run again on a fresh worker before
            it is failed.
    """

    trials: int = 20
    parallel: int = 1
    max_wall_seconds: float | None = None
    target: float | None = None
    max_trial_seconds: float | None = None
    trial_retries: int = 1


@dataclass(frozen=True)
class Resources:
    """Resources of one trial's actor (fractions allowed)."""

    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class Tracking:
    """Where the job is logged.

    Attributes:
        uri: MLflow tracking URI (default: the embedded sqlite store ``sqlite:///mlflow.db``).
        experiment: MLflow experiment name (default: the job's name).
    """

    uri: str = "sqlite:///mlflow.db"
    experiment: str | None = None


@dataclass(frozen=True)
class JobSpec:
    """A complete, validated search job.

    Build it with :meth:`from_yaml`, :meth:`from_dict` or the constructor; each validates.

    Example:
        >>> JobSpec(name="x", task="xor", model="mlp", space={"lr": Float(1e-3, 1e-1, log=True)}).strategy
        'bayes'
    """

    name: str
    strategy: str = "bayes"
    objective: Objective = None  # type: ignore[assignment]  # None: the strategy's default (see __post_init__)
    budget: Budget = Budget()
    task: str | None = None
    model: str | None = None
    space: dict[str, Dimension] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    pruning: PrunerConfig = PrunerConfig()
    resources: Resources = Resources()
    tracking: Tracking = Tracking()
    seed: int = 0
    strategy_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.objective is None:  # the objective the strategy reads (anneal: energy, neat: fitness), else the default
            family = families.FAMILY_OBJECTIVES.get(self.strategy) if isinstance(self.strategy, str) else None
            object.__setattr__(self, "objective", Objective(*family) if family else Objective())
        issues = _validate(self)
        if issues:
            raise SpecError(issues)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_yaml(cls, path: str | Path) -> JobSpec:
        """Load and validate a spec from a YAML file."""
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> JobSpec:
        """Build and validate a spec from plain data (the YAML / JSON form)."""
        issues: list[SpecIssue] = []
        if not isinstance(data, dict):
            raise SpecError([SpecIssue("<spec>", data, "must be a mapping of fields")])
        _unknown_keys(data, _TOP_KEYS, "", issues)
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in _PLAIN_KEYS}
        kwargs.setdefault("name", None)  # required: validation says so with the other problems
        strategy = data.get("strategy")
        family = families.FAMILY_OBJECTIVES.get(strategy) if _one_of(strategy, families.FAMILY_OBJECTIVES) else None
        for key, klass in _SECTIONS.items():
            raw = data.get(key, {})
            if raw is None:
                raw = {}
            if not isinstance(raw, dict):
                issues.append(SpecIssue(key, raw, "must be a mapping"))
                continue
            _unknown_keys(raw, _fields(klass), key + ".", issues)
            if key == "objective" and family is not None:
                raw = {"metric": family[0], "mode": family[1], **raw}  # what the user wrote is checked, not replaced
            kwargs[key] = klass(**{k: v for k, v in raw.items() if k in _fields(klass)})
        raw_space = data.get("space", {}) or {}
        if not isinstance(raw_space, dict):
            issues.append(SpecIssue("space", raw_space, "must be a mapping of parameter name to dimension"))
            raw_space = {}
        dims = {name: _parse_dim(f"space.{name}", d, issues) for name, d in raw_space.items()}
        kwargs["space"] = {name: d for name, d in dims.items() if d is not None}
        try:
            spec = cls(**kwargs)
        except SpecError as err:
            raise SpecError(issues + err.issues) from None
        if issues:
            raise SpecError(issues)
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The YAML / JSON form (round-trips through :meth:`from_dict`)."""
        fn = self.objective.function
        return {
            "name": self.name,
            "strategy": self.strategy,
            "objective": {
                "metric": self.objective.metric,
                "mode": self.objective.mode,
                "function": fn if fn is None or isinstance(fn, str) else _callable_name(fn),
            },
            "budget": vars(self.budget).copy(),
            "task": self.task,
            "model": self.model,
            "space": {k: d.to_dict() for k, d in self.space.items()},
            "fixed": copy.deepcopy(self.fixed),
            "pruning": vars(self.pruning).copy(),
            "resources": vars(self.resources).copy(),
            "tracking": vars(self.tracking).copy(),
            "seed": self.seed,
            "strategy_options": copy.deepcopy(self.strategy_options),
        }

    # ------------------------------------------------------------------ derived
    @property
    def mode(self) -> Mode:
        """Objective direction as an Enum."""
        return Mode(self.objective.mode)

    @property
    def experiment_name(self) -> str:
        """MLflow experiment name."""
        return self.tracking.experiment or self.name

    def search_config(self) -> SearchConfig:
        """What the strategy needs: space, direction, budget, seed, pruner, options."""
        return SearchConfig(
            space=dict(self.space),
            mode=self.mode,
            n_trials=self.budget.trials,
            seed=self.seed,
            pruner=self.pruning,
            options=families.search_options(self),
        )

    def trial_function(self) -> str | Callable[..., dict[str, float]] | None:
        """What a worker runs for one trial: a family's or the user's function, or ``None`` (built-in trainer)."""
        return families.trial_function(self)

    def trial_config(self, params: dict[str, Any]) -> dict[str, Any]:
        """Fixed parameters overlaid with a trial's searched ones."""
        return families.trial_config(self, params)


# ---------------------------------------------------------------------- parsing
_PLAIN_KEYS = {"name", "strategy", "task", "model", "fixed", "seed", "strategy_options"}
_SECTIONS: dict[str, type] = {
    "objective": Objective,
    "budget": Budget,
    "pruning": PrunerConfig,
    "resources": Resources,
    "tracking": Tracking,
}
_TOP_KEYS = _PLAIN_KEYS | set(_SECTIONS) | {"space"}
_DIM_KEYS = {
    "float": {"type", "low", "high", "log"},
    "int": {"type", "low", "high", "log"},
    "categorical": {"type", "choices"},
}


def _fields(klass: type) -> set[str]:
    return set(klass.__dataclass_fields__)


def _unknown_keys(raw: dict[str, Any], allowed: set[str], prefix: str, issues: list[SpecIssue]) -> None:
    for key in raw:
        if key not in allowed:
            issues.append(
                SpecIssue(f"{prefix}{key}", raw[key], f"is not a known field; allowed: {', '.join(sorted(allowed))}")
            )


def _parse_dim(path: str, raw: Any, issues: list[SpecIssue]) -> Dimension | None:
    if isinstance(raw, Float | Int | Categorical):
        return raw
    if not isinstance(raw, dict) or not _one_of(raw.get("type"), _DIM_KEYS):
        got = raw.get("type") if isinstance(raw, dict) else raw
        issues.append(
            SpecIssue(
                f"{path}.type" if isinstance(raw, dict) else path, got, "must be one of 'float', 'int', 'categorical'"
            )
        )
        return None
    kind = raw["type"]
    n_before = len(issues)
    _unknown_keys(raw, _DIM_KEYS[kind], path + ".", issues)
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            issues.append(SpecIssue(f"{path}.choices", choices, "must be a non-empty list"))
        elif len(set(map(repr, choices))) != len(choices):
            issues.append(SpecIssue(f"{path}.choices", choices, "must not repeat a value"))
        return Categorical(tuple(choices)) if len(issues) == n_before else None
    for bound in ("low", "high"):
        v = raw.get(bound)
        ok_int = isinstance(v, int) and not isinstance(v, bool)
        ok = ok_int if kind == "int" else (ok_int or isinstance(v, float))
        if not ok:
            issues.append(SpecIssue(f"{path}.{bound}", v, f"must be {'an integer' if kind == 'int' else 'a number'}"))
    if not isinstance(raw.get("log", False), bool):
        issues.append(SpecIssue(f"{path}.log", raw.get("log"), "must be true or false"))
    if len(issues) != n_before:
        return None
    klass = Int if kind == "int" else Float
    return klass(raw["low"], raw["high"], raw.get("log", False))


# ------------------------------------------------------------------- validation
def _validate(spec: JobSpec) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    add = issues.append
    if not isinstance(spec.name, str) or not spec.name.strip():
        add(SpecIssue("name", spec.name, "must be a non-empty string"))
    if not _one_of(spec.strategy, STRATEGY_NAMES):
        add(SpecIssue("strategy", spec.strategy, f"must be one of {', '.join(map(repr, STRATEGY_NAMES))}"))
    if not _is_int(spec.seed) or spec.seed < 0:
        add(SpecIssue("seed", spec.seed, "must be a non-negative integer"))
    if not isinstance(spec.strategy_options, dict):
        add(SpecIssue("strategy_options", spec.strategy_options, "must be a mapping"))
    _validate_budget(spec.budget, add)
    _validate_objective(spec, add)
    _validate_resources(spec.resources, add)
    _validate_pruning(spec.pruning, add)
    if not isinstance(spec.tracking.uri, str) or not spec.tracking.uri:
        add(SpecIssue("tracking.uri", spec.tracking.uri, "must be an MLflow tracking URI string"))
    if spec.tracking.experiment is not None and not isinstance(spec.tracking.experiment, str):
        add(SpecIssue("tracking.experiment", spec.tracking.experiment, "must be a string"))
    _validate_params(spec, add)
    families.validate(spec, add)
    return issues


def _one_of(value: Any, allowed: Any) -> bool:
    """``value in allowed`` for a value of any type (a list or dict is simply not one of them)."""
    return isinstance(value, str) and value in allowed


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def _validate_budget(b: Budget, add: Callable[[SpecIssue], None]) -> None:
    if not _is_int(b.trials) or b.trials <= 0:
        add(SpecIssue("budget.trials", b.trials, "must be a positive integer"))
    if not _is_int(b.parallel) or b.parallel <= 0:
        add(SpecIssue("budget.parallel", b.parallel, "must be a positive integer"))
    elif _is_int(b.trials) and b.parallel > b.trials:
        add(SpecIssue("budget.parallel", b.parallel, f"must be <= budget.trials ({b.trials})"))
    if b.max_wall_seconds is not None and (not _is_num(b.max_wall_seconds) or b.max_wall_seconds <= 0):
        add(SpecIssue("budget.max_wall_seconds", b.max_wall_seconds, "must be a positive number or null"))
    if b.target is not None and not _is_num(b.target):
        add(SpecIssue("budget.target", b.target, "must be a finite number or null"))
    if b.max_trial_seconds is not None and (not _is_num(b.max_trial_seconds) or b.max_trial_seconds <= 0):
        add(SpecIssue("budget.max_trial_seconds", b.max_trial_seconds, "must be a positive number or null"))
    if not _is_int(b.trial_retries) or b.trial_retries < 0:
        add(SpecIssue("budget.trial_retries", b.trial_retries, "must be an integer >= 0"))


def _validate_objective(spec: JobSpec, add: Callable[[SpecIssue], None]) -> None:
    obj = spec.objective
    if not _one_of(obj.mode, ("min", "max")):
        add(SpecIssue("objective.mode", obj.mode, "must be 'min' or 'max'"))
    fn = obj.function
    if fn is not None:
        if isinstance(fn, str) and (fn.count(":") != 1 or not all(fn.split(":"))):
            add(SpecIssue("objective.function", fn, "must be an import path 'pkg.module:function'"))
        elif not isinstance(fn, str) and not callable(fn):
            add(SpecIssue("objective.function", fn, "must be a callable or an import path 'pkg.module:function'"))
        if not isinstance(obj.metric, str) or not obj.metric:
            add(SpecIssue("objective.metric", obj.metric, "must be the name of a metric your function returns"))
        for key in ("task", "model"):
            if getattr(spec, key) is not None:
                add(SpecIssue(key, getattr(spec, key), "must be null when objective.function is given"))
        return
    if _one_of(spec.strategy, families.FAMILY_OBJECTIVES):
        return  # the family checks its task, model and objective
    if not _one_of(spec.task, TASKS):
        add(SpecIssue("task", spec.task, f"must be one of {', '.join(map(repr, TASKS))}"))
    if not _one_of(spec.model, MODELS):
        add(SpecIssue("model", spec.model, f"must be one of {', '.join(map(repr, MODELS))}"))
    if not _one_of(obj.metric, METRICS):
        add(SpecIssue("objective.metric", obj.metric, f"must be one of {', '.join(map(repr, METRICS))}"))


def _validate_resources(r: Resources, add: Callable[[SpecIssue], None]) -> None:
    if not _is_num(r.cpu) or r.cpu <= 0:
        add(SpecIssue("resources.cpu", r.cpu, "must be a positive number (fractions allowed)"))
    if not _is_num(r.gpu) or r.gpu < 0:
        add(SpecIssue("resources.gpu", r.gpu, "must be a number >= 0 (fractions allowed)"))
    elif r.gpu > 1 and not float(r.gpu).is_integer():
        add(SpecIssue("resources.gpu", r.gpu, "must be a fraction <= 1 or a whole number of GPUs"))


def _validate_pruning(p: PrunerConfig, add: Callable[[SpecIssue], None]) -> None:
    if not _one_of(p.kind, PRUNER_NAMES):
        add(SpecIssue("pruning.kind", p.kind, f"must be one of {', '.join(map(repr, PRUNER_NAMES))}"))
    for name in ("warmup_steps", "min_trials", "min_resource"):
        v, lowest = getattr(p, name), 0 if name == "warmup_steps" else 1
        if not _is_int(v) or v < lowest:
            add(SpecIssue(f"pruning.{name}", v, f"must be an integer >= {lowest}"))
    if not _is_int(p.reduction_factor) or p.reduction_factor < 2:
        add(SpecIssue("pruning.reduction_factor", p.reduction_factor, "must be an integer >= 2"))


def _validate_params(spec: JobSpec, add: Callable[[SpecIssue], None]) -> None:
    if not isinstance(spec.fixed, dict):
        add(SpecIssue("fixed", spec.fixed, "must be a mapping of parameter name to value"))
        return
    if not spec.space and spec.strategy == "bayes":
        add(SpecIssue("space", spec.space, "must define at least one dimension for strategy 'bayes'"))
    hparams = MODELS.get(spec.model) if spec.objective.function is None and _one_of(spec.model, MODELS) else None
    for name, dim in spec.space.items():
        path = f"space.{name}"
        if not isinstance(dim, Float | Int | Categorical):
            add(SpecIssue(path, dim, "must be a Float, Int or Categorical dimension"))
            continue
        _validate_dim(path, dim, add)
        if name in spec.fixed:
            add(SpecIssue(path, dim.to_dict(), f"must not also be fixed (fixed.{name} = {spec.fixed[name]!r})"))
        if hparams is not None:
            _validate_against_hparam(path, name, dim, hparams, spec.model, add)
    if hparams is not None:
        for name, value in spec.fixed.items():
            hp = hparams.get(name)
            if hp is None:
                add(SpecIssue(f"fixed.{name}", value, _unknown_hparam(spec.model, hparams)))
            elif (why := hp.check(value)) is not None:
                add(SpecIssue(f"fixed.{name}", value, why))


def _validate_dim(path: str, dim: Dimension, add: Callable[[SpecIssue], None]) -> None:
    if isinstance(dim, Categorical):
        if len(dim.choices) == 0:
            add(SpecIssue(f"{path}.choices", list(dim.choices), "must be a non-empty list"))
        return
    if not (_is_num(dim.low) and _is_num(dim.high)):
        add(SpecIssue(path, dim.to_dict(), "must have finite numeric low and high"))
        return
    if dim.low >= dim.high:
        add(SpecIssue(path, {"low": dim.low, "high": dim.high}, "must satisfy low < high"))
    if dim.log and dim.low <= 0:
        add(SpecIssue(f"{path}.low", dim.low, "must be > 0 when log is true (a log range cannot include 0)"))


def _validate_against_hparam(
    path: str,
    name: str,
    dim: Dimension,
    hparams: dict[str, HParam],
    model: str | None,
    add: Callable[[SpecIssue], None],
) -> None:
    hp = hparams.get(name)
    if hp is None:
        add(SpecIssue(path, dim.to_dict(), _unknown_hparam(model, hparams)))
        return
    if isinstance(dim, Categorical):
        for i, choice in enumerate(dim.choices):
            if (why := hp.check(choice)) is not None:
                add(SpecIssue(f"{path}.choices[{i}]", choice, why))
        return
    if hp.kind not in ("int", "float"):
        add(SpecIssue(f"{path}.type", dim.to_dict()["type"], f"must be 'categorical' for {name} ({hp.allowed()})"))
        return
    if hp.kind == "int" and isinstance(dim, Float):
        add(SpecIssue(f"{path}.type", "float", f"must be 'int' or 'categorical' for {name}, an integer"))
    for bound in ("low", "high"):
        if (why := hp.check(getattr(dim, bound))) is not None:
            add(SpecIssue(f"{path}.{bound}", getattr(dim, bound), why))


def _unknown_hparam(model: str | None, hparams: dict[str, HParam]) -> str:
    return f"is not a hyperparameter of model {model!r}; allowed: {', '.join(sorted(hparams))}"


def _callable_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
