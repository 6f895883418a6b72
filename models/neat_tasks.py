"""Fitness of a batch of NEAT genomes: the function a worker runs for one NEAT proposal.

:func:`evaluate_batch` has the ``fn(config, report)`` signature of Crucible's custom trial
functions. It compiles the batch once (:mod:`models.neat_torch`) and evaluates every genome
with batched tensor operations; no loop over genomes. Fitness is always "higher is better".

Tasks (``config["task"]``):

* ``"xor"`` — neat-python's XOR example: inputs ``(0,0), (0,1), (1,0), (1,1)``, fitness
  ``4 - sum of squared errors`` of output 0 (4.0 is perfect). Not the noisy XOR *data set*
  of :mod:`models.data`.
* ``"wine"``, ``"digits"``, ``"breast_cancer"`` — scikit-learn's bundled data via
  :func:`models.data.load_task` (standardized, seeded 60/20/20 split, ``data_seed``). The
  predicted class is the argmax of the outputs. Fitness (``metric``): ``"accuracy"`` (default)
  on ``split`` (``"train"``), or ``"log_loss"``: minus the mean cross-entropy of
  ``softmax(outputs)``. At most ``max_samples`` rows are used (default 500, so one digits
  generation stays fast; wine's 106 training rows are all used).
* ``"cartpole"`` — gymnasium ``CartPole-v1``: fitness is the mean return over ``episodes``
  episodes (default 5; a return is the number of steps before the pole falls, at most
  ``max_steps`` = 500). All genomes' environments step in lockstep, one batched forward per
  time step, with :func:`cartpole_step` (gymnasium's own equations, vectorized). Episode
  ``e`` of generation ``g`` starts where ``gymnasium.make("CartPole-v1").reset(seed=s_e)``
  starts, ``s = SeedSequence([seed, g]).generate_state(episodes)``: every genome of a
  generation faces the same start states, and they change every generation. Action: output
  0 > 0.5 (one output) or the argmax of two outputs.
* ``"function"`` — a user's fitness, ``config["function"] = "pkg.module:fn"``, called as
  ``fn(batch, config)`` with the compiled :class:`~models.neat_torch.GenomeBatch` (its
  ``genomes`` are the genome dicts, ``keys`` their keys, ``activate(x)`` evaluates them all);
  it returns one fitness per genome, in batch order (a list, NumPy array or tensor). In a
  job, ``config`` also holds the job's ``fixed`` keys: any key the function wants (besides
  the reserved ``task``, ``genomes``, ``generation``, ``seed``, ``device``, ``neat``).

Other keys: ``genomes`` (required; genome dicts, or a batch as columns:
``search._neat_genome.genome_columns``, the form a NEAT job sends), ``generation`` and ``seed`` (from the NEAT
proposal), ``device`` (``"cpu"`` default, ``"cuda"``, or ``"auto"``), ``dtype`` (``"float32"``
default, or ``"float64"``).

Returns ``{"fitness.<genome key>": value, ...}`` plus ``batch_best``, ``batch_mean``,
``batch_size``, ``batch_invalid`` (genomes whose fitness was not finite: their
``fitness.<key>`` is left out, and the NEAT strategy treats them as failed),
``eval_seconds`` and, for CartPole, ``env_steps``.

Example:
    >>> g = {"key": 7, "inputs": [-1, -2], "outputs": [0], "connections": [],
    ...      "nodes": {"0": {"bias": 0.0, "response": 1.0, "activation": "sigmoid", "aggregation": "sum"}}}
    >>> evaluate_batch({"task": "xor", "genomes": [g]})["fitness.7"]
    3.0
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from models.data import load_task
from models.neat_torch import GenomeBatch, compile_genomes
from search._neat_genome import is_columns

XOR_INPUTS = ((0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0))
XOR_OUTPUTS = (0.0, 1.0, 1.0, 0.0)
CLASSIFICATION = ("wine", "digits", "breast_cancer")
TASKS = ("xor", *CLASSIFICATION, "cartpole", "function")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def evaluate_batch(config: Mapping[str, Any], report: Callable[..., None] | None = None) -> dict[str, float]:
    """Fitness of every genome in ``config["genomes"]`` on ``config["task"]``.

    Args:
        config: See the module docstring for every key.
        report: The trial's report callback (unused: one batch is one step).

    Returns:
        ``fitness.<key>`` per genome and the batch summaries listed in the module docstring.

    Raises:
        ValueError: An unknown task, key value, or malformed genome (the message names it).
    """
    del report
    started = time.perf_counter()
    task = config.get("task")
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {', '.join(map(repr, TASKS))}, but got task={task!r}.")
    genomes = config.get("genomes")
    if not (isinstance(genomes, list) or is_columns(genomes)) or not genomes:
        raise ValueError(
            "`genomes` must be a non-empty list of genome dicts (or a batch as columns), "
            f"but got {type(genomes).__name__}."
        )
    dtype = _DTYPES.get(config.get("dtype", "float32"))
    if dtype is None:
        raise ValueError(f"`dtype` must be one of {', '.join(map(repr, _DTYPES))}, but got {config.get('dtype')!r}.")
    batch = compile_genomes(genomes, device=_device(config.get("device", "cpu")), dtype=dtype)
    extras: dict[str, float] = {}
    with torch.inference_mode():
        if task == "xor":
            fitness = xor_fitness(batch)
        elif task in CLASSIFICATION:
            fitness = classification_fitness(batch, config)
        elif task == "cartpole":
            fitness, steps = cartpole_fitness(batch, config)
            extras["env_steps"] = float(steps)
        else:
            fitness = _user_fitness(batch, config)
    out: dict[str, float] = {}
    valid = []
    for key, value in zip(batch.keys, fitness, strict=True):
        if math.isfinite(value):
            out[f"fitness.{key}"] = value
            valid.append(value)
    out["batch_best"] = max(valid) if valid else math.nan
    out["batch_mean"] = sum(valid) / len(valid) if valid else math.nan
    out["batch_size"] = float(len(batch))
    out["batch_invalid"] = float(len(batch) - len(valid))
    out.update(extras)
    out["eval_seconds"] = time.perf_counter() - started
    return out


def _device(name: Any) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"`device` must be 'cpu', 'cuda[:n]' or 'auto', but got device={name!r}.") from err


def _int(config: Mapping[str, Any], key: str, default: int, low: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"`{key}` must be an integer >= {low}, but got {key}={value!r}.")
    return value


def xor_fitness(batch: GenomeBatch) -> list[float]:
    """neat-python's XOR fitness, ``4 - sum((output - target)^2)`` over the 4 cases."""
    out = batch.activate(XOR_INPUTS)[:, :, 0]
    target = torch.tensor(XOR_OUTPUTS, dtype=out.dtype, device=out.device)
    return (4.0 - ((out - target) ** 2).sum(dim=1)).tolist()


