"""Scheduling overhead: Crucible against Ray Tune on the same trivial work, in one run.

200 trials whose work is ``sleep(0.2)`` on 2 parallel slots (1 CPU each), random search,
MLflow logging to a sqlite store (each system gets its own fresh store, created before its
timer starts, so that the one-off schema migration is not counted for either).
Scheduling efficiency = ideal time / wall time, ideal = trials * 0.2 s / 2 slots.

Ray Tune runs with ``reuse_actors=True`` and ``MLflowLoggerCallback``; it is also run
without MLflow logging for reference. Crucible runs with its MLflow reporter on.

Usage:
    python benchmarks/overhead.py [--trials 200] [--sleep 0.2] [--parallel 2] [--skip-tune]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

SLEEP = 0.2


def sleepy(config, report=None):
    """The trial: sleep, return a random loss."""
    time.sleep(config.get("sleep", SLEEP))
    return {"loss": float(config["x"])}


def _tune_trainable(config):
    from ray import tune

    time.sleep(config["sleep"])
    tune.report({"loss": float(config["x"])})


def _init_store(uri: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema


def run_crucible(trials: int, parallel: int, sleep: float, uri: str) -> float:
    from service.runner import JobRunner
    from service.spec import JobSpec
    from service.tracking import MlflowReporter

    spec = JobSpec.from_dict(
        {
            "name": "overhead-crucible",
            "strategy": "random",
            "objective": {"metric": "loss", "mode": "min", "function": "benchmarks.overhead:sleepy"},
            "budget": {"trials": trials, "parallel": parallel},
            "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "fixed": {"sleep": sleep},
            "resources": {"cpu": 1},
            "tracking": {"uri": uri},
        }
    )
    _init_store(uri)
    t0 = time.perf_counter()
    result = JobRunner(spec, [MlflowReporter(spec)]).run()
    wall = time.perf_counter() - t0
    assert len(result.trials) == trials and result.best is not None
    return wall


def run_tune(trials: int, parallel: int, sleep: float, uri: str | None) -> float:
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    callbacks = []
    if uri is not None:
        _init_store(uri)
        callbacks.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name="overhead-tune", save_artifact=False))
    storage = tempfile.mkdtemp(prefix="tune-")
    tuner = tune.Tuner(
        tune.with_resources(_tune_trainable, {"cpu": 1}),
        param_space={"x": tune.uniform(0.0, 1.0), "sleep": sleep},
        tune_config=tune.TuneConfig(
            num_samples=trials, max_concurrent_trials=parallel, reuse_actors=True, metric="loss", mode="min"
        ),
        run_config=tune.RunConfig(storage_path=storage, callbacks=callbacks, verbose=0),
    )
    t0 = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - t0
    assert len(results) == trials
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=SLEEP)
    parser.add_argument("--skip-tune", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "overhead.md"))
    args = parser.parse_args()
    random.seed(0)

    import ray

    os.environ["PYTHONPATH"] = str(ROOT)
    ray.init(num_cpus=args.parallel, include_dashboard=False, log_to_driver=False)
    ideal = args.trials * args.sleep / args.parallel
    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    rows = []
    if not args.skip_tune:  # Tune first: Crucible switches its sqlite stores to WAL once it runs
        rows.append(("Ray Tune (MLflow off)", run_tune(args.trials, args.parallel, args.sleep, None)))
        tune_uri = f"sqlite:///{tmp / 'tune.db'}"
        rows.append(("Ray Tune (MLflow on)", run_tune(args.trials, args.parallel, args.sleep, tune_uri)))
    crucible_uri = f"sqlite:///{tmp / 'crucible.db'}"
    rows.append(("Crucible (MLflow on)", run_crucible(args.trials, args.parallel, args.sleep, crucible_uri)))
    ray.shutdown()

    import mlflow

    header = (
        f"# Scheduling overhead: {args.trials} trials of sleep({args.sleep}) on {args.parallel} slots\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, Ray {ray.__version__}, "
        f"MLflow {mlflow.__version__}. Ideal wall time {ideal:.1f} s. "
        "Efficiency = ideal / wall (higher is better; goal for Crucible >= 0.90 with MLflow on).\n\n"
    )
    table = "| system | wall (s) | efficiency |\n|---|---:|---:|\n"
    table += "".join(f"| {name} | {wall:.1f} | {ideal / wall:.2f} |\n" for name, wall in rows)
    print(header + table)
    Path(args.out).write_text(header + table)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
