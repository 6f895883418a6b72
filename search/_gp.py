"""The Gaussian-process surrogate and acquisition helpers behind :mod:`search.bayes`.

Two additions to scikit-optimize's defaults, both borrowed from Optuna's GP sampler:

* :class:`MapFit` fits the kernel hyperparameters by maximum a posteriori instead of maximum
  likelihood. With a few dozen points in several dimensions, plain likelihood often drives
  length scales to their upper bound; the GP then calls most of the space flat and expected
  improvement sends every point to a corner. The priors (on the normalized ``[0, 1]`` inputs
  and standardized outputs) are Optuna's: ``-(0.1 l**2 + 0.1 / l**2)`` per length scale
  (peak at ``l = 1``), Gamma(2, 1) on the signal variance, Gamma(1.1, 30) on the noise.
* :func:`polish` restarts L-BFGS on the acquisition from the best observed points.

And one to the kernel: the learned noise variance may go down to :data:`NOISE_FLOOR` of the
standardized objective's variance (skopt: 1e-5), so deterministic objectives can be refined
to their last digits.

scikit-optimize, SciPy and NumPy are imported inside the functions.
"""

from __future__ import annotations

import math
from typing import Any

_LS_WEIGHT = 0.1
_AMP_SHAPE, _AMP_RATE = 2.0, 1.0
_NOISE_SHAPE, _NOISE_RATE = 1.1, 30.0
NOISE_FLOOR = 1e-8  # noise variance, in units of the standardized objective
LOCAL_MAXITER = 50


class MapFit:
    """Kernel-hyperparameter optimizer for scikit-learn's GP: L-BFGS-B on -(log likelihood + log prior).

    The parameter vector ``theta`` (log scale) is laid out as scikit-optimize builds its kernel:
    ``[log amplitude, log length scales (n_dims), log noise (when learned)]``.

    Args:
        n_dims: Number of length scales.
        learned_noise: Whether the last entry of ``theta`` is a learned noise level.
    """

    def __init__(self, n_dims: int, learned_noise: bool) -> None:
        self.n_dims = n_dims
        self.learned_noise = learned_noise

    def log_prior(self, theta: Any) -> tuple[float, Any]:
        """Log prior density (up to a constant) and its gradient with respect to ``theta``."""
        import numpy as np

        theta = np.asarray(theta, dtype=float)
        grad = np.zeros_like(theta)
        amp = math.exp(theta[0])
        value = (_AMP_SHAPE - 1.0) * theta[0] - _AMP_RATE * amp
        grad[0] = (_AMP_SHAPE - 1.0) - _AMP_RATE * amp
        ls2 = np.exp(2.0 * theta[1 : 1 + self.n_dims])
        value += float(-_LS_WEIGHT * np.sum(ls2 + 1.0 / ls2))
        grad[1 : 1 + self.n_dims] = -2.0 * _LS_WEIGHT * (ls2 - 1.0 / ls2)
        if self.learned_noise:
            noise = math.exp(theta[-1])
            value += (_NOISE_SHAPE - 1.0) * theta[-1] - _NOISE_RATE * noise
            grad[-1] = (_NOISE_SHAPE - 1.0) - _NOISE_RATE * noise
        return value, grad

    def __call__(self, obj_func: Any, initial_theta: Any, bounds: Any) -> tuple[Any, float]:
        """The ``optimizer`` callable scikit-learn's ``GaussianProcessRegressor`` accepts."""
        from scipy.optimize import minimize

        def objective(theta: Any) -> tuple[float, Any]:
            neg_lml, neg_grad = obj_func(theta, eval_gradient=True)
            log_p, grad_p = self.log_prior(theta)
            return neg_lml - log_p, neg_grad - grad_p

        res = minimize(objective, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds)
        return res.x, float(res.fun)


