"""Annealing trainers for an MLP: Boltzmann, Cauchy and hybrid backprop + Cauchy.

``train_anneal`` has the signature and outcome of ``models.train.train_mlp`` (which calls it
when ``config["trainer"]`` is not ``"backprop"``), so every trainer is a trial type the service
can search over. :class:`Annealer` is the lower level: ``step(n, T)`` at a fixed temperature,
``energy()``, ``get_state()``/``set_state()`` and ``evaluate()``, for the replica-exchange
coordinator (strategy ``anneal`` in ``search/anneal.py``) and :func:`run_replica`.

The energy is the cross-entropy of the network (in eval mode) on a fixed evaluation batch,
``eval_batch_size`` training samples or, with 0 (the default), the whole training set. Each
step compares the candidate with the current state on the *same* batch: a fresh minibatch
per step would compare two states on different samples, and the current state's energy,
measured once on a lucky batch, would make it look better than it is and bias every later
acceptance against moving (a winner's curse). ``train_anneal`` draws a new subset (and
re-measures the current state on it) only between epochs, and never when the batch is the
whole training set.

Annealing trainers train the network as it is evaluated: dropout is off and batch norm uses its
running statistics (which annealing never updates), so the energy is a deterministic function
of the weights, as the Metropolis test requires. The backprop-only knobs (``optimizer``,
``schedule``, ``weight_decay``, ``l1``, ``max_norm``, ``grad_noise_*``, ``data_order``) do not
apply; the hybrid trainer uses ``lr`` and ``batch_size`` for its gradient step.

Example:
    >>> from models.data import load_task
    >>> out = train_anneal({"trainer": "cauchy", "units": 8, "epochs": 2, "anneal_steps": 20}, load_task("xor"))
    >>> out.metrics["epochs"], 0.0 <= out.metrics["accept_rate"] <= 1.0
    (2, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from models._anneal_rules import AUTO_COOLING, AdaptiveCooling, scheduled_temperature
from models._annealer import Annealer
from models.data import Task
from models.train import TrainingDiverged, TrainOutcome, resolve_hparams

__all__ = ["ADAPTIVE_LEVELS_PER_EPOCH", "REPLICA_KEYS", "Annealer", "replica_trial", "run_replica", "train_anneal"]

ADAPTIVE_LEVELS_PER_EPOCH = 10
"""Adaptive cooling holds each temperature for ``anneal_steps // 10`` steps (a level), then cools."""

REPLICA_KEYS = ("replica", "temperature", "steps", "round", "checkpoint")
"""Keys of a strategy ``anneal`` proposal; :func:`run_replica` takes them out of the config."""


def _temperatures(cooling: str, hp: Mapping[str, Any], first: int, n: int, horizon: int) -> list[float]:
    return [scheduled_temperature(cooling, hp["T0"], t, hp["cooling_rate"], horizon) for t in range(first, first + n)]


