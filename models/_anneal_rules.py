"""The formulas of annealing, each on its own: cooling, the Metropolis test, steps, squashing.

``models/anneal.py`` composes them into trainers; the tests check each formula here directly.

* Cooling (``t`` is the 1-based step number, so every schedule is defined at its first step):
  ``log`` ``T0 / ln(1 + t)`` (Boltzmann annealing, Geman & Geman), ``cauchy`` ``T0 / (1 + t)``
  (fast annealing, Szu & Hartley), ``exponential`` ``T0 * rate**t``, ``linear``
  ``T0 * (1 - t / (horizon + 1))``, and ``adaptive`` (:class:`AdaptiveCooling`), which reads the
  artificial specific heat ``C(T) = Var[E at T] / (kT)**2``.
* The Metropolis test: a move that changes the energy by ``delta`` is kept when
  ``u < exp(-delta / kT)``, ``u ~ U[0, 1)``: always when it improves, with probability
  ``exp(-delta / kT)`` when it worsens, never when the energy is NaN.
* Steps: Gaussian with standard deviation ``scale`` (Boltzmann: ``rho * sqrt(T)``, the
  generating density's variance proportional to ``T``) and Cauchy ``scale * tan(u)``,
  ``u ~ U(-pi/2, pi/2)`` (``scale = rho * T``; its median magnitude is ``scale``).
* Squashing: ``w <- c * tanh(w / c)`` shrinks large weights more than small ones, keeps signs
  and order, and bounds every weight by ``c``.

Example:
    >>> round(scheduled_temperature("log", 1.0, 1), 4), scheduled_temperature("cauchy", 1.0, 1)
    (1.4427, 0.5)
"""

from __future__ import annotations

import math

import torch

AUTO_COOLING = {"boltzmann": "log", "cauchy": "cauchy", "hybrid": "cauchy"}
"""The schedule ``cooling='auto'`` picks for each annealing trainer."""

ADAPTIVE_MIN_RATIO = 0.5
"""Adaptive cooling never cools faster than halving the temperature per level..."""

ADAPTIVE_MAX_RATIO = 0.999
"""...nor slower than this factor per level (it always makes some progress)."""

SATURATION = {"tanh": 2.65, "sigmoid": 4.6, "hardtanh": 1.0}
"""Pre-activation magnitude beyond which a bounded unit counts as saturated (within 1% of the bound)."""

RELU_HUGE = 20.0
"""A unit of the ReLU family counts as saturated where its pre-activation is <= 0 (dead) or above this."""

SQUASH_C = 2.0
"""Squashing bound: incoming weights of a unit with fan-in ``n`` are squashed to ``|w| < SQUASH_C / sqrt(n)``."""


def scheduled_temperature(cooling: str, T0: float, t: int, rate: float = 0.999, horizon: int = 1) -> float:
    """Temperature of step ``t`` under a fixed schedule (every cooling but ``adaptive``).

    Args:
        cooling: ``"log"``, ``"cauchy"``, ``"exponential"`` or ``"linear"``.
        T0: Initial temperature, ``> 0``.
        t: Step number, ``>= 1``.
        rate: ``exponential``: the factor per step.
        horizon: ``linear``: the number of steps of the run (the temperature reaches
            ``T0 / (horizon + 1)`` at its last step, never zero).

    Returns:
        The temperature, ``> 0``.

    Raises:
        ValueError: Unknown ``cooling`` or ``t < 1``.

    Example:
        >>> [scheduled_temperature("linear", 1.0, t, horizon=3) for t in (1, 2, 3)]
        [0.75, 0.5, 0.25]
    """
    if t < 1:
        raise ValueError(f"`t` must be >= 1 (schedules start at the first step), but got t={t!r}.")
    if cooling == "log":
        return T0 / math.log(1.0 + t)
    if cooling == "cauchy":
        return T0 / (1.0 + t)
    if cooling == "exponential":
        return T0 * rate**t
    if cooling == "linear":
        return T0 * (1.0 - t / (horizon + 1.0))
    raise ValueError(f"`cooling` must be 'log', 'cauchy', 'exponential' or 'linear', but got cooling={cooling!r}.")


def specific_heat(energy_var: float, T: float, k: float = 1.0) -> float:
    """The artificial specific heat ``C(T) = Var[E at T] / (k*T)**2``.

    With ``<E>`` the mean energy of the chain at temperature ``T``, ``d<E>/dT = C(T) * k``:
    a high specific heat marks the temperatures where the mean energy changes abruptly (a
    "phase transition" of the search), where cooling must be slow.

    Example:
        >>> round(specific_heat(0.04, 0.1), 6)
        4.0
    """
    return energy_var / (k * T) ** 2


