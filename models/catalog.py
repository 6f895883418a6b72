"""Names of the built-in tasks, models, hyperparameters and metrics — no torch here.

``service/spec.py`` validates job specs against this catalog, so a laptop client can
check a spec without importing PyTorch. The trainers in ``models/train.py`` read the
same defaults, so the two never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HParam:
    """One hyperparameter of a model.

    Attributes:
        kind: ``"int"``, ``"float"``, ``"choice"``, ``"bool"`` or ``"knots"``.
        default: Value used when the spec neither fixes nor searches it.
        low: Smallest allowed value (numbers).
        high: Largest allowed value (numbers); ``None`` for no bound.
        high_open: ``True`` when ``high`` itself is not allowed.
        low_open: ``True`` when ``low`` itself is not allowed.
        choices: Allowed values (``"choice"``).
        doc: One line for humans.
    """

    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    doc: str = ""

    def allowed(self) -> str:
        """Human description of the allowed values."""
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "knots":
            return "a list of [fraction_of_training, lr_factor] pairs with fractions rising from 0 to 1"
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open or self.high is None else "]"
        top = "inf" if self.high is None else f"{self.high:g}"
        return f"{'an integer' if self.kind == 'int' else 'a number'} in {lo}{self.low:g}, {top}{hi}"

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not allowed, or ``None`` when it is."""
        if self.kind == "choice":
            return None if value in self.choices else f"must be {self.allowed()}"
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == "knots":
            return _check_knots(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be {self.allowed()}"
        if self.kind == "int" and not float(value).is_integer():
            return f"must be {self.allowed()}"
        low_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        high_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return f"must be {self.allowed()}" if low_bad or high_bad else None


def _check_knots(value: Any) -> str | None:
    msg = "must be a list of [fraction_of_training, lr_factor] pairs with fractions rising from 0 to 1"
    if not isinstance(value, list | tuple) or len(value) < 2:
        return msg
    fracs = []
    for knot in value:
        if not isinstance(knot, list | tuple) or len(knot) != 2:
            return msg
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in knot) or knot[1] < 0:
            return msg
        fracs.append(float(knot[0]))
    if fracs[0] != 0.0 or fracs[-1] != 1.0 or any(b <= a for a, b in zip(fracs, fracs[1:], strict=False)):
        return msg
    return None


ACTIVATIONS = ("relu", "leaky_relu", "prelu", "elu", "tanh", "sigmoid", "hardtanh")
INITS = ("default", "xavier_uniform", "he_normal")
NORMS = ("none", "batch", "layer")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "rprop")
SCHEDULES = ("constant", "step", "piecewise", "cyclic", "inverse_time")
DATA_ORDERS = ("reshuffle", "shuffle_once", "fixed", "curriculum")
TRAINERS = ("backprop", "boltzmann", "cauchy", "hybrid")
COOLINGS = ("auto", "log", "cauchy", "exponential", "linear", "adaptive")
GRANULARITIES = ("all", "layer", "fraction")

