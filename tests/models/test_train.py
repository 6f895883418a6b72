from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from models.catalog import ACTIVATIONS, DATA_ORDERS, INITS, MLP_HPARAMS, NORMS, OPTIMIZERS, SCHEDULES
from models.data import load_task
from models.train import (
    CURRICULUM_START,
    TrainingDiverged,
    TrainOutcome,
    curriculum_fraction,
    curriculum_order,
    lr_at,
    resolve_hparams,
    train_mlp,
)

BASE = {"hidden_layers": 1, "units": 16, "epochs": 4, "batch_size": 32, "lr": 0.01}
"""Small, fast baseline: XOR has 240 training points, so 8 steps per epoch."""

XOR = load_task("xor")
N_TRAIN = len(XOR.y_train)


class Recorder:
    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[dict] = []
        self.stop_after = stop_after
        self.asked = 0

    def __call__(self, **kwargs: float) -> None:
        self.calls.append(kwargs)

    def should_stop(self) -> bool:
        self.asked += 1
        return self.stop_after is not None and self.asked >= self.stop_after


def run(seed: int = 0, task=XOR, **overrides) -> tuple[TrainOutcome, Recorder]:
    rec = Recorder()
    return train_mlp({**BASE, **overrides}, task, report=rec, seed=seed), rec


def params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])


def trajectory(rec: Recorder) -> np.ndarray:
    return np.array([[c["train_loss"], c["val_loss"]] for c in rec.calls])


def same_training(a: tuple[TrainOutcome, Recorder], b: tuple[TrainOutcome, Recorder]) -> bool:
    pa, pb = params(a[0].model), params(b[0].model)
    same_weights = pa.shape == pb.shape and torch.allclose(pa, pb, rtol=0, atol=1e-7)
    return same_weights and np.allclose(trajectory(a[1]), trajectory(b[1]), rtol=0, atol=1e-9)


def linear_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear)]


# --- hyperparameters -----------------------------------------------------------------------------


