from __future__ import annotations

import base64
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models._anneal_rules import (
    ADAPTIVE_MAX_RATIO,
    ADAPTIVE_MIN_RATIO,
    AdaptiveCooling,
    acceptance_probability,
    cauchy_step,
    metropolis,
    saturated_units,
    scheduled_temperature,
    specific_heat,
    squash,
)
from models.anneal import Annealer, run_replica, train_anneal
from models.catalog import COOLINGS, GRANULARITIES, MLP_HPARAMS, TRAINERS
from models.data import load_task
from models.nets import build_mlp
from models.train import TrainingDiverged, _seeded, resolve_hparams, train_mlp

XOR = load_task("xor")
WINE = load_task("wine")
BASE = {"hidden_layers": 1, "units": 8, "epochs": 2, "anneal_steps": 40, "T0": 0.05, "anneal_rho": 0.5}
"""Small and fast: 80 annealing steps on XOR."""

CPU = torch.device("cpu")


class Recorder:
    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[dict] = []
        self.stop_after = stop_after

    def __call__(self, **kwargs: float) -> None:
        self.calls.append(kwargs)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.calls) >= self.stop_after


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])


def run(task=XOR, seed: int = 0, **overrides):
    rec = Recorder()
    out = train_anneal({**BASE, **overrides}, task, report=rec, seed=seed)
    return out, rec


def same_training(a, b) -> bool:
    (oa, ra), (ob, rb) = a, b
    traj = [[c["train_loss"], c["val_loss"], c["accept_rate"]] for c in ra.calls]
    traj_b = [[c["train_loss"], c["val_loss"], c["accept_rate"]] for c in rb.calls]
    return torch.equal(flat(oa.model), flat(ob.model)) and traj == traj_b


def full_train_loss(model: nn.Module, task) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(torch.tensor(task.X_train)), torch.tensor(task.y_train)).item()


# --- every trainer learns -------------------------------------------------------------------------

LEARNS = {
    "boltzmann": {"T0": 0.001, "anneal_rho": 1.0},
    "cauchy": {"T0": 0.1, "anneal_rho": 1.0},
    "hybrid": {"T0": 0.1, "anneal_rho": 1.0, "lr": 0.2, "hybrid_eta": 0.8},
}


@pytest.mark.parametrize("trainer", ["boltzmann", "cauchy", "hybrid"])
def test_each_trainer_lowers_the_loss_from_the_same_init(trainer: str) -> None:
    config = {"hidden_layers": 1, "units": 16, "epochs": 4, "anneal_steps": 150, "trainer": trainer, **LEARNS[trainer]}
    with _seeded(CPU, 3):
        init = build_mlp(WINE.n_features, WINE.n_classes, resolve_hparams(config))
    chain = Annealer(config, WINE, seed=3)
    assert torch.equal(flat(chain.export_model()), flat(init))  # the same network train_mlp builds
    before = full_train_loss(init, WINE)
    assert chain.energy() == pytest.approx(before, rel=1e-6)
    out = train_anneal(config, WINE, seed=3)
    after = full_train_loss(out.model, WINE)
    assert after < 0.6 * before, (before, after)
    assert out.metrics["val_accuracy"] > 0.8


# --- the formulas ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("delta", "kT"), [(0.3, 0.5), (0.05, 0.01), (1.0, 2.0)])
def test_worsening_moves_are_accepted_at_the_boltzmann_rate(delta: float, kT: float) -> None:
    g = torch.Generator().manual_seed(0)
    n = 200_000
    u = torch.rand(n, generator=g)
    rate = metropolis(torch.full((n,), delta), kT, u).float().mean().item()
    expected = math.exp(-delta / kT)
    assert rate == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / n))
    assert acceptance_probability(torch.tensor(delta), kT).item() == pytest.approx(expected)