def classification_fitness(batch: GenomeBatch, config: Mapping[str, Any]) -> list[float]:
    """Accuracy (or minus the cross-entropy) of the argmax class on a built-in data set."""
    name = config["task"]
    split = config.get("split", "train")
    if split not in ("train", "val", "test"):
        raise ValueError(f"`split` must be one of 'train', 'val', 'test', but got split={split!r}.")
    metric = config.get("metric", "accuracy")
    if metric not in ("accuracy", "log_loss"):
        raise ValueError(f"`metric` must be 'accuracy' or 'log_loss', but got metric={metric!r}.")
    data = load_task(name, seed=_int(config, "data_seed", 0, 0))
    n = _int(config, "max_samples", 500, 1)
    X, y = getattr(data, f"X_{split}")[:n], getattr(data, f"y_{split}")[:n]
    if batch.n_inputs != data.n_features or batch.n_outputs != data.n_classes:
        raise ValueError(
            f"task {name!r} needs genomes with {data.n_features} inputs and {data.n_classes} outputs, but got "
            f"{batch.n_inputs} and {batch.n_outputs}."
        )
    out = batch.activate(X)  # (G, N, C)
    labels = torch.as_tensor(np.array(y), device=out.device)
    if metric == "accuracy":
        return (out.argmax(-1) == labels).to(out.dtype).mean(1).tolist()
    logp = torch.log_softmax(out, dim=-1)
    return logp.gather(-1, labels.expand(len(batch), -1).unsqueeze(-1)).squeeze(-1).mean(1).tolist()


@lru_cache(maxsize=1)
def _cartpole_constants() -> dict[str, float]:
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    env = CartPoleEnv()
    names = ("gravity", "masspole", "total_mass", "length", "polemass_length", "force_mag", "tau")
    constants = {k: float(getattr(env, k)) for k in names}
    constants.update(x_threshold=float(env.x_threshold), theta_threshold=float(env.theta_threshold_radians))
    if env.kinematics_integrator != "euler":  # pragma: no cover - gymnasium's default
        raise RuntimeError(f"expected CartPole's euler integrator, got {env.kinematics_integrator!r}")
    return constants


@lru_cache(maxsize=256)
def cartpole_start(seed: int) -> tuple[float, float, float, float]:
    """The state ``gymnasium.make("CartPole-v1").reset(seed=seed)`` starts from (float64)."""
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    env = CartPoleEnv()
    env.reset(seed=int(seed))
    return tuple(float(v) for v in env.state)