def test_resolve_fills_defaults_and_keeps_overrides() -> None:
    hp = resolve_hparams({"lr": 0.5, "units": np.int64(7), "dropout": np.float32(0.25)})
    assert set(hp) == set(MLP_HPARAMS)
    assert hp["lr"] == 0.5 and hp["optimizer"] == MLP_HPARAMS["optimizer"].default
    assert hp["units"] == 7 and type(hp["units"]) is int and type(hp["dropout"]) is float


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"learning_rate": 0.1}, "'learning_rate'"),
        ({"lr": 0.0}, "`lr`"),
        ({"optimizer": "lbfgs"}, "`optimizer`.*'lbfgs'"),
        ({"units": 2.5}, "`units`"),
        ({"lr_knots": [[0.0, 1.0], [0.5, 1.0]]}, "`lr_knots`"),
        ({"norm": "batch", "batch_size": 1}, "batch_size"),
    ],
)
def test_resolve_rejects_bad_configs_by_name(config: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_hparams(config)
    with pytest.raises(ValueError, match=match):
        train_mlp(config, XOR)


# --- the contract: report, should_stop, outcome, determinism ------------------------------------


def test_report_once_per_epoch_and_outcome_shape() -> None:
    out, rec = run(epochs=5)
    assert [c["epoch"] for c in rec.calls] == [1, 2, 3, 4, 5]
    for call in rec.calls:
        assert set(call) == {"epoch", "train_loss", "val_loss", "val_accuracy"}
        assert all(isinstance(call[k], float) for k in ("train_loss", "val_loss", "val_accuracy"))
    assert set(out.metrics) == {
        "val_accuracy",
        "val_loss",
        "train_loss",
        "test_accuracy",
        "test_loss",
        "epochs",
    }
    assert out.metrics["epochs"] == 5 and isinstance(out.metrics["epochs"], int)
    last = rec.calls[-1]
    assert out.metrics["val_loss"] == last["val_loss"] and out.metrics["train_loss"] == last["train_loss"]
    assert 0.0 <= out.metrics["test_accuracy"] <= 1.0
    assert not (out.stopped or out.early_stopped) and out.best_epoch == 5
    assert not out.model.training and all(p.device.type == "cpu" for p in out.model.parameters())
    assert rec.calls[-1]["train_loss"] < rec.calls[0]["train_loss"]  # it learns


def test_should_stop_is_honoured_after_the_report() -> None:
    rec = Recorder(stop_after=2)
    out = train_mlp({**BASE, "epochs": 10}, XOR, report=rec, should_stop=rec.should_stop)
    assert out.stopped and not out.early_stopped
    assert out.metrics["epochs"] == 2 and len(rec.calls) == 2 and rec.asked == 2


def test_same_seed_same_result_other_seed_other_result() -> None:
    config = {"dropout": 0.2, "grad_noise_eta": 0.01, "data_order": "reshuffle"}
    a, b, c = run(seed=1, **config), run(seed=1, **config), run(seed=2, **config)
    assert a[0].metrics == b[0].metrics and torch.equal(params(a[0].model), params(b[0].model))
    assert not same_training(a, c)


def test_global_rng_is_left_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(seed=7, dropout=0.5)
    torch.testing.assert_close(torch.rand(3), expected)


def test_huge_learning_rate_diverges_with_epoch_and_loss_in_message() -> None:
    with pytest.raises(TrainingDiverged, match=r"epoch \d+.*loss is (nan|inf)"):
        train_mlp({**BASE, "optimizer": "sgd", "lr": 1e30, "epochs": 20}, XOR)
    assert issubclass(TrainingDiverged, RuntimeError)


# --- every choice of every categorical knob trains differently -----------------------------------

CHOICE_BASES = {
    "optimizer": {"weight_decay": 0.05, "lr": 0.05},  # weight decay so adam and adamw differ
    "schedule": {"step_size": 1, "decay_lambda": 50.0},  # so that each schedule acts within 4 epochs
    "activation": {},
    "init": {},
    "norm": {},
    "data_order": {},
}


@pytest.mark.parametrize(
    ("key", "choices"),
    [("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("activation", ACTIVATIONS),
     ("init", INITS), ("norm", NORMS), ("data_order", DATA_ORDERS)],
)  # fmt: skip
def test_each_choice_trains_differently(key: str, choices: tuple[str, ...]) -> None:
    runs = {choice: run(**CHOICE_BASES[key], **{key: choice}) for choice in choices}
    for (a, ra), (b, rb) in itertools.combinations(runs.items(), 2):
        assert not same_training(ra, rb), f"{key}={a!r} and {key}={b!r} trained identically"
    for choice, (out, _) in runs.items():
        assert math.isfinite(out.metrics["val_loss"]), choice


# --- every numeric knob changes training ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"lr": 0.02},
        {"batch_size": 16},
        {"epochs": 5},
        {"hidden_layers": 2},
        {"units": 12},
        {"dropout": 0.3},
        {"weight_decay": 0.01},
        {"l1": 0.001},
        {"max_norm": 0.5},
        {"grad_noise_eta": 0.01},
        {"grad_noise_eta": 0.01, "grad_noise_gamma": 0.0, "_base": {"grad_noise_eta": 0.01}},
        {"optimizer": "momentum", "momentum": 0.5, "_base": {"optimizer": "momentum"}},
        {"optimizer": "nesterov", "momentum": 0.5, "_base": {"optimizer": "nesterov"}},
        {"beta1": 0.5},
        {"beta2": 0.9},
        {"optimizer": "rmsprop", "rho": 0.5, "_base": {"optimizer": "rmsprop"}},
        {"optimizer": "adadelta", "rho": 0.5, "lr": 1.0, "_base": {"optimizer": "adadelta", "lr": 1.0}},
        {
            "schedule": "step",
            "step_size": 1,
            "step_gamma": 0.2,
            "_base": {"schedule": "step", "step_size": 1},
        },
        {"schedule": "step", "step_size": 2, "_base": {"schedule": "step", "step_size": 1}},
        {"schedule": "piecewise", "lr_knots": [[0, 1.0], [1, 0.0]], "_base": {"schedule": "piecewise"}},
        {"schedule": "cyclic", "cycle_epochs": 2, "_base": {"schedule": "cyclic"}},
        {"schedule": "cyclic", "cycle_min_factor": 0.5, "_base": {"schedule": "cyclic"}},
        {"schedule": "inverse_time", "decay_lambda": 10.0, "_base": {"schedule": "inverse_time"}},
        {"patience": 1, "lr": 0.3, "epochs": 15, "_base": {"lr": 0.3, "epochs": 15}},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items() if k != "_base"),
)
def test_knob_changes_training(overrides: dict) -> None:
    changed = {k: v for k, v in overrides.items() if k != "_base"}
    base = overrides.get("_base", {})
    assert not same_training(run(**base), run(**{**base, **changed}))


# --- knobs do what they say ------------------------------------------------------------------------


