"""Random search: every trial is an independent draw from the space.

The baseline every model-based strategy must beat. It owns a ``random.Random(seed)``;
its full state (Mersenne Twister words included, packed: ``search._rng``) goes into :meth:`RandomStrategy.state`,
so a restored search draws exactly the points the original would have drawn.
"""

from __future__ import annotations

import random
from typing import Any

from search._rng import dump_rng, load_rng
from search._trials import TrialStrategy
from search.base import SearchConfig
from search.space import sample


class RandomStrategy(TrialStrategy):
    """Seeded random search.

    Each ``ask`` draws points uniformly (log-uniformly for ``log`` dimensions) with the
    strategy's own RNG; results never influence later points. Takes no options.

    Args:
        config: Space, mode, budget, seed and pruner; ``options`` must be empty.

    Example:
        >>> from search.base import Result, SearchConfig
        >>> from search.space import Float
        >>> s = RandomStrategy(SearchConfig(space={"x": Float(-1.0, 1.0)}, n_trials=2, seed=0))
        >>> for p in s.ask(2):
        ...     s.tell(Result(p.trial_id, p.params, value=p.params["x"] ** 2))
        >>> s.done(), s.best().trial_id
        (True, 1)
    """

    name = "random"

    def __init__(self, config: SearchConfig) -> None:
        super().__init__(config)
        if config.options:
            raise ValueError(f"`options` must be empty for random search, but got {config.options!r}.")
        self._rng = random.Random(config.seed)

    def _propose(self, trial_id: int) -> dict[str, Any]:
        return sample(self._config.space, self._rng)

    def _redraw(self, trial_id: int, attempt: int) -> dict[str, Any]:
        return sample(self._config.space, self._rng)

    def _extra_state(self) -> dict[str, Any]:
        return {"rng": dump_rng(self._rng)}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        load_rng(self._rng, state["rng"])