def cartpole_step(state: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of gymnasium's ``CartPoleEnv`` for many environments at once.

    The same float64 operations in the same order as ``CartPoleEnv.step`` (euler integrator).

    Args:
        state: ``(4, ...)`` float64: x, x_dot, theta, theta_dot.
        action: Integer actions (0 pushes left, 1 right), shape ``state.shape[1:]``.

    Returns:
        The next state and the ``terminated`` flags.
    """
    c = _cartpole_constants()
    x, x_dot, theta, theta_dot = state
    force = np.where(action == 1, c["force_mag"], -c["force_mag"])
    costheta = np.cos(theta)
    sintheta = np.sin(theta)
    temp = (force + c["polemass_length"] * np.square(theta_dot) * sintheta) / c["total_mass"]
    thetaacc = (c["gravity"] * sintheta - costheta * temp) / (
        c["length"] * (4.0 / 3.0 - c["masspole"] * np.square(costheta) / c["total_mass"])
    )
    xacc = temp - c["polemass_length"] * thetaacc * costheta / c["total_mass"]
    x = x + c["tau"] * x_dot
    x_dot = x_dot + c["tau"] * xacc
    theta = theta + c["tau"] * theta_dot
    theta_dot = theta_dot + c["tau"] * thetaacc
    terminated = (x < -c["x_threshold"]) | (x > c["x_threshold"])
    terminated |= (theta < -c["theta_threshold"]) | (theta > c["theta_threshold"])
    return np.stack((x, x_dot, theta, theta_dot)), terminated


def cartpole_seeds(seed: int, generation: int, episodes: int) -> list[int]:
    """Reset seeds of a generation's episodes (shared by all its genomes)."""
    return [int(s) for s in np.random.SeedSequence([int(seed), int(generation)]).generate_state(episodes)]


def cartpole_fitness(batch: GenomeBatch, config: Mapping[str, Any]) -> tuple[list[float], int]:
    """Mean CartPole-v1 return per genome, all environments stepped in lockstep.

    Returns:
        The fitness per genome and the number of environment steps simulated while alive.
    """
    episodes = _int(config, "episodes", 5, 1)
    max_steps = _int(config, "max_steps", 500, 1)
    if batch.n_inputs != 4 or batch.n_outputs not in (1, 2):
        raise ValueError(
            f"task 'cartpole' needs genomes with 4 inputs and 1 or 2 outputs, but got {batch.n_inputs} and "
            f"{batch.n_outputs}."
        )
    seeds = cartpole_seeds(config.get("seed", 0), config.get("generation", 0), episodes)
    start = np.array([cartpole_start(s) for s in seeds]).T  # (4, E)
    G = len(batch)
    state = np.repeat(start[:, None, :], G, axis=1)  # (4, G, E)
    alive = np.ones((G, episodes), dtype=bool)
    returns = np.zeros((G, episodes))
    steps = 0
    for _ in range(max_steps):
        obs = torch.from_numpy(state.transpose(1, 2, 0).astype(np.float32))  # what gymnasium observes
        out = batch.activate(obs)
        act = out[..., 0] > 0.5 if batch.n_outputs == 1 else out.argmax(-1) == 1
        state, terminated = cartpole_step(state, act.cpu().numpy().astype(np.int64))
        returns += alive
        steps += int(alive.sum())
        alive &= ~terminated
        if not alive.any():
            break
    return returns.mean(axis=1).tolist(), steps


def _user_fitness(batch: GenomeBatch, config: Mapping[str, Any]) -> list[float]:
    path = config.get("function")
    module_name, _, attr = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not module_name or not attr:
        raise ValueError(f"`function` must be an import path 'pkg.module:fn', but got function={path!r}.")
    fn = getattr(importlib.import_module(module_name), attr)
    values = fn(batch, dict(config))
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().tolist()
    values = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    if len(values) != len(batch):
        raise ValueError(f"{path} must return one fitness per genome ({len(batch)}), but returned {len(values)}.")
    return values


def neat_trial(
    config: Mapping[str, Any], report: Callable[..., None] | None = None, context: Any = None
) -> dict[str, float]:
    """A worker's trial function for strategy ``neat``: one batch of a generation's genomes.

    The job's task settings (``task``, its ``fixed`` keys) come once per job through the
    object store as ``context.shared``; the proposal brings ``genomes``, ``generation`` and
    ``seed``. Genomes are evaluated on the worker's device. Returns :func:`evaluate_batch`'s
    metrics plus ``fitness``, the batch's best (the job's objective).
    """
    shared = {k: v for k, v in dict(context.shared).items() if k != "neat"}
    out = evaluate_batch({**shared, **config, "device": context.device}, report)
    out["fitness"] = out["batch_best"]
    return out