def test_l1_shrinks_the_weights_l1_norm() -> None:
    plain, _ = run(epochs=10)
    sparse, _ = run(epochs=10, l1=0.01)
    l1 = [sum(w.abs().sum().item() for w in linear_weights(o.model)) for o in (plain, sparse)]
    assert l1[1] < 0.8 * l1[0]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rprop"])
def test_weight_decay_shrinks_the_weights_l2_norm(optimizer: str) -> None:
    lr = {"sgd": 0.5, "rprop": 0.01}.get(optimizer, 0.01)
    plain, _ = run(epochs=10, optimizer=optimizer, lr=lr)
    decayed, _ = run(epochs=10, optimizer=optimizer, lr=lr, weight_decay=0.5 if optimizer == "adamw" else 0.05)
    assert params(decayed.model).norm() < 0.9 * params(plain.model).norm()


def test_max_norm_bounds_every_units_incoming_weights() -> None:
    plain, _ = run(epochs=6, lr=0.05)
    assert max(w.norm(dim=1).max().item() for w in linear_weights(plain.model)) > 0.6
    bounded, _ = run(epochs=6, lr=0.05, max_norm=0.6)
    for w in linear_weights(bounded.model):
        assert w.norm(dim=1).max().item() <= 0.6 + 1e-5


def test_gradient_noise_anneals() -> None:
    # Annealing (gamma > 0) makes later noise smaller than constant noise (gamma = 0).
    hp = {"optimizer": "sgd", "lr": 0.1, "epochs": 8, "grad_noise_eta": 1.0}
    annealed, _ = run(**hp, grad_noise_gamma=2.0)
    constant, _ = run(**hp, grad_noise_gamma=0.0)
    clean, _ = run(**{**hp, "grad_noise_eta": 0.0})
    drift = [(params(o.model) - params(clean.model)).norm().item() for o in (annealed, constant)]
    assert 0 < drift[0] < drift[1]


def steps_per_epoch_seen(**overrides) -> list[int]:
    """Each epoch's optimizer step count, read off an inverse_time lr history: lr/(1+t), lr*lambda=1."""
    out, _ = run(schedule="inverse_time", lr=0.01, decay_lambda=100.0, **overrides)
    t = [round(0.01 / lr - 1) for lr in out.lr_history]
    return [b - a for a, b in itertools.pairwise(t)]


@pytest.mark.parametrize("batch_size", [16, 50, 1000])
def test_batch_size_sets_the_steps_per_epoch(batch_size: int) -> None:
    assert steps_per_epoch_seen(batch_size=batch_size) == [math.ceil(N_TRAIN / batch_size)] * 3


def test_curriculum_admits_a_growing_share_of_the_training_set() -> None:
    steps = steps_per_epoch_seen(data_order="curriculum", batch_size=8, epochs=7)
    expected = [math.ceil(math.ceil(curriculum_fraction(e, 7) * N_TRAIN) / 8) for e in range(6)]
    assert steps == expected and steps[0] < steps[-1] == N_TRAIN // 8


def test_curriculum_pacing_and_difficulty_order() -> None:
    fractions = [curriculum_fraction(e, 20) for e in range(20)]
    assert fractions[0] == CURRICULUM_START and fractions[-1] == 1.0
    assert all(b >= a for a, b in itertools.pairwise(fractions))
    assert fractions[9] == 1.0 and fractions[8] < 1.0  # whole set from halfway on
    assert curriculum_fraction(0, 1) == 1.0
    X, y = XOR.X_train, XOR.y_train
    order = curriculum_order(X, y)
    assert sorted(order.tolist()) == list(range(len(y)))
    centroids = np.stack([X[y == k].mean(axis=0) for k in range(2)])
    distance = np.linalg.norm(X[order] - centroids[y[order]], axis=1)
    assert np.all(np.diff(distance) >= -1e-6)


def test_dropout_is_off_in_the_returned_model() -> None:
    out, _ = run(dropout=0.5)
    x = torch.tensor(XOR.X_val)
    torch.testing.assert_close(out.model(x), out.model(x))


# --- learning-rate schedules: the formula and the lr the optimizer actually used -----------------