def test_improvements_always_and_nan_never_accepted() -> None:
    u = torch.rand(10_000, generator=torch.Generator().manual_seed(1))
    assert metropolis(torch.full((10_000,), -0.1), 0.01, u).all()
    assert metropolis(torch.zeros(10_000), 0.01, u).all()
    assert not metropolis(torch.full((10_000,), float("nan")), 0.01, u).any()
    assert not metropolis(torch.full((10_000,), float("inf")), 0.01, u).any()
    assert acceptance_probability(torch.tensor(-3.0), 1.0).item() == 1.0


def test_cooling_formulas_exact_values() -> None:
    T0 = 2.0
    assert [scheduled_temperature("log", T0, t) for t in (1, 2, 3)] == [T0 / math.log(k) for k in (2, 3, 4)]
    assert [scheduled_temperature("cauchy", T0, t) for t in (1, 2, 3)] == [1.0, T0 / 3, 0.5]
    assert [scheduled_temperature("exponential", T0, t, rate=0.5) for t in (1, 2, 3)] == [1.0, 0.5, 0.25]
    linear = [scheduled_temperature("linear", T0, t, horizon=4) for t in (1, 2, 4)]
    assert linear == pytest.approx([1.6, 1.2, 0.4], rel=1e-12)
    with pytest.raises(ValueError, match="t=0"):
        scheduled_temperature("log", T0, 0)
    with pytest.raises(ValueError, match="'adaptive'"):
        scheduled_temperature("adaptive", T0, 1)


def test_train_anneal_follows_the_schedule() -> None:
    for cooling, expected in [("log", 0.3 / math.log(81)), ("cauchy", 0.3 / 81), ("exponential", 0.3 * 0.99**80),
                              ("linear", 0.3 * (1 - 80 / 81))]:  # fmt: skip
        out, rec = run(trainer="cauchy", T0=0.3, cooling=cooling, cooling_rate=0.99)
        assert rec.calls[-1]["temperature"] == pytest.approx(expected, rel=1e-12), cooling
        assert rec.calls[0]["temperature"] > rec.calls[1]["temperature"]


def test_cauchy_steps_have_median_magnitude_rho_T() -> None:
    g = torch.Generator().manual_seed(0)
    x = cauchy_step(200_000, 0.3, g, CPU)
    assert x.abs().median().item() == pytest.approx(0.3, rel=0.02)
    assert abs(x.median().item()) < 0.01  # symmetric
    chain = Annealer({**BASE, "trainer": "cauchy", "units": 256, "anneal_rho": 0.5}, XOR)
    move = chain._perturbation(0.2)
    assert move.abs().median().item() == pytest.approx(0.5 * 0.2, rel=0.05)


def test_boltzmann_steps_are_gaussian_with_std_rho_sqrt_T() -> None:
    chain = Annealer({**BASE, "trainer": "boltzmann", "units": 256, "anneal_rho": 0.5}, XOR)
    move = chain._perturbation(0.04)
    assert move.std().item() == pytest.approx(0.5 * 0.2, rel=0.03)
    assert abs(move.mean().item()) < 0.01


def test_adaptive_cooling_is_slow_where_the_specific_heat_is_high() -> None:
    cooling = AdaptiveCooling(0.5)
    T = 0.1
    ratios = [cooling.ratio(T, var) for var in (0.0, 1e-4, 0.01, 0.1, 1.0, 10.0, 1e6)]
    assert all(b > a for a, b in itertools.pairwise(ratios[1:-1]))  # higher C(T) -> closer to 1
    assert ratios[0] == ratios[1] == ADAPTIVE_MIN_RATIO and ratios[-1] == ADAPTIVE_MAX_RATIO  # clamped
    var = 0.04  # C = var / T^2 = 4 -> ratio exp(-0.5 / 2)
    assert specific_heat(var, T) == pytest.approx(4.0)
    assert cooling.next_temperature(T, var) == pytest.approx(T * math.exp(-0.5 / 2.0))
    assert AdaptiveCooling(0.5, k=2.0).ratio(T, var) < cooling.ratio(T, var)  # C = var / (kT)^2


