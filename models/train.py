"""Backprop training of an MLP on a built-in task.

``train_mlp`` runs one trial: it resolves the hyperparameters against the catalog, builds
the network (``models.nets.build_mlp``), copies the whole task onto ``device`` once, and
trains with minibatches indexed there. Each epoch it

1. orders the training set (``data_order``: reshuffled, shuffled once, fixed, or a
   curriculum, see ``curriculum_order``),
2. takes one optimizer step per minibatch, with the learning rate of ``lr_at`` (the
   schedule), cross-entropy plus the L1 penalty as the loss, annealed Gaussian noise on the
   gradients and the max-norm constraint after the step,
3. evaluates on the validation set and calls ``report(epoch=..., train_loss=...,
   val_loss=..., val_accuracy=...)``, then asks ``should_stop()``,
4. tracks the best validation loss for early stopping (``patience``).

A NaN or infinite loss raises ``TrainingDiverged``. Randomness comes from ``seed`` alone:
weight init and dropout draw from torch's global RNG inside a ``torch.random.fork_rng``
block (state restored afterwards), data order from a numpy ``Generator`` and gradient noise
from a ``torch.Generator``, so the same config and seed give the same result on the CPU.
Global RNG state is process-wide: run one trial at a time per process.

Example:
    >>> from models.data import load_task
    >>> out = train_mlp({"hidden_layers": 1, "units": 16, "epochs": 3}, load_task("xor"))
    >>> out.metrics["epochs"], out.stopped, out.early_stopped
    (3, False, False)
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.catalog import MLP_HPARAMS
from models.data import Task
from models.nets import build_mlp

CURRICULUM_START = 0.25
"""Fraction of the training set (the easiest samples) a curriculum admits in the first epoch."""

CURRICULUM_RAMP = 0.5
"""Fraction of the epochs over which a curriculum grows linearly to the whole training set."""

_EVAL_CHUNK = 65536


class TrainingDiverged(RuntimeError):
    """The training or validation loss became NaN or infinite."""


@dataclass
class TrainOutcome:
    """What one training run produced.

    Attributes:
        metrics: ``val_accuracy``, ``val_loss``, ``train_loss``, ``test_accuracy``,
            ``test_loss`` (floats, of the returned weights; ``train_loss`` is the mean
            minibatch loss of their epoch) and ``epochs`` (int, epochs run).
        model: The network on the CPU in eval mode. With ``patience > 0`` these are the
            weights of the epoch with the lowest validation loss, else the last epoch's.
        stopped: ``should_stop()`` ended the run.
        early_stopped: Early stopping ended the run.
        best_epoch: Epoch (1-based) whose weights were returned.
        lr_history: Learning rate the optimizer used in the first step of each epoch.
    """

    metrics: dict[str, float]
    model: nn.Module
    stopped: bool = False
    early_stopped: bool = False
    best_epoch: int = 0
    lr_history: list[float] = field(default_factory=list)


def resolve_hparams(config: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``config`` with the catalog defaults and validate every value.

    Numpy scalars (as search libraries produce) become plain Python numbers, integers
    become ``int`` and floats ``float``.

    Args:
        config: MLP hyperparameters, a subset of ``models.catalog.MLP_HPARAMS``.

    Returns:
        A new dict with every MLP hyperparameter.

    Raises:
        ValueError: A key is unknown, a value is out of range, or ``norm='batch'`` is
            combined with ``batch_size=1``.

    Example:
        >>> resolve_hparams({"lr": 0.01})["optimizer"]
        'adam'
    """
    unknown = sorted(set(config) - set(MLP_HPARAMS))
    if unknown:
        raise ValueError(
            f"Unknown hyperparameter(s) {', '.join(map(repr, unknown))}; allowed are {', '.join(MLP_HPARAMS)}."
        )
    hp: dict[str, Any] = {}
    for key, spec in MLP_HPARAMS.items():
        value = _plain(config[key]) if key in config else copy.deepcopy(spec.default)
        why = spec.check(value)
        if why is not None:
            raise ValueError(f"Hyperparameter `{key}` {why}, but got {key}={value!r}.")
        if spec.kind == "int":
            value = int(value)
        elif spec.kind == "float":
            value = float(value)
        elif spec.kind == "knots":
            value = [[float(f), float(v)] for f, v in value]
        hp[key] = value
    if hp["norm"] == "batch" and hp["batch_size"] < 2:
        raise ValueError(f"`norm='batch'` needs `batch_size >= 2`, but got batch_size={hp['batch_size']}.")
    return hp


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def lr_at(
    hp: Mapping[str, Any],
    epoch: int,
    step: int,
    total_epochs: int,
    steps_per_epoch: int,
    t: int | None = None,
) -> float:
    """Learning rate of one optimizer step under the schedule ``hp["schedule"]``.

    With ``u = epoch + step / steps_per_epoch`` the epochs elapsed and ``lr = hp["lr"]``:

    - ``constant``: ``lr``.
    - ``step``: ``lr * step_gamma ** (epoch // step_size)``.
    - ``piecewise``: ``lr`` times the piecewise-linear interpolation of ``lr_knots``
      (``[fraction, factor]`` pairs) at the training fraction ``u / total_epochs``.
    - ``cyclic``: triangles of ``cycle_epochs`` epochs, from ``lr * cycle_min_factor`` up
      to ``lr`` at mid-cycle and back down.
    - ``inverse_time``: ``lr / (1 + lr * decay_lambda * t)`` with ``t`` the optimizer step
      count.

    Args:
        hp: Resolved hyperparameters (``resolve_hparams``).
        epoch: 0-based index of the current epoch.
        step: 0-based index of the step within the epoch.
        total_epochs: Number of epochs of the run (``hp["epochs"]``).
        steps_per_epoch: Optimizer steps in the current epoch.
        t: Optimizer steps taken before this one; defaults to ``epoch * steps_per_epoch + step``.

    Returns:
        The learning rate.

    Example:
        >>> hp = resolve_hparams({"lr": 0.1, "schedule": "step", "step_size": 2, "step_gamma": 0.5})
        >>> [lr_at(hp, e, 0, 6, 10) for e in range(6)]
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    """
    lr = float(hp["lr"])
    schedule = hp["schedule"]
    if schedule == "constant":
        return lr
    if schedule == "step":
        return lr * hp["step_gamma"] ** (epoch // hp["step_size"])
    if schedule == "inverse_time":
        t = epoch * steps_per_epoch + step if t is None else t
        return lr / (1.0 + lr * hp["decay_lambda"] * t)
    u = epoch + step / max(1, steps_per_epoch)
    if schedule == "piecewise":
        fractions, factors = zip(*hp["lr_knots"], strict=True)
        return lr * float(np.interp(u / total_epochs, fractions, factors))
    if schedule == "cyclic":
        phase = (u % hp["cycle_epochs"]) / hp["cycle_epochs"]
        low = hp["cycle_min_factor"]
        return lr * (low + (1.0 - low) * (1.0 - abs(2.0 * phase - 1.0)))
    raise ValueError(f"Unknown schedule {schedule!r}.")


def curriculum_order(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Training-set indices from easiest to hardest, for ``data_order='curriculum'``.

    A sample's difficulty is its Euclidean distance to the centroid of its class in the
    (standardized) feature space: typical samples come first, outliers and samples near
    other classes last. Ties keep dataset order.

    Args:
        X: Features, shape ``(n, d)``.
        y: Integer labels, shape ``(n,)``.

    Returns:
        A permutation of ``range(n)``, easiest first.

    Example:
        >>> curriculum_order(np.array([[0.0], [5.0], [1.0]]), np.array([0, 0, 0])).tolist()
        [2, 0, 1]
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    centroids = np.zeros((int(y.max()) + 1, X.shape[1]))
    for label in np.unique(y):
        centroids[label] = X[y == label].mean(axis=0)
    distance = np.linalg.norm(X - centroids[y], axis=1)
    return np.argsort(distance, kind="stable")


def curriculum_fraction(epoch: int, epochs: int) -> float:
    """Fraction of the training set a curriculum admits in an epoch (the pacing).

    The easiest ``CURRICULUM_START`` (25%) come in the first epoch; the fraction grows
    linearly to 1 at epoch ``floor(CURRICULUM_RAMP * (epochs - 1))`` (0-based, halfway) and
    stays there, so the hardest samples are admitted last and the second half of training
    sees all of them. Each epoch presents its admitted samples easiest first.

    Args:
        epoch: 0-based epoch index.
        epochs: Number of epochs of the run.

    Returns:
        A fraction in ``[CURRICULUM_START, 1]``.

    Example:
        >>> [round(curriculum_fraction(e, 7), 2) for e in range(7)]
        [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    """
    ramp = math.floor(CURRICULUM_RAMP * (epochs - 1))
    if ramp <= 0:
        return 1.0
    return min(1.0, CURRICULUM_START + (1.0 - CURRICULUM_START) * epoch / ramp)


def train_mlp(
    config: Mapping[str, Any],
    task: Task,
    report: Callable[..., None] | None = None,
    device: str | torch.device = "cpu",
    should_stop: Callable[[], bool] | None = None,
    seed: int = 0,
) -> TrainOutcome:
    """Train an MLP on ``task`` with backprop and return its metrics and weights.

    With ``config["trainer"]`` other than ``"backprop"`` this hands the whole run to
    ``models.anneal.train_anneal`` (same arguments, same outcome, plus ``temperature`` and
    ``accept_rate`` in the reports and metrics).

    Args:
        config: MLP hyperparameters (``models.catalog.MLP_HPARAMS``); missing ones take
            the catalog defaults.
        task: The task (``models.data.load_task``).
        report: Called once per epoch as ``report(epoch=e, train_loss=..., val_loss=...,
            val_accuracy=...)`` with ``e`` 1-based and the metrics as floats.
        device: Where to train (``"cpu"``, ``"cuda"``, ``"cuda:1"``...). The code path is
            the same on every device.
        should_stop: Asked after each epoch's report; ``True`` ends the run, which then
            returns what it has (``stopped=True``).
        seed: Seed of weight init, dropout, data order and gradient noise.

    Returns:
        The outcome; see ``TrainOutcome``.

    Raises:
        ValueError: ``config`` has an unknown key or a value out of range.
        TrainingDiverged: The loss became NaN or infinite.

    Example:
        >>> from models.data import load_task
        >>> out = train_mlp({"units": 32, "epochs": 5, "lr": 0.01}, load_task("wine"), seed=1)
        >>> out.metrics["val_accuracy"] > 0.8
        True
    """
    hp = resolve_hparams(config)
    if hp["trainer"] != "backprop":
        from models.anneal import train_anneal  # late: models.anneal imports this module

        return train_anneal(hp, task, report=report, device=device, should_stop=should_stop, seed=seed)
    device = torch.device(device)
    with _seeded(device, int(seed)):
        model = build_mlp(task.n_features, task.n_classes, hp).to(device)
        return _Trainer(hp, task, model, device, int(seed)).run(report, should_stop)


@contextlib.contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the CPU RNG and ``device``'s RNG, restoring both (and nothing else) afterwards."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index], device_type="cuda"):
            torch.random.default_generator.manual_seed(seed)
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
            yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def _optimizer(hp: Mapping[str, Any], params: list[nn.Parameter]) -> torch.optim.Optimizer:
    name, lr, wd = hp["optimizer"], hp["lr"], hp["weight_decay"]
    betas = (hp["beta1"], hp["beta2"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name in ("momentum", "nesterov"):
        nesterov = name == "nesterov" and hp["momentum"] > 0  # nesterov with momentum 0 is plain SGD
        return torch.optim.SGD(params, lr=lr, momentum=hp["momentum"], nesterov=nesterov, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=hp["rho"], weight_decay=wd)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, rho=hp["rho"], weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd)
    if name == "rprop":  # no weight_decay argument: the trainer adds wd * w to the gradient
        return torch.optim.Rprop(params, lr=lr)
    raise ValueError(f"Unknown optimizer {name!r}.")


class _Trainer:
    """One run's state: device tensors, optimizer, RNGs and the best weights so far."""

    def __init__(self, hp: dict[str, Any], task: Task, model: nn.Module, device: torch.device, seed: int):
        self.hp, self.task, self.model, self.device = hp, task, model, device
        self.X = torch.tensor(task.X_train, dtype=torch.float32, device=device)
        self.y = torch.tensor(task.y_train, dtype=torch.int64, device=device)
        self.X_val = torch.tensor(task.X_val, dtype=torch.float32, device=device)
        self.y_val = torch.tensor(task.y_val, dtype=torch.int64, device=device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
        self.optimizer = _optimizer(hp, self.params)
        self.manual_wd = hp["optimizer"] == "rprop" and hp["weight_decay"] > 0
        self.skip_singletons = any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
        self.rng = np.random.default_rng(seed)
        self.noise = torch.Generator(device=device)
        self.noise.manual_seed(seed)
        self.t = 0  # optimizer steps taken
        n = len(task.y_train)
        if hp["data_order"] == "curriculum":
            order = curriculum_order(task.X_train, task.y_train)
        elif hp["data_order"] == "shuffle_once":
            order = self.rng.permutation(n)
        else:
            order = np.arange(n)
        self.order = torch.as_tensor(order, dtype=torch.int64, device=device)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        hp = self.hp
        if hp["data_order"] == "reshuffle":
            perm = self.rng.permutation(len(self.task.y_train))
            return torch.as_tensor(perm, dtype=torch.int64, device=self.device)
        if hp["data_order"] == "curriculum":
            n = len(self.order)
            return self.order[: max(1, math.ceil(curriculum_fraction(epoch, hp["epochs"]) * n))]
        return self.order

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass; returns the mean minibatch cross-entropy and the first step's lr."""
        hp, model, opt = self.hp, self.model, self.optimizer
        order = self._epoch_order(epoch)
        bs = hp["batch_size"]
        starts = list(range(0, len(order), bs))
        if self.skip_singletons and len(starts) > 1 and len(order) - starts[-1] == 1:
            starts.pop()  # BatchNorm cannot train on a batch of one
        steps = len(starts)
        scheduled = hp["schedule"] != "constant"
        l1, eta, max_norm = hp["l1"], hp["grad_noise_eta"], hp["max_norm"]
        total = torch.zeros((), device=self.device)
        seen = 0
        first_lr = float(opt.param_groups[0]["lr"])
        model.train()
        for i, start in enumerate(starts):
            idx = order[start : start + bs]
            if scheduled:
                lr = lr_at(hp, epoch, i, hp["epochs"], steps, t=self.t)
                for group in opt.param_groups:
                    group["lr"] = lr
            if i == 0:
                first_lr = float(opt.param_groups[0]["lr"])
            loss = F.cross_entropy(model(self.X[idx]), self.y[idx])
            objective = loss + l1 * sum(w.abs().sum() for w in self.weights) if l1 > 0 else loss
            opt.zero_grad(set_to_none=True)
            objective.backward()
            if self.manual_wd or eta > 0:
                self._perturb_grads(eta)
            opt.step()
            if max_norm > 0:
                with torch.no_grad():
                    for w in self.weights:
                        w.copy_(torch.renorm(w, 2, 0, max_norm))
            total += loss.detach() * len(idx)
            seen += len(idx)
            self.t += 1
        return float(total) / max(1, seen), first_lr

    @torch.no_grad()
    def _perturb_grads(self, eta: float) -> None:
        std = math.sqrt(eta / (1.0 + self.t) ** self.hp["grad_noise_gamma"]) if eta > 0 else 0.0
        for p in self.params:
            if p.grad is None:
                continue
            if self.manual_wd:
                p.grad.add_(p, alpha=self.hp["weight_decay"])
            if std > 0:
                p.grad.add_(torch.randn(p.shape, generator=self.noise, device=self.device), alpha=std)

    @torch.no_grad()
    def _evaluate(self, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        self.model.eval()
        loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for start in range(0, len(y), _EVAL_CHUNK):
            logits = self.model(X[start : start + _EVAL_CHUNK])
            target = y[start : start + _EVAL_CHUNK]
            loss += F.cross_entropy(logits, target, reduction="sum")
            correct += (logits.argmax(dim=1) == target).sum()
        self.model.train()
        n = max(1, len(y))
        return float(loss) / n, int(correct) / n

    def run(self, report: Callable[..., None] | None, should_stop: Callable[[], bool] | None) -> TrainOutcome:
        hp = self.hp
        patience = hp["patience"]
        best: dict[str, Any] = {"val_loss": math.inf}
        best_state: dict[str, torch.Tensor] | None = None
        stopped = early_stopped = False
        bad_epochs = best_epoch = 0
        lr_history: list[float] = []
        epoch = 0
        for epoch in range(1, hp["epochs"] + 1):
            train_loss, lr = self._train_epoch(epoch - 1)
            lr_history.append(lr)
            if not math.isfinite(train_loss):
                raise TrainingDiverged(f"Training diverged in epoch {epoch}: train loss is {train_loss}.")
            val_loss, val_accuracy = self._evaluate(self.X_val, self.y_val)
            if not math.isfinite(val_loss):
                raise TrainingDiverged(f"Training diverged in epoch {epoch}: validation loss is {val_loss}.")
            if report is not None:
                report(epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_accuracy=val_accuracy)
            current = {"val_loss": val_loss, "val_accuracy": val_accuracy, "train_loss": train_loss}
            if patience == 0:
                best, best_epoch = current, epoch
            elif val_loss < best["val_loss"]:
                best, best_epoch, bad_epochs = current, epoch, 0
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                bad_epochs += 1
            if should_stop is not None and should_stop():
                stopped = True
                break
            if patience > 0 and bad_epochs >= patience:
                early_stopped = True
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        X_test = torch.tensor(self.task.X_test, dtype=torch.float32, device=self.device)
        y_test = torch.tensor(self.task.y_test, dtype=torch.int64, device=self.device)
        test_loss, test_accuracy = self._evaluate(X_test, y_test)
        metrics: dict[str, float] = {
            "val_accuracy": best["val_accuracy"],
            "val_loss": best["val_loss"],
            "train_loss": best["train_loss"],
            "test_accuracy": test_accuracy,
            "test_loss": test_loss,
            "epochs": epoch,
        }
        model = self.model.cpu().eval()
        return TrainOutcome(
            metrics=metrics,
            model=model,
            stopped=stopped,
            early_stopped=early_stopped,
            best_epoch=best_epoch,
            lr_history=lr_history,
        )