def tent(epoch: int, step: int) -> float:
    """Knots (0, 0) -> (0.5, 1) -> (1, 0.5) at training fraction u, with 10 epochs of 4 steps."""
    u = (epoch + step / 4) / 10
    return 2 * u if u <= 0.5 else 1.0 - (u - 0.5)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"schedule": "constant"}, lambda e, s: 0.1),
        ({"schedule": "step", "step_size": 3, "step_gamma": 0.5}, lambda e, s: 0.1 * 0.5 ** (e // 3)),
        (
            {"schedule": "piecewise", "lr_knots": [[0, 0.0], [0.5, 1.0], [1, 0.5]]},
            lambda e, s: 0.1 * tent(e, s),
        ),
        (
            {"schedule": "cyclic", "cycle_epochs": 2, "cycle_min_factor": 0.2},
            lambda e, s: 0.1 * (0.2 + 0.8 * (1 - abs(((e + s / 4) % 2) - 1))),
        ),
        ({"schedule": "inverse_time", "decay_lambda": 5.0}, lambda e, s: 0.1 / (1 + 0.1 * 5.0 * (4 * e + s))),
    ],
    ids=lambda v: v["schedule"] if isinstance(v, dict) else "",
)
def test_lr_at_follows_the_formula(overrides: dict, expected) -> None:
    hp = resolve_hparams({"lr": 0.1, "epochs": 10, **overrides})
    for epoch, step in itertools.product(range(10), range(4)):
        assert lr_at(hp, epoch, step, 10, 4) == pytest.approx(expected(epoch, step), rel=1e-9, abs=1e-15)


def test_lr_at_piecewise_and_cyclic_key_points() -> None:
    hp = resolve_hparams({"lr": 1.0, "schedule": "piecewise"})  # default knots 0.1 -> 1 -> 0.01
    assert lr_at(hp, 0, 0, 10, 5) == pytest.approx(0.1)
    assert lr_at(hp, 1, 0, 10, 5) == pytest.approx(1.0)
    assert lr_at(hp, 10, 0, 10, 5) == pytest.approx(0.01)
    hp = resolve_hparams({"lr": 1.0, "schedule": "cyclic", "cycle_epochs": 4, "cycle_min_factor": 0.1})
    assert [lr_at(hp, e, 0, 20, 5) for e in range(5)] == pytest.approx([0.1, 0.55, 1.0, 0.55, 0.1])


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_optimizer_uses_the_scheduled_lr(schedule: str) -> None:
    config = {**BASE, "schedule": schedule, "epochs": 6, "step_size": 2, "decay_lambda": 20.0}
    out = train_mlp(config, XOR)
    hp = resolve_hparams(config)
    spe = math.ceil(N_TRAIN / BASE["batch_size"])
    expected = [lr_at(hp, e, 0, 6, spe) for e in range(6)]
    assert out.lr_history == pytest.approx(expected, rel=1e-6)
    if schedule != "constant":
        assert len(set(out.lr_history)) > 1


# --- early stopping --------------------------------------------------------------------------------


def test_early_stopping_stops_and_restores_the_best_weights() -> None:
    wine = load_task("wine")
    config = {**BASE, "units": 64, "lr": 0.05, "epochs": 200, "patience": 3}
    out, rec = run(task=wine, **config)
    losses = [c["val_loss"] for c in rec.calls]
    best = int(np.argmin(losses))
    assert out.early_stopped and not out.stopped
    assert out.metrics["epochs"] == len(losses) == best + 1 + 3 < 200
    assert out.best_epoch == best + 1
    assert out.metrics["val_loss"] == losses[best]
    assert out.metrics["val_accuracy"] == rec.calls[best]["val_accuracy"]
    # The returned model really carries the best epoch's weights.
    with torch.no_grad():
        logits = out.model(torch.tensor(wine.X_val))
        loss = nn.functional.cross_entropy(logits, torch.tensor(wine.y_val)).item()
    assert loss == pytest.approx(losses[best], rel=1e-5)


def test_patience_zero_runs_every_epoch() -> None:
    out, rec = run(task=load_task("wine"), units=64, lr=0.05, epochs=30, patience=0)
    assert not out.early_stopped and len(rec.calls) == 30 and out.best_epoch == 30


# --- real task ------------------------------------------------------------------------------------


def test_digits_reaches_high_test_accuracy_quickly() -> None:
    config = {
        "hidden_layers": 2,
        "units": 256,
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 64,
        "epochs": 25,
    }
    out = train_mlp(config, load_task("digits"), seed=0)  # about 1.5 s on one CPU thread
    assert out.metrics["test_accuracy"] >= 0.95


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    config = {**BASE, "epochs": 3}
    cpu = train_mlp(config, XOR)
    gpu = train_mlp(config, XOR, device="cuda")
    assert all(p.device.type == "cpu" for p in gpu.model.parameters())
    assert gpu.metrics["val_loss"] == pytest.approx(cpu.metrics["val_loss"], rel=1e-3)