def test_adaptive_cooling_in_training_holds_levels_and_cools() -> None:
    out, rec = run(trainer="cauchy", cooling="adaptive", epochs=3)
    temps = [c["temperature"] for c in rec.calls]
    assert temps[0] <= BASE["T0"] and all(b < a for a, b in itertools.pairwise(temps))


# --- squashing -------------------------------------------------------------------------------------


def test_squash_shrinks_large_weights_more_than_small_ones() -> None:
    w = torch.linspace(-6.0, 6.0, 121)
    out = squash(w, 1.5)
    assert torch.all(out.abs() < 1.5) and torch.all(torch.sign(out) == torch.sign(w))
    assert torch.all(out[1:] > out[:-1])  # order kept
    factor = (out / w)[w > 0]
    assert torch.all(factor[1:] < factor[:-1])  # the larger |w|, the larger the relative shrink
    assert torch.equal(squash(-w, 1.5), -out)  # symmetric


def test_squashing_revives_a_saturated_unit_and_leaves_the_others() -> None:
    config = {"trainer": "boltzmann", "hidden_layers": 1, "units": 6, "activation": "tanh", "squash": True}
    chain = Annealer(config, WINE)
    assert not chain.saturated()[0].any()
    first = chain.model[0]
    before = {k: v.clone() for k, v in first.state_dict().items()}
    chain._w[: first.weight.numel()].view_as(first.weight)[2].mul_(40.0)  # unit 2: huge incoming weights
    chain._cand.copy_(chain._w)
    assert chain.saturated()[0].tolist() == [False, False, True, False, False, False]
    assert chain.squash_saturated() == 1
    assert not chain.saturated()[0].any()
    after = first.state_dict()
    others = [0, 1, 3, 4, 5]
    assert torch.equal(after["weight"][others], before["weight"][others])
    assert after["weight"][2].abs().max() <= 2.0 / math.sqrt(WINE.n_features)  # squashed to c = 2 / sqrt(fan_in)
    assert chain.energy() == pytest.approx(full_train_loss(chain.model, WINE), rel=1e-6)


def test_saturation_rules_by_activation() -> None:
    pre = torch.tensor([[-1.0, 3.0, 30.0], [-2.0, 0.5, 25.0], [-0.5, 3.0, 22.0]])
    assert saturated_units(pre, "relu", 0.9).tolist() == [True, False, True]  # dead, alive, huge
    assert saturated_units(pre, "tanh", 0.6).tolist() == [False, True, True]
    assert saturated_units(pre, "hardtanh", 0.9).tolist() == [False, False, True]


def test_squashing_with_a_norm_layer_squashes_its_gain() -> None:
    config = {"trainer": "cauchy", "hidden_layers": 1, "units": 4, "activation": "sigmoid", "norm": "layer"}
    chain = Annealer(config, WINE)
    norm = chain.model[1]
    chain._views[id(norm.weight)][1] = 50.0
    chain._cand.copy_(chain._w)
    assert chain.squash_saturated() == 1
    assert 0 < norm.weight[1].item() <= 2.0 and norm.weight[0].item() == 1.0


# --- granularity ----------------------------------------------------------------------------------