class AdaptiveCooling:
    """Cooling paced by the specific heat (Huang, Romeo & Sangiovanni-Vincentelli, 1986).

    The chain runs a level of steps at a fixed temperature ``T``; the variance of its energy
    over the level gives ``C(T)``. Asking that the mean energy drop by about ``lambda``
    standard deviations per level gives ``T' = T * exp(-lambda / sqrt(C(T)))``: where
    ``C`` is high the ratio is near 1 (slow cooling), where it is low the temperature falls
    quickly. The ratio is kept in ``[ADAPTIVE_MIN_RATIO, ADAPTIVE_MAX_RATIO]`` so that a
    level without a single accepted move (``C = 0``) cools fast rather than to zero, and
    every level cools a little.

    Args:
        lam: ``lambda`` (``adaptive_lambda``), ``> 0``.
        k: Boltzmann's constant of the acceptance test.

    Example:
        >>> cooling = AdaptiveCooling(0.5)
        >>> cooling.next_temperature(1.0, energy_var=100.0) > cooling.next_temperature(1.0, energy_var=0.01)
        True
    """

    def __init__(self, lam: float, k: float = 1.0) -> None:
        self.lam, self.k = float(lam), float(k)

    def ratio(self, T: float, energy_var: float) -> float:
        """``T' / T`` after a level at ``T`` whose energies had variance ``energy_var``."""
        heat = specific_heat(max(0.0, energy_var), T, self.k)
        raw = math.exp(-self.lam / math.sqrt(heat)) if heat > 0 else 0.0
        return min(ADAPTIVE_MAX_RATIO, max(ADAPTIVE_MIN_RATIO, raw))

    def next_temperature(self, T: float, energy_var: float) -> float:
        """The next level's temperature."""
        return T * self.ratio(T, energy_var)


def acceptance_probability(delta: torch.Tensor, kT: float) -> torch.Tensor:
    """``min(1, exp(-delta / kT))``: 1 for improvements, NaN for a NaN energy."""
    return torch.exp(-delta / kT).clamp(max=1.0)


def metropolis(delta: torch.Tensor, kT: float, u: torch.Tensor) -> torch.Tensor:
    """The Metropolis test, vectorized: ``u < exp(-delta / kT)``.

    Args:
        delta: ``E(candidate) - E(current)`` (any shape).
        kT: ``boltzmann_k * T``, ``> 0``.
        u: Uniform draws in ``[0, 1)``, broadcastable to ``delta``.

    Returns:
        A bool tensor: ``True`` where the move is kept. A NaN ``delta`` is never kept.

    Example:
        >>> metropolis(torch.tensor([-1.0, 0.0, 1.0, float("nan")]), 1.0, torch.tensor(0.5)).tolist()
        [True, True, False, False]
    """
    return u < torch.exp(-delta / kT)


def gaussian_step(n: int, scale: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` independent Gaussian steps with standard deviation ``scale`` (Boltzmann annealing)."""
    return torch.randn(n, generator=generator, device=device).mul_(scale)


def cauchy_step(n: int, scale: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` independent Cauchy steps ``scale * tan(u)``, ``u ~ U(-pi/2, pi/2)``; median ``|x|`` is ``scale``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = cauchy_step(100_000, 0.5, g, torch.device("cpu"))
        >>> abs(x.abs().median().item() - 0.5) < 0.02
        True
    """
    u = torch.rand(n, generator=generator, device=device).sub_(0.5).mul_(math.pi)
    return torch.tan(u).mul_(scale)


def squash(w: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """``c * tanh(w / c)``: odd, monotone, ``|result| < c``, shrinks ``w`` by the factor ``tanh(x)/x``.

    That factor falls with ``|w| / c``, so large weights shrink more than small ones
    (``w = c`` keeps 76% of itself, ``w = 3c`` keeps 33%, ``w = 0.1c`` keeps 99.7%).

    Example:
        >>> [round(v, 3) for v in squash(torch.tensor([0.1, 1.0, 3.0, -3.0]), 1.0).tolist()]
        [0.1, 0.762, 0.995, -0.995]
    """
    return c * torch.tanh(w / c)


def saturated_units(pre: torch.Tensor, activation: str, threshold: float) -> torch.Tensor:
    """Which units sit in their activation's flat region on at least ``threshold`` of the batch.

    Args:
        pre: Pre-activations, shape ``(batch, units)`` (the activation module's input).
        activation: The catalog's activation name.
        threshold: Fraction of the batch, in ``(0, 1]``.

    Returns:
        A bool tensor of shape ``(units,)``. Bounded activations (tanh, sigmoid, hardtanh)
        saturate where ``|pre|`` passes :data:`SATURATION`; the ReLU family where the unit
        is dead (``pre <= 0``) or huge (``pre > RELU_HUGE``).

    Example:
        >>> pre = torch.tensor([[5.0, 0.1], [-4.0, 0.2], [3.0, -0.3]])
        >>> saturated_units(pre, "tanh", 0.9).tolist()
        [True, False]
    """
    if activation in SATURATION:
        flat = pre.abs() > SATURATION[activation]
    else:
        flat = (pre <= 0) | (pre > RELU_HUGE)
    return flat.float().mean(dim=0) >= threshold