MLP_HPARAMS: dict[str, HParam] = {
    "hidden_layers": HParam("int", 2, 0, 16, doc="number of hidden layers"),
    "units": HParam("int", 128, 1, 8192, doc="units per hidden layer"),
    "activation": HParam("choice", "relu", choices=ACTIVATIONS),
    "init": HParam("choice", "default", choices=INITS, doc="weight initialization"),
    "dropout": HParam("float", 0.0, 0.0, 1.0, high_open=True),
    "norm": HParam("choice", "none", choices=NORMS, doc="normalization after each hidden linear layer"),
    "optimizer": HParam("choice", "adam", choices=OPTIMIZERS),
    "lr": HParam("float", 1e-3, 0.0, None, low_open=True, doc="learning rate (eta0)"),
    "momentum": HParam("float", 0.9, 0.0, 1.0, high_open=True, doc="momentum / nesterov"),
    "beta1": HParam("float", 0.9, 0.0, 1.0, high_open=True, doc="adam / adamw"),
    "beta2": HParam("float", 0.999, 0.0, 1.0, high_open=True, doc="adam / adamw"),
    "rho": HParam("float", 0.9, 0.0, 1.0, low_open=True, high_open=True, doc="rmsprop alpha / adadelta rho"),
    "schedule": HParam("choice", "constant", choices=SCHEDULES, doc="learning-rate schedule"),
    "step_size": HParam("int", 10, 1, None, doc="step schedule: epochs between decays"),
    "step_gamma": HParam("float", 0.5, 0.0, 1.0, low_open=True, doc="step schedule: decay factor"),
    "lr_knots": HParam(
        "knots", [[0.0, 0.1], [0.1, 1.0], [1.0, 0.01]], doc="piecewise schedule: (fraction, factor) knots"
    ),
    "cycle_epochs": HParam("int", 4, 1, None, doc="cyclic schedule: epochs per triangle"),
    "cycle_min_factor": HParam("float", 0.1, 0.0, 1.0, doc="cyclic schedule: lowest lr / lr"),
    "decay_lambda": HParam("float", 1e-3, 0.0, None, doc="inverse_time: lr_t = lr / (1 + lr*lambda*t)"),
    "batch_size": HParam("int", 64, 1, None),
    "epochs": HParam("int", 20, 1, 100000),
    "weight_decay": HParam("float", 0.0, 0.0, None, doc="L2 penalty"),
    "l1": HParam("float", 0.0, 0.0, None, doc="L1 penalty on weights"),
    "max_norm": HParam("float", 0.0, 0.0, None, doc="max L2 norm of each unit's incoming weights; 0 = off"),
    "grad_noise_eta": HParam("float", 0.0, 0.0, None, doc="gradient noise variance eta/(1+t)^gamma; 0 = off"),
    "grad_noise_gamma": HParam("float", 0.55, 0.0, None),
    "data_order": HParam("choice", "reshuffle", choices=DATA_ORDERS),
    "patience": HParam("int", 0, 0, None, doc="early stopping on validation loss; 0 = off"),
    # Annealing trainers (models/anneal.py); an "epoch" of theirs is `anneal_steps` steps.
    "trainer": HParam("choice", "backprop", choices=TRAINERS, doc="backprop, or an annealing trainer"),
    "T0": HParam("float", 0.01, 0.0, None, low_open=True, doc="annealing: T0 of the cooling schedule"),
    "anneal_rho": HParam(
        "float", 1.0, 0.0, None, low_open=True, doc="annealing step scale: boltzmann std rho*sqrt(T), cauchy rho*T"
    ),
    "hybrid_eta": HParam("float", 0.9, 0.0, 1.0, doc="hybrid: share of backprop (1) vs Cauchy step (0)"),
    "hybrid_alpha": HParam("float", 0.9, 0.0, 1.0, high_open=True, doc="hybrid: momentum on the last change"),
    "cooling": HParam(
        "choice", "auto", choices=COOLINGS, doc="cooling schedule; auto: log for boltzmann, cauchy otherwise"
    ),
    "cooling_rate": HParam(
        "float", 0.999, 0.0, 1.0, low_open=True, high_open=True, doc="exponential cooling: T = T0 * rate**t"
    ),
    "adaptive_lambda": HParam(
        "float", 0.5, 0.0, None, low_open=True, doc="adaptive cooling: T <- T*exp(-lambda/sqrt(specific heat))"
    ),
    "granularity": HParam("choice", "all", choices=GRANULARITIES, doc="annealing: which weights a step perturbs"),
    "perturb_fraction": HParam(
        "float", 0.1, 0.0, 1.0, low_open=True, doc="granularity 'fraction': share of weights perturbed per step"
    ),
    "squash": HParam("bool", False, doc="annealing: squash the incoming weights of saturated hidden units"),
    "squash_threshold": HParam(
        "float", 0.9, 0.0, 1.0, low_open=True, doc="share of the eval batch on which a unit must be saturated"
    ),
    "anneal_steps": HParam("int", 200, 1, None, doc="annealing steps per reported epoch"),
    "eval_batch_size": HParam(
        "int", 0, 0, None, doc="annealing: samples of the fixed energy batch; 0 = the whole training set"
    ),
    "boltzmann_k": HParam("float", 1.0, 0.0, None, low_open=True, doc="acceptance exp(-delta / (k*T))"),
}

MODELS: dict[str, dict[str, HParam]] = {"mlp": MLP_HPARAMS}

TASKS: dict[str, str] = {
    "digits": "scikit-learn digits: 8x8 images, 10 classes, 1797 samples",
    "wine": "scikit-learn wine: 13 features, 3 classes, 178 samples",
    "breast_cancer": "scikit-learn breast cancer: 30 features, 2 classes, 569 samples",
    "xor": "XOR: 2 noisy inputs, 2 classes",
}

METRICS: dict[str, str] = {
    "val_accuracy": "max",
    "val_loss": "min",
    "train_loss": "min",
    "test_accuracy": "max",
    "test_loss": "min",
}
"""Metrics every built-in trainer reports, with the direction that is better."""
