"""Bayesian optimization: a scikit-optimize ``Optimizer`` with a GP surrogate, driven by ask/tell.

How a point is chosen (:meth:`BayesStrategy._propose`):

1. The first ``n_initial_points`` trials come from a space-filling design drawn once from the
   seed (``initial_point_generator``), independent of results, so parallel workers can start
   at once.
2. After that, an ``Optimizer`` is built for the ask and told every observation (Mode.MAX
   values negated, so it always minimizes), then every *pending* trial (asked, not told)
   with a constant lie (``liar="cl_min"``: the best value seen so far). The lie flattens the
   acquisition around points in flight, so parallel asks never hand out the same point
   twice; skopt's own ``ask()`` would return one cached point until the next ``tell``.
   The GP is fitted once per ask and not at all on ``tell`` (a tell only records), which
   is the same cost as skopt's own ask/tell loop, with no refit for each lie.
3. ``Optimizer.ask()`` returns the acquisition's minimizer; a few more L-BFGS runs from the
   best observed points may improve on it (``n_local``). Values come back as plain Python
   types (:func:`search.space.from_skopt`).

Failed trials (``Status.FAILED`` or a non-finite value) are shown to the GP at the worst
value observed so far (``on_failure="worst"``, recomputed at every ask), so the region
that crashed or diverged is avoided rather than retried; with ``on_failure="skip"`` they
are left out. Before any trial succeeded there is nothing to impute and they are left out.
Pruned trials are told their last reported value (a pessimistic estimate of the final
value, which is what pruning concluded).

Randomness is derived per trial from ``(seed, trial_id)``, so the state is only the history
and a restored strategy proposes exactly what the original would have.

Defaults (``DEFAULTS``) were tuned with ``benchmarks/bo_quality.py`` (Branin 2-D and
Hartmann6 6-D, 40 evaluations, sequential asks, 2 shared CPU cores) against Optuna's
``GPSampler``; plain skopt defaults measured regret 0.0012 / 0.22 at ~1 s per ask there.
What was chosen, and why:

* **One BLAS thread during fit and acquisition** (``threadpoolctl``): the matrices are at most
  ``n_trials`` wide, and OpenBLAS' 2-thread pool spun on a loaded 2-core box, making an ask
  2-4x slower. Largest single speed-up.
* **gp_restarts=1** and **MAP hyperparameters** (``gp_prior=True``, Optuna's priors, see
  :mod:`search._gp`): maximum likelihood let length scales run to their bound and EI then
  chased corners; the prior keeps them near the unit cube's scale. skopt's default of 2
  restarts costs a third more time for no measurable gain.
* **Noise floor 1e-8** (own ``WhiteKernel``; skopt's floor is 1e-5 of the variance): with
  Branin's range a 1e-5 floor blurs the last 1e-3 of regret. The noise is still learned.
* **xi=0** (skopt: 0.01, in objective units): a fixed absolute margin keeps EI from refining
  an optimum once regret is below it; Branin median regret went 0.0006 -> 0.0000.
* **acq_optimizer="lbfgs", n_points=2000, n_restarts_optimizer=1, n_local=3**: 10000
  candidates and 5 restarts (skopt) cost time without better optima; instead 3 extra L-BFGS
  runs start at the best observed points (:func:`search._gp.polish`), which is where
  late proposals need precision.
* **EI**, not ``gp_hedge`` (cannot keep its gains across per-ask rebuilds) and not LCB
  (worse on Hartmann6 in our sweeps; PI was not tried).
* **12 Sobol initial points** (skopt: 10 random): 12 beat 10 on held-out seeds 10-19
  (Hartmann6 median regret 0.025 vs 0.126) as well as on 0-9; LHS and Halton were worse.

Measured (``benchmarks/results/bo_quality.md``), median regret over seeds 0-4: Branin
0.000032 vs Optuna GP 0.000037, Hartmann6 0.0103 vs 0.0461 (plain skopt: 0.0012, 0.22), at
120-215 ms per ask+tell vs Optuna GP's 145-355 ms over four runs on a shared 2-core machine.
Over 20 seeds: 0.000032 vs 0.000085 and 0.017 vs 0.025; both methods end in a local optimum
of Hartmann6 (regret > 0.1) on 8 of 20 seeds, so read this as on par with Optuna's GP.

Options (``SearchConfig.options``; unknown keys are an error):

* ``n_initial_points``: size of the initial design.
* ``initial_point_generator``: ``"sobol"``, ``"lhs"``, ``"halton"``, ``"hammersly"``,
  ``"random"``.
* ``acq_func``: ``"EI"``, ``"PI"`` or ``"LCB"`` (``gp_hedge`` is not offered: its gains
  would not survive the per-ask rebuild, so it would pick at random).
* ``acq_optimizer``: ``"lbfgs"`` or ``"sampling"``; ``n_points`` random candidates are scored,
  and with lbfgs the best ``n_restarts_optimizer`` are polished.
* ``xi`` (EI/PI) and ``kappa`` (LCB): exploration knobs.
* ``gp_restarts``: random restarts of the kernel-hyperparameter fit.
* ``gp_prior``: fit kernel hyperparameters by MAP with Optuna's priors (else max likelihood).
* ``n_local``: extra L-BFGS runs on the acquisition from the best observed points (0: off).
* ``noise``: ``"gaussian"`` (learned), or a fixed noise variance (in units of the
  standardized objective).
* ``liar``: ``"cl_min"``, ``"cl_mean"`` or ``"cl_max"``.
* ``on_failure``: ``"worst"`` or ``"skip"``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

from search._gp import make_gp, polish
from search._trials import TrialStrategy
from search.base import SearchConfig, Status
from search.space import from_skopt, to_skopt, to_skopt_point

DEFAULTS: dict[str, Any] = {
    "n_initial_points": 12,
    "initial_point_generator": "sobol",
    "acq_func": "EI",
    "acq_optimizer": "lbfgs",
    "n_points": 2000,
    "n_restarts_optimizer": 1,
    "xi": 0.0,
    "kappa": 1.96,
    "gp_restarts": 1,
    "gp_prior": True,
    "n_local": 3,
    "noise": "gaussian",
    "liar": "cl_min",
    "on_failure": "worst",
}

_CHOICES: dict[str, tuple[Any, ...]] = {
    "initial_point_generator": ("sobol", "lhs", "halton", "hammersly", "random"),
    "acq_func": ("EI", "PI", "LCB"),
    "acq_optimizer": ("lbfgs", "sampling"),
    "liar": ("cl_min", "cl_mean", "cl_max"),
    "on_failure": ("worst", "skip"),
}
_INT_MIN = {"n_initial_points": 1, "n_points": 1, "n_restarts_optimizer": 1, "gp_restarts": 0, "n_local": 0}


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown bayes option(s) {unknown}; allowed: {sorted(DEFAULTS)}.")
    merged = {**DEFAULTS, **options}
    for key, allowed in _CHOICES.items():
        if merged[key] not in allowed:
            raise ValueError(f"`{key}` must be one of {list(allowed)}, but got {key}={merged[key]!r}.")
    for key, minimum in _INT_MIN.items():
        v = merged[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"`{key}` must be an int >= {minimum}, but got {key}={v!r}.")
    if not isinstance(merged["gp_prior"], bool):
        raise ValueError(f"`gp_prior` must be a bool, but got gp_prior={merged['gp_prior']!r}.")
    for key in ("xi", "kappa"):
        v = merged[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"`{key}` must be a number >= 0, but got {key}={v!r}.")
    noise = merged["noise"]
    numeric = not isinstance(noise, bool) and isinstance(noise, (int, float))
    if noise != "gaussian" and not (numeric and noise > 0):
        raise ValueError(f"`noise` must be 'gaussian' or a number > 0, but got noise={noise!r}.")
    return merged


def _rng(seed: int, *keys: int) -> Any:
    """A NumPy RandomState derived from ``seed`` and ``keys`` (independent streams)."""
    import numpy as np

    entropy = [seed & 0xFFFFFFFFFFFFFFFF, *keys]
    return np.random.RandomState(np.random.SeedSequence(entropy).generate_state(4))


class BayesStrategy(TrialStrategy):
    """Gaussian-process Bayesian optimization with constant-liar parallel asks.

    Args:
        config: Space, mode, budget, seed, pruner; ``options`` override :data:`DEFAULTS`.

    Raises:
        ValueError: Empty space, unknown option or out-of-range option value.

    Example:
        >>> from search.base import Result, SearchConfig
        >>> from search.space import Float
        >>> cfg = SearchConfig(space={"x": Float(-2.0, 2.0)}, n_trials=6,
        ...                    options={"n_initial_points": 3})
        >>> s = BayesStrategy(cfg)
        >>> while not s.done():
        ...     for p in s.ask(2):
        ...         s.tell(Result(p.trial_id, p.params, value=(p.params["x"] - 1.0) ** 2))
        >>> abs(s.best().params["x"] - 1.0) < 0.5
        True
    """

    name: ClassVar[str] = "bayes"

    def __init__(self, config: SearchConfig) -> None:
        super().__init__(config)
        if not config.space:
            raise ValueError(f"`space` must have at least one dimension, but got space={config.space!r}.")
        self._options = _check_options(dict(config.options))
        self._dims = to_skopt(config.space)
        self._design: list[dict[str, Any]] | None = None

    # -- initial design ----------------------------------------------------------------------

    def _initial_design(self) -> list[dict[str, Any]]:
        if self._design is None:
            from skopt.space import Space
            from skopt.utils import cook_initial_point_generator

            n = self._options["n_initial_points"]
            generator = cook_initial_point_generator(self._options["initial_point_generator"])
            rng = _rng(self._config.seed, 0x1D)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if generator is None:
                    points = Space(self._dims).rvs(n_samples=n, random_state=rng)
                else:
                    points = generator.generate(self._dims, n, random_state=rng)
            self._design = [from_skopt(self._config.space, p) for p in points]
        return self._design

    # -- model-based proposals ----------------------------------------------------------------

    def _observations(self) -> tuple[list[list[Any]], list[float]]:
        """Told points and their losses (minimization terms) as the GP should see them."""
        sign = self._config.mode.sign()
        good: list[tuple[list[Any], float]] = []
        bad: list[list[Any]] = []
        for r in self._results:
            x = to_skopt_point(self._config.space, {k: r.params[k] for k in self._config.space})
            usable = r.status is not Status.FAILED and r.value is not None and math.isfinite(r.value)
            if usable:
                good.append((x, sign * float(r.value)))
            else:
                bad.append(x)
        xs = [x for x, _ in good]
        ys = [y for _, y in good]
        if ys and self._options["on_failure"] == "worst":
            worst = max(ys)
            xs += bad
            ys += [worst] * len(bad)
        return xs, ys

    def _lie(self, ys: list[float]) -> float:
        liar = self._options["liar"]
        if liar == "cl_min":
            return min(ys)
        if liar == "cl_max":
            return max(ys)
        return sum(ys) / len(ys)

    def _propose(self, trial_id: int) -> dict[str, Any]:
        design = self._initial_design()
        if trial_id < len(design):
            return dict(design[trial_id])
        xs, ys = self._observations()
        if len(set(ys)) < 2:  # nothing to fit a GP to yet
            return self._redraw(trial_id, -1)
        pending = [to_skopt_point(self._config.space, p.params) for p in self._pending.values()]
        lie = self._lie(ys)
        n_real = len(xs)
        point = self._ask_optimizer(trial_id, xs + pending, ys + [lie] * len(pending), n_real)
        return from_skopt(self._config.space, point)

    def _ask_optimizer(self, trial_id: int, xs: list[list[Any]], ys: list[float], n_real: int) -> list[Any]:
        from skopt import Optimizer
        from threadpoolctl import threadpool_limits

        o = self._options
        rng = _rng(self._config.seed, 0xB0, trial_id)
        optimizer = Optimizer(
            self._dims,
            base_estimator=make_gp(self._dims, o["noise"], o["gp_restarts"], o["gp_prior"], rng.randint(0, 2**31 - 1)),
            n_initial_points=0,
            acq_func=o["acq_func"],
            acq_optimizer=o["acq_optimizer"],
            random_state=rng,
            acq_func_kwargs={"xi": o["xi"], "kappa": o["kappa"]},
            acq_optimizer_kwargs={
                "n_points": o["n_points"],
                "n_restarts_optimizer": o["n_restarts_optimizer"],
            },
        )
        # The matrices are tiny (n_trials x n_trials): one BLAS thread is several times faster
        # than a pool that spins, and leaves the cores to the workers.
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore")
            optimizer.tell(xs, ys)
            point = optimizer.ask()
            if o["n_local"] and o["acq_optimizer"] == "lbfgs":
                point = polish(optimizer, point, xs[:n_real], ys[:n_real], o["n_local"], rng)
        return point

    def _redraw(self, trial_id: int, attempt: int) -> dict[str, Any]:
        from skopt.space import Space

        rng = _rng(self._config.seed, 0x5A, trial_id, attempt + 1)
        return from_skopt(self._config.space, Space(self._dims).rvs(n_samples=1, random_state=rng)[0])
