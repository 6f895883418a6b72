"""Search-space dimensions, and their translation to scikit-optimize.

The grammar users write (validated in ``service/spec.py``)::

    lr:          {type: float, low: 1e-4, high: 1e-1, log: true}
    dropout:     {type: float, low: 0.0, high: 0.5}
    units:       {type: int, low: 16, high: 256, log: true}
    activation:  {type: categorical, choices: [relu, tanh]}

Example:
    >>> import random
    >>> space = {"lr": Float(1e-4, 1e-1, log=True), "act": Categorical(("relu", "tanh"))}
    >>> sorted(sample(space, random.Random(0)))
    ['act', 'lr']
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class Float:
    """A real-valued dimension on ``[low, high]``, optionally log-uniform."""

    low: float
    high: float
    log: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Grammar form."""
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Int:
    """An integer dimension on ``[low, high]`` (both inclusive), optionally log-uniform."""

    low: int
    high: int
    log: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Grammar form."""
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Categorical:
    """A choice among unordered values."""

    choices: tuple[Any, ...]

    def to_dict(self) -> dict[str, Any]:
        """Grammar form."""
        return {"type": "categorical", "choices": list(self.choices)}


Dimension = Union[Float, Int, Categorical]
Space = dict[str, Dimension]


def sample_dim(dim: Dimension, rng: random.Random) -> Any:
    """Draw one value of ``dim`` uniformly (log-uniformly where ``log``)."""
    if isinstance(dim, Categorical):
        return dim.choices[rng.randrange(len(dim.choices))]
    if isinstance(dim, Float):
        if dim.log:
            return math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))
        return rng.uniform(dim.low, dim.high)
    if dim.log:
        v = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high + 1)))
        return min(dim.high, max(dim.low, int(math.floor(v))))
    return rng.randint(dim.low, dim.high)


def sample(space: Space, rng: random.Random) -> dict[str, Any]:
    """Draw one point of ``space``."""
    return {name: sample_dim(dim, rng) for name, dim in space.items()}


def from_dict(d: dict[str, Any]) -> Dimension:
    """Build a dimension from its (already validated) grammar form."""
    kind = d["type"]
    if kind == "float":
        return Float(float(d["low"]), float(d["high"]), bool(d.get("log", False)))
    if kind == "int":
        return Int(int(d["low"]), int(d["high"]), bool(d.get("log", False)))
    if kind == "categorical":
        return Categorical(tuple(d["choices"]))
    raise ValueError(f"unknown dimension type {kind!r}; allowed: float, int, categorical")
