"""A progress bar on stderr: trials done, running, failed, best so far (NEAT: generations)."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from search.base import Status
from service import families
from service.events import JobResult, ModelBlob, Reporter, TrialRecord


class ProgressReporter(Reporter):
    """Shows one tqdm bar per job, updated as trials start and end.

    A NEAT job's budget counts generations, each made of ``budget.parallel`` batches: its
    bar advances once per generation and shows that generation's best fitness and species.
    """

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.rounds = families.rounds_budget(spec)
        self.per_round = self.rounds is not None
        self.last_round: dict[str, Any] | None = None
        self.running = 0
        self.failed = 0
        self.pruned = 0
        self.best: float | None = None
        self.bar: tqdm | None = None

    def on_job_start(self, spec: Any) -> None:
        """Open the bar."""
        if self.per_round:
            self.bar = tqdm(total=self.rounds, desc=spec.name, unit="generation", dynamic_ncols=True)
        else:
            self.bar = tqdm(total=spec.budget.trials, desc=spec.name, unit="trial", dynamic_ncols=True)

    def on_trial_start(self, record: TrialRecord) -> None:
        """Count a running trial."""
        self.running += 1
        self._refresh()

    def on_trial_end(self, record: TrialRecord, best: TrialRecord | None) -> None:
        """Advance the bar."""
        self.running -= 1
        self.failed += record.status is Status.FAILED
        self.pruned += record.status is Status.PRUNED
        self.best = best.value if best is not None else None
        if self.bar is not None and not self.per_round:
            self.bar.update(1)
        self._refresh()

    def on_round(self, index: int, stats: dict[str, Any]) -> None:
        """A NEAT generation ended: advance the bar."""
        if self.per_round and self.bar is not None:
            self.last_round = stats
            self.bar.update(1)
            self._refresh()

    def on_job_end(self, result: JobResult, best_model: ModelBlob | None) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()

    def _refresh(self) -> None:
        if self.bar is None:
            return
        best = "-" if self.best is None else f"{self.best:.4g}"
        if self.per_round:
            last = self.last_round
            generation = "-" if last is None else f"{last['best']:.4g} species={last['species']}"
            self.bar.set_postfix_str(
                f"best fitness={best} last generation={generation} batches running={self.running} failed={self.failed}",
                refresh=True,
            )
            return
        self.bar.set_postfix_str(
            f"running={self.running} failed={self.failed} pruned={self.pruned} "
            f"best {self.spec.objective.metric}={best}",
            refresh=True,
        )
