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
from typing import Any


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


Dimension = Float | Int | Categorical
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


def to_skopt(space: Space) -> list[Any]:
    """Translate ``space`` into scikit-optimize dimensions, named after the parameters.

    ``Float(log=True)`` becomes ``Real(prior="log-uniform")``, ``Int(log=True)`` becomes
    ``Integer(prior="log-uniform")`` and ``Categorical`` becomes ``Categorical``. The order
    of the returned list is the order of ``space``; :func:`from_skopt` and
    :func:`to_skopt_point` use the same order. scikit-optimize is imported here, not at
    module import, so that ``search.space`` stays cheap to import.

    Args:
        space: The search space.

    Returns:
        One ``skopt.space.Dimension`` per entry of ``space``.

    Example:
        >>> dims = to_skopt({"lr": Float(1e-4, 1e-1, log=True), "units": Int(8, 64)})
        >>> [(d.name, d.prior) for d in dims]
        [('lr', 'log-uniform'), ('units', 'uniform')]
    """
    from skopt.space import Categorical as SkCategorical
    from skopt.space import Integer as SkInteger
    from skopt.space import Real as SkReal

    dims: list[Any] = []
    for name, dim in space.items():
        if isinstance(dim, Float):
            prior = "log-uniform" if dim.log else "uniform"
            dims.append(SkReal(dim.low, dim.high, prior=prior, name=name))
        elif isinstance(dim, Int):
            prior = "log-uniform" if dim.log else "uniform"
            dims.append(SkInteger(dim.low, dim.high, prior=prior, name=name))
        elif isinstance(dim, Categorical):
            dims.append(SkCategorical(list(dim.choices), name=name))
        else:
            raise TypeError(f"`space[{name!r}]` must be Float, Int or Categorical, but got {dim!r}.")
    return dims


def _plain(value: Any) -> Any:
    """Turn a NumPy scalar into the equivalent Python scalar; leave the rest alone."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    return value


def _match_choice(dim: Categorical, value: Any) -> Any:
    """The element of ``dim.choices`` that ``value`` stands for (exact type first)."""
    value = _plain(value)
    for choice in dim.choices:
        if type(choice) is type(value) and choice == value:
            return choice
    for choice in dim.choices:
        if choice == value:
            return choice
    for choice in dim.choices:
        if str(choice) == str(value):
            return choice
    raise ValueError(f"`value` must be one of {list(dim.choices)}, but got {value!r}.")


def to_python(dim: Dimension, value: Any) -> Any:
    """Coerce one value of ``dim`` to a plain, JSON-serializable Python value.

    Args:
        dim: The dimension the value belongs to.
        value: A value as scikit-optimize returns it (``np.int64``, ``np.float64``,
            ``np.str_`` ...) or as a JSON round trip left it.

    Returns:
        ``float`` for ``Float``, ``int`` for ``Int`` (clipped to the bounds), and the
        matching element of ``choices`` for ``Categorical``.
    """
    if isinstance(dim, Float):
        return float(value)
    if isinstance(dim, Int):
        return min(dim.high, max(dim.low, int(round(float(value)))))
    return _match_choice(dim, value)


def from_skopt(space: Space, point: list[Any]) -> dict[str, Any]:
    """Turn a scikit-optimize point (a list in ``space`` order) into a params dict.

    Args:
        space: The search space the point was drawn from.
        point: One point, e.g. from ``Optimizer.ask()``.

    Returns:
        ``{name: value}`` with plain Python values (``json.dumps`` works on it).

    Example:
        >>> import numpy as np
        >>> from_skopt({"units": Int(8, 64), "act": Categorical(("relu", "tanh"))},
        ...            [np.int64(16), np.str_("tanh")])
        {'units': 16, 'act': 'tanh'}
    """
    if len(point) != len(space):
        raise ValueError(f"`point` must have {len(space)} values (one per dimension), but got {point!r}.")
    return {name: to_python(dim, value) for (name, dim), value in zip(space.items(), point, strict=True)}


def to_skopt_point(space: Space, params: dict[str, Any]) -> list[Any]:
    """Inverse of :func:`from_skopt`: a params dict as a list in ``space`` order.

    Args:
        space: The search space.
        params: Values for every dimension of ``space`` (extra keys are an error).

    Returns:
        The point as scikit-optimize's ``tell`` expects it.
    """
    missing = [name for name in space if name not in params]
    extra = [name for name in params if name not in space]
    if missing or extra:
        raise ValueError(
            f"`params` must have exactly the keys of the space {list(space)}, "
            f"but got {sorted(params)} (missing {missing}, unknown {extra})."
        )
    return [to_python(dim, params[name]) for name, dim in space.items()]
