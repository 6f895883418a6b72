"""Network builders from hyperparameters.

Only standard ``torch.nn`` modules are used, so a trained model pickles and loads back
(``torch.load``, ``mlflow.pytorch.load_model``) without this package installed.

Example:
    >>> net = build_mlp(4, 3, {"hidden_layers": 1, "units": 8, "norm": "layer", "dropout": 0.1})
    >>> [type(m).__name__ for m in net]
    ['Linear', 'LayerNorm', 'ReLU', 'Dropout', 'Linear']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from models.catalog import MLP_HPARAMS

NET_KEYS = ("hidden_layers", "units", "activation", "init", "dropout", "norm")
"""The MLP hyperparameters that shape the network (the others shape training)."""

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "hardtanh": nn.Hardtanh,
}

# Gain names understood by nn.init.calculate_gain; PReLU starts as LeakyReLU(0.25).
_GAINS: dict[str, tuple[str, float | None]] = {
    "relu": ("relu", None),
    "leaky_relu": ("leaky_relu", 0.01),
    "prelu": ("leaky_relu", 0.25),
    "elu": ("relu", None),
    "tanh": ("tanh", None),
    "sigmoid": ("sigmoid", None),
    "hardtanh": ("tanh", None),
}


def build_mlp(n_in: int, n_out: int, hp: Mapping[str, Any]) -> nn.Sequential:
    """Build a multilayer perceptron that outputs logits.

    Each hidden layer is ``Linear -> [BatchNorm1d | LayerNorm] -> activation -> [Dropout]``;
    the last layer is a plain ``Linear(units, n_out)`` (no softmax). ``hidden_layers=0``
    gives multinomial logistic regression. Keys missing from ``hp`` take the catalog
    defaults; keys that do not shape the network (``lr``, ...) are ignored. Initialization:
    ``default`` keeps PyTorch's; ``xavier_uniform`` uses the gain of the layer's activation;
    ``he_normal`` draws hidden weights from N(0, 2/fan_in) (the leaky slope accounted for);
    both use a linear gain for the output layer and zero the biases. The
    draws use torch's global RNG: seed it (in a ``torch.random.fork_rng()`` block) first.

    Args:
        n_in: Number of input features.
        n_out: Number of outputs (classes).
        hp: Hyperparameters; see ``models.catalog.MLP_HPARAMS``.

    Returns:
        The network, in training mode, on the CPU.

    Raises:
        ValueError: A shaping hyperparameter has a value the catalog does not allow.

    Example:
        >>> build_mlp(2, 2, {"hidden_layers": 2, "units": 16, "activation": "tanh"})[0]
        Linear(in_features=2, out_features=16, bias=True)
    """
    p = {key: hp.get(key, MLP_HPARAMS[key].default) for key in NET_KEYS}
    for key, value in p.items():
        why = MLP_HPARAMS[key].check(value)
        if why is not None:
            raise ValueError(f"Hyperparameter `{key}` {why}, but got {key}={value!r}.")
    if n_in < 1 or n_out < 1:
        raise ValueError(f"`n_in` and `n_out` must be >= 1, but got ({n_in=}, {n_out=}).")

    layers: list[nn.Module] = []
    width = int(n_in)
    for _ in range(int(p["hidden_layers"])):
        linear = nn.Linear(width, int(p["units"]))
        _init(linear, p["init"], p["activation"])
        layers.append(linear)
        if p["norm"] == "batch":
            layers.append(nn.BatchNorm1d(int(p["units"])))
        elif p["norm"] == "layer":
            layers.append(nn.LayerNorm(int(p["units"])))
        layers.append(_ACTIVATIONS[p["activation"]]())
        if p["dropout"] > 0:
            layers.append(nn.Dropout(float(p["dropout"])))
        width = int(p["units"])
    head = nn.Linear(width, int(n_out))
    _init(head, p["init"], None)
    layers.append(head)
    return nn.Sequential(*layers)


def _init(linear: nn.Linear, init: str, activation: str | None) -> None:
    if init == "default":
        return
    name, param = _GAINS[activation] if activation is not None else ("linear", None)
    if init == "xavier_uniform":
        nn.init.xavier_uniform_(linear.weight, gain=nn.init.calculate_gain(name, param))
    elif activation is None:  # he_normal, output layer: std 1/sqrt(fan_in)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="linear")
    elif name == "leaky_relu":  # he_normal accounting for the negative slope
        nn.init.kaiming_normal_(linear.weight, a=param or 0.0, nonlinearity="leaky_relu")
    else:  # he_normal: std sqrt(2/fan_in), whatever the activation (as in He et al. and Keras)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    nn.init.zeros_(linear.bias)