def test_layer_granularity_moves_one_layer_per_step_cycling() -> None:
    chain = Annealer({**BASE, "trainer": "boltzmann", "hidden_layers": 2, "granularity": "layer"}, XOR)
    layers = [(m.weight.numel() + m.bias.numel()) for m in chain.model if isinstance(m, nn.Linear)]
    bounds = list(itertools.accumulate([0, *layers]))
    for step in range(6):
        moved = chain._perturbation(0.1) != 0
        per_layer = [moved[a:b].sum().item() for a, b in itertools.pairwise(bounds)]
        assert [n > 0 for n in per_layer] == [i == step % 3 for i in range(3)]
        assert per_layer[step % 3] == layers[step % 3]
    # And through real steps (k huge: every move is accepted), one layer's weights change per step.
    chain = Annealer({**BASE, "trainer": "boltzmann", "hidden_layers": 2, "granularity": "layer",
                      "boltzmann_k": 1e9}, XOR)  # fmt: skip
    for step in range(4):
        before = chain._w.clone()
        chain.step(1, 0.01)
        changed = [not torch.equal(before[a:b], chain._w[a:b]) for a, b in itertools.pairwise(bounds)]
        assert changed == [i == step % 3 for i in range(3)]


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.8])
def test_fraction_granularity_moves_about_that_fraction(fraction: float) -> None:
    chain = Annealer({**BASE, "trainer": "cauchy", "units": 4096, "granularity": "fraction",
                      "perturb_fraction": fraction}, XOR)  # fmt: skip
    share = (chain._perturbation(0.1) != 0).float().mean().item()
    assert share == pytest.approx(fraction, abs=0.02)


def test_all_granularity_moves_every_weight() -> None:
    chain = Annealer({**BASE, "trainer": "boltzmann"}, XOR)
    assert (chain._perturbation(0.1) != 0).all()


# --- the hybrid trainer -----------------------------------------------------------------------------


def test_hybrid_eta_one_is_sgd_with_momentum() -> None:
    lr, alpha = 0.3, 0.6
    config = {"trainer": "hybrid", "hidden_layers": 1, "units": 8, "hybrid_eta": 1.0, "hybrid_alpha": alpha,
              "lr": lr, "batch_size": 10_000}  # fmt: skip
    chain = Annealer(config, WINE, seed=5)
    stats = chain.step(12, temperature=0.5)
    assert stats["accept_rate"] == 1.0
    with _seeded(CPU, 5):
        ref = build_mlp(WINE.n_features, WINE.n_classes, resolve_hparams(config)).eval()
    X, y = torch.tensor(WINE.X_train), torch.tensor(WINE.y_train)
    velocity = [torch.zeros_like(p) for p in ref.parameters()]
    for _ in range(12):  # dW(t) = alpha dW(t-1) + (1 - alpha) (-lr grad); w += dW
        ref.zero_grad()
        F.cross_entropy(ref(X), y).backward()
        with torch.no_grad():
            for p, v in zip(ref.parameters(), velocity, strict=True):
                v.mul_(alpha).sub_(p.grad, alpha=(1 - alpha) * lr)
                p.add_(v)
    torch.testing.assert_close(flat(chain.export_model()), flat(ref), rtol=1e-5, atol=1e-6)
    # Same as torch's SGD with momentum=alpha, dampening=alpha after its first step (which skips dampening).
    assert chain.n_backward == 12 * len(WINE.y_train)


def test_hybrid_eta_zero_is_pure_cauchy_without_gradients() -> None:
    config = {**BASE, "T0": 0.2, "hybrid_eta": 0.0, "lr": 5.0}
    hybrid = Annealer({**config, "trainer": "hybrid"}, WINE, seed=2)
    cauchy = Annealer({**config, "trainer": "cauchy"}, WINE, seed=2)
    a, b = hybrid.step(60, 0.05), cauchy.step(60, 0.05)
    assert hybrid.n_backward == 0 and a == b
    assert torch.equal(hybrid._w, cauchy._w)


def test_hybrid_mixes_gradient_and_cauchy_steps() -> None:
    config = {**BASE, "trainer": "hybrid", "T0": 0.2, "lr": 0.2, "batch_size": 16}
    half = Annealer({**config, "hybrid_eta": 0.5}, WINE, seed=2)
    half.step(20, 0.05)
    assert half.n_backward == 20 * 16 and half.n_forward == 20 * 16 + 21 * len(WINE.y_train)


# --- the chain's state --------------------------------------------------------------------------------

STATEFUL = {"trainer": "hybrid", "hybrid_eta": 0.6, "granularity": "layer", "eval_batch_size": 50, "squash": True,
            "activation": "tanh", "batch_size": 16, "lr": 0.1, "hidden_layers": 2, "units": 8,
            "norm": "batch"}  # fmt: skip


