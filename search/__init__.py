"""How the next work is chosen: strategies, search spaces and pruners (no Ray, no MLflow, no I/O).

Importing this package is cheap: scikit-optimize (and NumPy) load only when a Bayesian
strategy first proposes a point.

Example:
    >>> from search import make_strategy
    >>> from search.base import SearchConfig
    >>> from search.space import Float
    >>> strategy = make_strategy("random", SearchConfig(space={"lr": Float(1e-4, 1e-1, log=True)}))
    >>> [p.trial_id for p in strategy.ask(3)]
    [0, 1, 2]
"""

from __future__ import annotations

from search.anneal import AnnealStrategy
from search.base import SearchConfig, Strategy
from search.bayes import BayesStrategy
from search.neat import NeatStrategy
from search.random import RandomStrategy

STRATEGIES: dict[str, type] = {
    "anneal": AnnealStrategy,
    "bayes": BayesStrategy,
    "neat": NeatStrategy,
    "random": RandomStrategy,
}


def make_strategy(name: str, config: SearchConfig) -> Strategy:
    """Build the strategy registered under ``name``.

    Args:
        name: A key of :data:`STRATEGIES` (``"anneal"``, ``"bayes"``, ``"random"``).
        config: Space, mode, budget, seed, pruner and options.

    Raises:
        ValueError: For an unknown ``name`` (the message lists the allowed ones), or a bad config.
    """
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ValueError(f"`name` must be one of {sorted(STRATEGIES)}, but got name={name!r}.")
    return cls(config)


def restore_strategy(name: str, config: SearchConfig, state: dict) -> Strategy:
    """Rebuild the strategy ``name`` from its :meth:`~search.base.Strategy.state`.

    Raises:
        ValueError: For an unknown ``name`` or a state that belongs to another strategy.
    """
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ValueError(f"`name` must be one of {sorted(STRATEGIES)}, but got name={name!r}.")
    return cls.restore(config, state)


__all__ = [
    "STRATEGIES",
    "AnnealStrategy",
    "BayesStrategy",
    "NeatStrategy",
    "RandomStrategy",
    "make_strategy",
    "restore_strategy",
]
