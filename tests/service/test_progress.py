"""The progress bar: trials for most jobs, generations for NEAT (a real job on local Ray)."""

from __future__ import annotations

import re

from service.progress import ProgressReporter
from service.runner import run
from service.spec import JobSpec


def last_bar(err: str) -> str:
    return [line for line in re.split(r"[\r\n]", err) if "|" in line][-1]


def test_neat_job_bar_counts_generations_not_batches(ray_local, capfd):
    spec = JobSpec.from_dict({
        "name": "bar", "strategy": "neat", "task": "xor", "budget": {"trials": 4, "parallel": 2},
        "strategy_options": {"neat": {"pop_size": 20, "fitness_threshold": None}}, "seed": 2,
    })  # fmt: skip
    result = run(spec, progress=True, tracking=False)
    assert len(result.trials) == 8  # 2 batches per generation
    bar = last_bar(capfd.readouterr().err)
    assert "4/4" in bar and "generation" in bar and "species=" in bar, bar


def test_trial_bar_advances_per_trial(capfd):
    spec = JobSpec.from_dict({"name": "t", "strategy": "random", "objective": {"metric": "loss", "mode": "min",
                              "function": "trial_fns:quadratic"}, "budget": {"trials": 3},
                              "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}}})  # fmt: skip
    bar = ProgressReporter(spec)
    bar.on_job_start(spec)
    bar.on_round(0, {"best": 1.0, "species": 1})  # rounds do not move a trial bar
    assert bar.bar is not None and bar.bar.n == 0 and bar.bar.unit == "trial"
    bar.bar.close()