def test_state_round_trip_is_bit_exact() -> None:
    a = Annealer(STATEFUL, WINE, seed=1, data_seed=4)
    a.step(37, 0.02)
    a.resample_eval(1)
    blob = a.get_state()
    b = Annealer(STATEFUL, WINE, seed=99, data_seed=7)  # another init, other RNGs: all replaced
    b.set_state(base64.b64encode(blob).decode("ascii"))
    assert b.energy() == a.energy()
    for draw in (2, 3):
        sa, sb = a.step(63, 0.01), b.step(63, 0.01)  # crosses a squash check (every 50 steps)
        a.resample_eval(draw)
        b.resample_eval(draw)
        assert sa == sb
    assert torch.equal(a._w, b._w) and torch.equal(a._dW, b._dW)
    assert a.evaluate() == b.evaluate()
    assert torch.equal(flat(a.export_model()), flat(b.export_model()))


def test_state_of_another_network_is_rejected() -> None:
    blob = Annealer({**BASE, "trainer": "cauchy"}, XOR).get_state()
    with pytest.raises(ValueError, match="n_params"):
        Annealer({**BASE, "trainer": "cauchy", "units": 9}, XOR).set_state(blob)
    with pytest.raises(ValueError, match="trainer"):
        Annealer({**BASE, "trainer": "boltzmann"}, XOR).set_state(blob)


def test_fixed_eval_batch_within_a_run_and_resampled_between_epochs() -> None:
    chain = Annealer({**BASE, "trainer": "cauchy", "eval_batch_size": 30}, WINE, data_seed=0)
    index = chain._eval_index.clone()
    chain.step(20, 0.01)
    assert torch.equal(chain._eval_index, index) and len(chain._y_eval) == 30
    chain.resample_eval(1)
    assert not torch.equal(chain._eval_index, index)
    with torch.no_grad():  # the energy is re-measured on the new batch
        expected = F.cross_entropy(chain.model(chain._X_eval), chain._y_eval).item()
    assert chain.energy() == pytest.approx(expected)
    # Chains sharing data_seed compare energies on one batch, whatever they did before.
    other = Annealer({**BASE, "trainer": "boltzmann", "eval_batch_size": 30}, WINE, seed=5, data_seed=0)
    assert torch.equal(other._eval_index, index)
    other.step(7, 0.1)
    other.resample_eval(1)
    assert torch.equal(other._eval_index, chain._eval_index)
    # train_anneal switches subsets once per epoch: the reports' energies are on the new subset.
    _, rec = run(task=WINE, trainer="cauchy", eval_batch_size=30, epochs=3)
    _, full = run(task=WINE, trainer="cauchy", epochs=3)
    assert [c["train_loss"] for c in rec.calls] != [c["train_loss"] for c in full.calls]


def test_step_validates_and_backprop_is_not_an_annealer() -> None:
    chain = Annealer({**BASE, "trainer": "cauchy"}, XOR)
    with pytest.raises(ValueError, match="temperature=0"):
        chain.step(1, 0)
    with pytest.raises(ValueError, match="n_steps=-1"):
        chain.step(-1, 0.1)
    with pytest.raises(ValueError, match="trainer='backprop'"):
        Annealer({"trainer": "backprop"}, XOR)
    with pytest.raises(ValueError, match="trainer='backprop'"):
        train_anneal({"trainer": "backprop"}, XOR)


def test_run_replica_continues_from_its_chain_or_its_checkpoint() -> None:
    config = {**BASE, "trainer": "boltzmann", "replica": 1, "temperature": 0.01, "steps": 30, "round": 0,
              "checkpoint": None}  # fmt: skip
    chain, first = run_replica(config, XOR, seed=11)
    assert set(first) >= {"energy", "accept_rate", "val_accuracy", "test_accuracy", "__blob__"}
    again = {**config, "round": 1, "temperature": 0.02}
    _, kept = run_replica(again, XOR, seed=12, chain=chain)
    _, moved = run_replica({**again, "checkpoint": base64.b64encode(first["__blob__"]).decode()}, XOR, seed=13)
    assert kept.pop("__blob__") == moved.pop("__blob__") and kept == moved
    with pytest.raises(ValueError, match="no state for round 1"):
        run_replica(again, XOR)


