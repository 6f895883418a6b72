from __future__ import annotations

import io
import math
import pickle

import pytest
import torch
from torch import nn

from models.catalog import ACTIVATIONS, INITS, NORMS
from models.nets import build_mlp


def seeded_mlp(n_in: int, n_out: int, hp: dict, seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_mlp(n_in, n_out, hp)


def kinds(net: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in net]


def test_defaults_are_the_catalog_defaults() -> None:
    net = build_mlp(5, 3, {})
    assert kinds(net) == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert net[0].out_features == 128 and net[-1].out_features == 3


@pytest.mark.parametrize(
    ("norm", "dropout", "expected"),
    [
        ("none", 0.0, ["Linear", "Tanh", "Linear", "Tanh", "Linear"]),
        ("batch", 0.0, ["Linear", "BatchNorm1d", "Tanh", "Linear", "BatchNorm1d", "Tanh", "Linear"]),
        (
            "layer",
            0.2,
            ["Linear", "LayerNorm", "Tanh", "Dropout", "Linear", "LayerNorm", "Tanh", "Dropout", "Linear"],
        ),
    ],
)
def test_layer_structure(norm: str, dropout: float, expected: list[str]) -> None:
    net = build_mlp(4, 2, {"hidden_layers": 2, "units": 8, "activation": "tanh", "norm": norm, "dropout": dropout})
    assert kinds(net) == expected
    assert net(torch.randn(5, 4)).shape == (5, 2)


def test_zero_hidden_layers_is_logistic_regression() -> None:
    net = build_mlp(7, 3, {"hidden_layers": 0, "norm": "batch", "dropout": 0.5})
    assert kinds(net) == ["Linear"] and net[0].in_features == 7


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_changes_the_function(activation: str) -> None:
    x = torch.linspace(-3, 3, 64).reshape(32, 2)
    hp = {"hidden_layers": 2, "units": 16, "activation": activation}
    net = seeded_mlp(2, 2, hp)
    expected = {"leaky_relu": "LeakyReLU", "prelu": "PReLU", "elu": "ELU", "relu": "ReLU", "tanh": "Tanh"}
    assert expected.get(activation, activation.capitalize()) in kinds(net)
    out = net(x)
    for other in ACTIVATIONS:
        if other != activation:  # same seed, same weights, different nonlinearity
            assert not torch.allclose(out, seeded_mlp(2, 2, {**hp, "activation": other})(x))


@pytest.mark.parametrize("init", INITS)
def test_each_init_draws_different_weights(init: str) -> None:
    hp = {"hidden_layers": 1, "units": 32, "init": init}
    w = seeded_mlp(10, 3, hp)[0].weight
    for other in INITS:
        if other != init:
            assert not torch.equal(w, seeded_mlp(10, 3, {**hp, "init": other})[0].weight)


def test_xavier_uniform_bound_and_zero_bias() -> None:
    net = seeded_mlp(100, 10, {"hidden_layers": 1, "units": 300, "init": "xavier_uniform", "activation": "tanh"})
    bound = 5 / 3 * math.sqrt(6 / (100 + 300))  # tanh gain 5/3
    assert net[0].weight.abs().max() <= bound
    assert net[0].weight.abs().max() > 0.95 * bound
    assert torch.count_nonzero(net[0].bias) == 0 and torch.count_nonzero(net[-1].bias) == 0


def test_he_normal_standard_deviation() -> None:
    net = seeded_mlp(200, 10, {"hidden_layers": 1, "units": 400, "init": "he_normal"})
    assert net[0].weight.std().item() == pytest.approx(math.sqrt(2 / 200), rel=0.03)
    assert net[-1].weight.std().item() == pytest.approx(math.sqrt(1 / 400), rel=0.1)


@pytest.mark.parametrize("norm", NORMS)
def test_model_pickles_as_plain_torch_modules(norm: str) -> None:
    net = seeded_mlp(3, 2, {"hidden_layers": 2, "units": 8, "norm": norm, "dropout": 0.1, "activation": "prelu"})
    net.eval()
    assert all(type(m).__module__.startswith("torch.nn") for m in net.modules())
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(4, 3)
    torch.testing.assert_close(loaded(x), net(x))
    assert isinstance(pickle.loads(pickle.dumps(net)), nn.Sequential)


@pytest.mark.parametrize(
    ("hp", "key"),
    [({"activation": "swish"}, "activation"), ({"norm": "group"}, "norm"), ({"dropout": 1.0}, "dropout")],
)
def test_bad_values_are_rejected_by_name(hp: dict, key: str) -> None:
    with pytest.raises(ValueError, match=f"`{key}`"):
        build_mlp(2, 2, hp)