def train_anneal(
    config: Mapping[str, Any],
    task: Task,
    report: Callable[..., None] | None = None,
    device: str | torch.device = "cpu",
    should_stop: Callable[[], bool] | None = None,
    seed: int = 0,
) -> TrainOutcome:
    """Train an MLP by annealing its weights (see :class:`Annealer`) under a cooling schedule.

    An epoch is ``anneal_steps`` steps; ``epochs`` epochs run. The temperature of step
    ``t = 1, 2, ...`` follows ``cooling`` from ``T0`` (``auto``: ``log`` for boltzmann,
    ``cauchy`` for cauchy and hybrid; see ``models._anneal_rules``). ``adaptive`` holds each
    temperature for a level of ``anneal_steps // ADAPTIVE_LEVELS_PER_EPOCH`` steps and then
    cools by ``exp(-adaptive_lambda / sqrt(C(T)))`` with ``C`` the level's specific heat.

    Args:
        config: MLP hyperparameters with ``trainer`` in ``boltzmann``, ``cauchy``, ``hybrid``.
        task: The task (``models.data.load_task``).
        report: Called once per epoch as ``report(epoch=e, train_loss=..., val_loss=...,
            val_accuracy=..., temperature=..., accept_rate=...)``: ``train_loss`` is the mean
            energy of the epoch's steps, ``temperature`` its last step's.
        device: Where to train.
        should_stop: Asked after each epoch's report; ``True`` ends the run.
        seed: Seed of the weight init (the same network as ``train_mlp`` builds), the moves
            and the evaluation subsets.

    Returns:
        ``models.train.TrainOutcome``; its metrics add ``temperature`` and ``accept_rate``
        (of the returned epoch) to ``train_mlp``'s. ``lr_history`` is empty.

    Raises:
        ValueError: A bad hyperparameter, or ``trainer='backprop'``.
        TrainingDiverged: The energy or the validation loss became NaN or infinite.

    Example:
        >>> from models.data import load_task
        >>> out = train_anneal({"trainer": "hybrid", "lr": 0.1, "epochs": 3, "anneal_steps": 30}, load_task("wine"))
        >>> out.metrics["val_accuracy"] > 0.8
        True
    """
    hp = resolve_hparams(config)
    chain = Annealer(hp, task, device=device, seed=seed, data_seed=seed)
    cooling = AUTO_COOLING[chain.trainer] if hp["cooling"] == "auto" else hp["cooling"]
    steps, epochs = hp["anneal_steps"], hp["epochs"]
    adaptive = AdaptiveCooling(hp["adaptive_lambda"], hp["boltzmann_k"]) if cooling == "adaptive" else None
    level = max(1, steps // ADAPTIVE_LEVELS_PER_EPOCH)
    T = T_next = hp["T0"]  # the temperature of the last step, and of the next level (adaptive)
    best: dict[str, float] = {"val_loss": math.inf}
    best_state: bytes | None = None
    stopped = early_stopped = False
    bad_epochs = best_epoch = epoch = 0
    for epoch in range(1, epochs + 1):
        chain.resample_eval(epoch - 1)  # a new subset per epoch (eval_batch_size > 0)
        if adaptive is None:
            temps = _temperatures(cooling, hp, (epoch - 1) * steps + 1, steps, steps * epochs)
            chain._run(temps)
            T = temps[-1]
            stats = chain._take_stats()
        else:
            stats = {"accept_rate": 0.0, "energy_mean": 0.0}
            for start in range(0, steps, level):
                n = min(level, steps - start)
                chain._run([T_next] * n)
                part = chain._take_stats()
                for key in stats:
                    stats[key] += part[key] * n / steps
                T, T_next = T_next, adaptive.next_temperature(T_next, part["energy_var"])
        train_loss = stats["energy_mean"]
        if not math.isfinite(train_loss) or not math.isfinite(chain.energy()):
            raise TrainingDiverged(f"Training diverged in epoch {epoch}: train loss is {train_loss}.")
        val_loss, val_accuracy = chain.loss_accuracy("val")
        if not math.isfinite(val_loss):
            raise TrainingDiverged(f"Training diverged in epoch {epoch}: validation loss is {val_loss}.")
        current = {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "temperature": float(T),
            "accept_rate": stats["accept_rate"],
        }
        if report is not None:
            report(epoch=epoch, **current)
        if hp["patience"] == 0:
            best, best_epoch = current, epoch
        elif val_loss < best["val_loss"]:
            best, best_epoch, bad_epochs = current, epoch, 0
            best_state = chain.get_state()
        else:
            bad_epochs += 1
        if should_stop is not None and should_stop():
            stopped = True
            break
        if hp["patience"] > 0 and bad_epochs >= hp["patience"]:
            early_stopped = True
            break
    if best_state is not None:
        chain.set_state(best_state)
    test_loss, test_accuracy = chain.loss_accuracy("test")
    metrics: dict[str, float] = {
        "val_accuracy": best["val_accuracy"],
        "val_loss": best["val_loss"],
        "train_loss": best["train_loss"],
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "epochs": epoch,
        "temperature": best["temperature"],
        "accept_rate": best["accept_rate"],
    }
    return TrainOutcome(
        metrics=metrics,
        model=chain.export_model(),
        stopped=stopped,
        early_stopped=early_stopped,
        best_epoch=best_epoch,
    )


def run_replica(
    config: Mapping[str, Any],
    task: Task,
    device: str | torch.device = "cpu",
    seed: int = 0,
    chain: Annealer | None = None,
) -> tuple[Annealer, dict[str, Any]]:
    """Run one strategy ``anneal`` proposal (a replica's round) on a worker.

    ``config`` is the job's fixed MLP hyperparameters overlaid with the proposal's params
    (:data:`REPLICA_KEYS`): ``replica``, ``temperature``, ``steps``, ``round`` and
    ``checkpoint`` (base64 text or bytes of :meth:`Annealer.get_state`, or ``None``). A worker
    that keeps the replica's :class:`Annealer` between rounds passes it as ``chain``; a
    ``checkpoint`` rebuilds it (a replica that moved, or a restored job); round 0 starts a
    fresh chain from ``seed``. With ``eval_batch_size`` set, the round runs on evaluation
    subset ``round * steps // anneal_steps`` (a new one every ``anneal_steps`` steps, as in
    ``train_anneal``), the same for every replica, so their energies are comparable.

    Returns:
        The chain (keep it for the replica's next round) and the metrics: ``energy`` (the
        objective the strategy reads), ``accept_rate``, ``temperature``, the ``evaluate()``
        metrics, ``replica``, ``round``, and ``__blob__`` (``get_state()`` bytes, the
        checkpoint the service hands to ``AnnealStrategy.checkpoint_replica``).

    Raises:
        ValueError: A round after the first with neither ``chain`` nor ``checkpoint``.
    """
    hp = {key: value for key, value in config.items() if key not in REPLICA_KEYS}
    replica, round_ = int(config["replica"]), int(config["round"])
    checkpoint = config.get("checkpoint")
    if chain is None or checkpoint is not None:
        if checkpoint is None and round_ > 0:
            raise ValueError(f"Replica {replica} has no state for round {round_}: pass `chain` or a `checkpoint`.")
        chain = Annealer(hp, task, device=device, seed=seed)
        if checkpoint is not None:
            chain.set_state(checkpoint)
    steps = int(config["steps"])
    chain.resample_eval(round_ * steps // chain.hp["anneal_steps"])  # the subset train_anneal would use then
    stats = chain.step(steps, float(config["temperature"]))
    metrics: dict[str, Any] = {**stats, **chain.evaluate(), "replica": replica, "round": round_}
    metrics["__blob__"] = chain.get_state()
    return chain, metrics


def replica_trial(config: Mapping[str, Any], report: Any = None, context: Any = None) -> dict[str, Any]:
    """A worker's trial function for strategy ``anneal``: one replica's round, its chain kept warm.

    The worker keeps each replica's :class:`Annealer` in ``context.cache`` under
    ``(context.job, replica)`` between rounds, so a round costs only its steps; a chain that is
    not there (or is of another round) is rebuilt from the proposal's ``checkpoint``.

    Args:
        config: The job's MLP hyperparameters plus the proposal's :data:`REPLICA_KEYS`.
        report: The trial's report callback (unused: a round is one step).
        context: The worker's ``service.workers.TrialContext`` (``shared`` is the task).

    Returns:
        :func:`run_replica`'s metrics, ``__blob__`` included.
    """
    del report
    replica, round_ = int(config["replica"]), int(config["round"])
    key = ("anneal", context.job, replica)
    held = context.cache.pop(key)
    chain = held[1] if held is not None and held[0] == round_ - 1 else None
    if context.device == "cpu":
        torch.set_num_threads(max(1, int(context.cpus)))
    chain, metrics = run_replica(config, context.shared, device=context.device, seed=context.seed, chain=chain)
    context.cache.put(key, (round_, chain))
    return metrics