# --- train_anneal's contract, and train_mlp's dispatch ------------------------------------------------


def test_report_outcome_and_dispatch_from_train_mlp() -> None:
    config = {**BASE, "trainer": "cauchy", "epochs": 3}
    out, rec = run(**config)
    assert [c["epoch"] for c in rec.calls] == [1, 2, 3]
    for call in rec.calls:
        assert set(call) == {"epoch", "train_loss", "val_loss", "val_accuracy", "temperature", "accept_rate"}
        assert all(isinstance(v, float) for k, v in call.items() if k != "epoch")
    assert set(out.metrics) == {"val_accuracy", "val_loss", "train_loss", "test_accuracy", "test_loss", "epochs",
                                "temperature", "accept_rate"}  # fmt: skip
    assert out.metrics["epochs"] == 3 and out.metrics["val_loss"] == rec.calls[-1]["val_loss"]
    assert not out.model.training and all(p.device.type == "cpu" for p in out.model.parameters())
    rec2 = Recorder()
    via = train_mlp(config, XOR, report=rec2)
    assert via.metrics == out.metrics and rec2.calls == rec.calls
    assert torch.equal(flat(via.model), flat(out.model))


def test_resolve_hparams_accepts_and_checks_the_annealing_keys() -> None:
    hp = resolve_hparams({"trainer": "hybrid", "T0": 2, "squash": True, "anneal_steps": 10})
    assert hp["T0"] == 2.0 and type(hp["T0"]) is float and hp["cooling"] == "auto"
    with pytest.raises(ValueError, match="`trainer`.*'sa'"):
        resolve_hparams({"trainer": "sa"})
    with pytest.raises(ValueError, match="`hybrid_eta`"):
        train_mlp({"trainer": "hybrid", "hybrid_eta": 1.5}, XOR)
    with pytest.raises(ValueError, match="`T0`"):
        resolve_hparams({"T0": 0.0})
    for key in ("T0", "anneal_rho", "hybrid_eta", "hybrid_alpha", "cooling", "cooling_rate", "adaptive_lambda",
                "granularity", "perturb_fraction", "squash", "squash_threshold", "anneal_steps", "eval_batch_size",
                "boltzmann_k"):  # fmt: skip
        assert MLP_HPARAMS[key].doc, key


def test_should_stop_divergence_and_global_rng() -> None:
    rec = Recorder(stop_after=2)
    out = train_anneal({**BASE, "trainer": "boltzmann", "epochs": 6}, XOR, report=rec, should_stop=rec.should_stop)
    assert out.stopped and out.metrics["epochs"] == 2 and len(rec.calls) == 2
    with pytest.raises(TrainingDiverged, match=r"epoch 1.*loss is (nan|inf)"):
        train_anneal({**BASE, "trainer": "hybrid", "hybrid_eta": 1.0, "lr": 1e30, "batch_size": 8}, XOR)
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    run(trainer="hybrid", dropout=0.3)
    assert torch.equal(torch.rand(2), expected)


def test_nan_candidates_are_rejected_so_pure_annealing_never_diverges() -> None:
    out, _ = run(trainer="cauchy", T0=1e30, anneal_rho=1e30)
    assert math.isfinite(out.metrics["train_loss"])