def make_gp(dims: list[Any], noise: Any, restarts: int, prior: bool, random_state: int) -> Any:
    """scikit-optimize's default GP for ``dims`` (Matern 5/2 ARD, or Hamming when all categorical).

    Args:
        dims: scikit-optimize dimensions of the space.
        noise: ``"gaussian"`` to learn the noise level, or a fixed noise variance.
        restarts: Extra random restarts of the hyperparameter fit.
        prior: Fit hyperparameters by MAP with :class:`MapFit` instead of maximum likelihood.
        random_state: Seed of the restarts.
    """
    import numpy as np
    from skopt.learning import GaussianProcessRegressor
    from skopt.learning.gaussian_process.kernels import ConstantKernel, HammingKernel, Matern, WhiteKernel
    from skopt.space import Space
    from skopt.utils import normalize_dimensions

    space = Space(normalize_dimensions(dims))
    n = space.transformed_n_dims
    if space.is_categorical:
        kernel = HammingKernel(length_scale=np.ones(n))
    else:
        kernel = Matern(length_scale=np.ones(n), length_scale_bounds=[(0.01, 100)] * n, nu=2.5)
    kernel = ConstantKernel(1.0, (0.01, 1000.0)) * kernel
    if noise == "gaussian":
        # Our own WhiteKernel (skopt adds one with a 1e-5 floor otherwise): on standardized
        # values a 1e-5 noise variance blurs the last digits a deterministic objective has.
        kernel = kernel + WhiteKernel(1e-3, (NOISE_FLOOR, 1.0))
    return GaussianProcessRegressor(
        kernel=kernel,
        normalize_y=True,
        noise=noise,
        optimizer=MapFit(n, noise == "gaussian") if prior else "fmin_l_bfgs_b",
        n_restarts_optimizer=restarts,
        random_state=random_state,
    )


def polish(optimizer: Any, point: list[Any], xs: list[list[Any]], ys: list[float], n_local: int, rng: Any) -> list[Any]:
    """Local search on the acquisition from the best observations; keep it if it beats ``point``.

    scikit-optimize starts L-BFGS only from the best of ``n_points`` random candidates, which in
    a few dimensions rarely lie near the incumbent, so late, exploitative steps land short of
    the optimum. This starts ``n_local`` more runs: at the 2nd..n-th best observed points and at
    a slightly jittered best one. A result that coincides with a told or lied point is dropped.

    Args:
        optimizer: A ``skopt.Optimizer`` that has been told and fitted.
        point: Its own proposal (``optimizer.ask()``).
        xs: Observed points (no lies), in the optimizer's space.
        ys: Their losses.
        n_local: Number of extra local searches.
        rng: NumPy ``RandomState`` for the jitter.

    Returns:
        ``point``, or the polished point when its acquisition value is lower.
    """
    import numpy as np
    from scipy.optimize import fmin_l_bfgs_b
    from skopt.acquisition import _gaussian_acquisition, gaussian_acquisition_1D

    space, model = optimizer.space, optimizer.models[-1]
    bounds = np.array(space.transformed_bounds, dtype=float)
    y_opt = float(np.min(optimizer.yi))
    args = (model, y_opt, optimizer.acq_func, optimizer.acq_func_kwargs)
    best_x = space.transform([point])[0]
    best_f = float(_gaussian_acquisition(best_x[None, :], *args[:3], acq_func_kwargs=args[3])[0])
    seen = space.transform(optimizer.Xi)
    order = np.argsort(ys, kind="stable")[:n_local]
    starts = space.transform([xs[i] for i in order])
    jitter = np.clip(starts[0] + rng.normal(0.0, 0.02, starts.shape[1]), bounds[:, 0], bounds[:, 1])
    for x0 in [*starts, jitter]:
        x, f, _ = fmin_l_bfgs_b(gaussian_acquisition_1D, x0, args=args, bounds=bounds, maxiter=LOCAL_MAXITER)
        x = np.clip(x, bounds[:, 0], bounds[:, 1])
        if f < best_f and np.min(np.abs(seen - x).sum(axis=1)) > 1e-8:
            best_x, best_f = x, float(f)
    return space.inverse_transform(best_x.reshape(1, -1))[0]
