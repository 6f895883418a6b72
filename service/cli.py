"""The ``crucible`` command line: ``crucible run SPEC`` and ``crucible ui``.

Example:
    $ crucible run examples/digits-bayes.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from typing import Any

from service.errors import SpecError
from service.spec import JobSpec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crucible", description="Distributed hyperparameter search on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job embedded: local Ray, local MLflow store")
    run.add_argument("spec", help="path to a job spec (YAML)")
    run.add_argument("--trials", type=int, help="override budget.trials")
    run.add_argument("--parallel", type=int, help="override budget.parallel")
    run.add_argument("--tracking-uri", help="override tracking.uri (MLflow)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    ui = sub.add_parser("ui", help="open the MLflow UI on a tracking store")
    ui.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    ui.add_argument("--port", type=int, default=5000)
    return parser


def _load(args: argparse.Namespace) -> JobSpec:
    spec = JobSpec.from_yaml(args.spec)
    budget: dict[str, Any] = {}
    if args.trials is not None:
        budget["trials"] = args.trials
    if args.parallel is not None:
        budget["parallel"] = args.parallel
    changes: dict[str, Any] = {}
    if budget:
        changes["budget"] = dataclasses.replace(spec.budget, **budget)
    if args.tracking_uri:
        changes["tracking"] = dataclasses.replace(spec.tracking, uri=args.tracking_uri)
    return dataclasses.replace(spec, **changes) if changes else spec


def _print_summary(spec: JobSpec, result: Any) -> None:
    from search.base import Status
    from service.tracking import ui_command

    print()
    print(
        f"Job {spec.name!r}: {len(result.trials)} trials in {result.wall_seconds:.1f} s "
        f"({result.count(Status.OK)} ok, {result.count(Status.PRUNED)} pruned, "
        f"{result.count(Status.FAILED)} failed); stopped by: {result.stop_reason}"
    )
    best = result.best
    if best is None:
        print("No trial succeeded.")
    else:
        rows = [(f"param {k}", _fmt(v)) for k, v in best.params.items()]
        rows += [(f"metric {k}", _fmt(v)) for k, v in best.metrics.items()]
        width = max(len(r[0]) for r in rows)
        print(f"Best trial #{best.trial_id} ({spec.objective.mode} {spec.objective.metric} = {best.value:.4f})")
        print("-" * (width + 16))
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        print("-" * (width + 16))
    if result.run_id:
        print(f"MLflow parent run: {result.run_id}")
        print(f"Open the MLflow UI:  {ui_command(spec.tracking.uri)}")


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``crucible`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "ui":
        cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.tracking_uri, "--port", str(args.port)]
        print(" ".join(cmd))
        return subprocess.call(cmd)
    try:
        spec = _load(args)
    except SpecError as err:
        print(f"crucible: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"crucible: cannot read spec: {err}", file=sys.stderr)
        return 2
    from service.runner import run

    result = run(spec, progress=not args.no_progress)
    _print_summary(spec, result)
    return 0 if result.best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