def test_patience_restores_the_best_epoch() -> None:
    out, rec = run(
        task=WINE,
        trainer="boltzmann",
        T0=5.0,
        anneal_rho=0.3,
        epochs=12,
        anneal_steps=20,
        patience=2,
        cooling="exponential",
        cooling_rate=0.9999,
    )  # fmt: skip — hot: the loss wanders
    losses = [c["val_loss"] for c in rec.calls]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert out.best_epoch == best + 1 and out.metrics["val_loss"] == losses[best]
    assert out.early_stopped == (len(losses) < 12)
    with torch.no_grad():
        loss = F.cross_entropy(out.model(torch.tensor(WINE.X_val)), torch.tensor(WINE.y_val)).item()
    assert loss == pytest.approx(losses[best], rel=1e-5)


# --- every knob changes training ---------------------------------------------------------------------

SATURATING = {"trainer": "boltzmann", "activation": "tanh", "T0": 5.0, "anneal_rho": 3.0, "epochs": 3}
"""Hot and with large steps: tanh units saturate within 50 steps, so squashing has work to do."""


@pytest.mark.parametrize(
    "overrides",
    [
        {"T0": 0.2},
        {"anneal_rho": 1.0},
        {"boltzmann_k": 0.1},
        {"anneal_steps": 30},
        {"epochs": 3},
        {"eval_batch_size": 50},
        {"trainer": "hybrid", "hybrid_eta": 0.5, "_base": {"trainer": "hybrid"}},
        {"trainer": "hybrid", "hybrid_alpha": 0.3, "_base": {"trainer": "hybrid"}},
        {"trainer": "hybrid", "lr": 0.5, "_base": {"trainer": "hybrid"}},
        {"trainer": "hybrid", "batch_size": 16, "_base": {"trainer": "hybrid"}},
        {"cooling": "exponential", "cooling_rate": 0.9, "_base": {"cooling": "exponential"}},
        {"cooling": "adaptive", "adaptive_lambda": 2.0, "_base": {"cooling": "adaptive"}},
        {"granularity": "fraction", "perturb_fraction": 0.5, "_base": {"granularity": "fraction"}},
        {"squash": True, "_base": SATURATING},
        {"squash": True, "squash_threshold": 0.3, "_base": {**SATURATING, "squash": True}},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items() if k != "_base"),
)
def test_knob_changes_training(overrides: dict) -> None:
    changed = {k: v for k, v in overrides.items() if k != "_base"}
    base = {"trainer": "cauchy", **overrides.get("_base", {})}
    assert not same_training(run(**base), run(**{**base, **changed}))


@pytest.mark.parametrize(("key", "choices"), [("trainer", TRAINERS[1:]), ("granularity", GRANULARITIES),
                                              ("cooling", COOLINGS[1:])])  # fmt: skip
def test_each_choice_trains_differently(key: str, choices: tuple[str, ...]) -> None:
    runs = {choice: run(**{"trainer": "hybrid", key: choice}) for choice in choices}
    for (a, ra), (b, rb) in itertools.combinations(runs.items(), 2):
        assert not same_training(ra, rb), f"{key}={a!r} and {key}={b!r} trained identically"


@pytest.mark.parametrize("trainer", ["boltzmann", "cauchy", "hybrid"])
def test_auto_cooling_is_the_trainers_default(trainer: str) -> None:
    default = {"boltzmann": "log", "cauchy": "cauchy", "hybrid": "cauchy"}[trainer]
    assert same_training(run(trainer=trainer), run(trainer=trainer, cooling=default))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_chain_matches_its_restore_and_moves_to_the_cpu() -> None:
    a = Annealer(STATEFUL, WINE, device="cuda", seed=1)
    a.step(30, 0.02)
    blob, weights = a.get_state(), a._w.cpu().clone()
    b = Annealer(STATEFUL, WINE, device="cuda", seed=2)
    b.set_state(blob)
    assert a.step(60, 0.01) == b.step(60, 0.01) and torch.equal(a._w, b._w)
    cpu = Annealer(STATEFUL, WINE, seed=3)
    cpu.set_state(blob)  # the weights carry over; the move RNG is re-seeded on another device type
    assert torch.equal(cpu._w, weights)
    assert cpu.step(10, 0.01)["steps"] == 10
