"""The ``crucible`` command line: ``run | serve | submit | status | cancel | ui``.

``run`` runs a job embedded; ``serve`` starts the service; ``submit``, ``status`` and
``cancel`` talk to a running service (``--url``, default ``$CRUCIBLE_URL`` or
http://127.0.0.1:8080; token from ``--token``, ``$CRUCIBLE_TOKEN`` or ``~/.crucible/token``).

Example:
    $ crucible run examples/digits-bayes.yaml
    $ crucible serve &
    $ crucible submit examples/digits-bayes.yaml --wait
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from service.errors import CrucibleError, SpecError
from service.spec import JobSpec

DEFAULT_URL = "http://127.0.0.1:8080"


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
    serve = sub.add_parser("serve", help="run the Crucible service: HTTP API and job scheduler")
    serve.add_argument("--config", help="server config (YAML); default: built-in defaults")
    serve.add_argument("--host", help="override host")
    serve.add_argument("--port", type=int, help="override port")
    submit = sub.add_parser("submit", help="submit a job spec to a running service")
    submit.add_argument("spec", help="path to a job spec (YAML)")
    submit.add_argument("--wait", action="store_true", help="wait until the job ends")
    status = sub.add_parser("status", help="list jobs, or show one job and its trials")
    status.add_argument("job", nargs="?", help="job id (default: list all your jobs)")
    cancel = sub.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job", help="job id")
    for remote in (submit, status, cancel):
        remote.add_argument("--url", help="service URL (default: $CRUCIBLE_URL or http://127.0.0.1:8080)")
        remote.add_argument("--token", help="API token (default: $CRUCIBLE_TOKEN, else ~/.crucible/token)")
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
    if spec.strategy == "neat" and result.rounds:
        top = max(result.rounds, key=lambda r: r["best"])
        last = result.rounds[-1]
        print(
            f"NEAT: {len(result.rounds)} generations; best fitness {top['best']:.4f} (genome {top['best_key']}, "
            f"generation {top['generation']}); last generation: {last['species']} species, "
            f"{last['mean_nodes']:.1f} nodes and {last['mean_connections']:.1f} connections on average"
        )
    best = result.best
    if best is None:
        print("No trial succeeded.")
    else:
        rows = [(f"param {k}", _fmt(v)) for k, v in best.params.items()]
        metrics = [(k, v) for k, v in best.metrics.items() if not _PER_ITEM.search(k)]  # not fitness.<genome>
        rows += [(f"metric {k}", _fmt(v)) for k, v in metrics[:_MAX_METRIC_ROWS]]
        if len(metrics) > _MAX_METRIC_ROWS:
            rows.append(("metric ...", f"{len(metrics) - _MAX_METRIC_ROWS} more in MLflow"))
        width = max(len(r[0]) for r in rows)
        print(f"Best trial #{best.trial_id} ({spec.objective.mode} {spec.objective.metric} = {best.value:.4f})")
        print("-" * (width + 16))
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        print("-" * (width + 16))
    if result.run_id:
        print(f"MLflow parent run: {result.run_id}")
        print(f"Open the MLflow UI:  {ui_command(spec.tracking.uri)}")


_MAX_METRIC_ROWS = 24
_PER_ITEM = re.compile(r"\.\d+$")  # one value per item of a batch (a NEAT genome's fitness): in MLflow
_MAX_VALUE_CHARS = 60


def _fmt(value: Any) -> str:
    """A value for a table cell: floats to 6 digits, bulky values (genome lists, checkpoints) summarized."""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    if len(text) <= _MAX_VALUE_CHARS:
        return text
    if isinstance(value, list | tuple | dict):
        return f"<{type(value).__name__} of {len(value)} items>"
    return f"<{len(text)} characters>"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``crucible`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "ui":
        cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.tracking_uri, "--port", str(args.port)]
        print(" ".join(cmd))
        return subprocess.call(cmd)
    if args.command == "serve":
        return _serve(args)
    if args.command in _REMOTE:
        return _remote(args)
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


# ----------------------------------------------------------------- the service
def _serve(args: argparse.Namespace) -> int:
    from service.config import ConfigError, ServerConfig

    try:
        config = ServerConfig.from_yaml(args.config) if args.config else ServerConfig()
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        config = dataclasses.replace(config, **overrides) if overrides else config
    except ConfigError as err:
        print(f"crucible: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"crucible: cannot read config: {err}", file=sys.stderr)
        return 2
    from service.app import serve

    serve(config)
    return 0


def _remote(args: argparse.Namespace) -> int:
    from service.client import ApiError, Client, Unauthorized

    try:
        client = Client(args.url or os.environ.get("CRUCIBLE_URL") or DEFAULT_URL, token=_token(args.token))
        return _REMOTE[args.command](client, args)
    except (SpecError, Unauthorized) as err:
        print(f"crucible: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"crucible: cannot read spec: {err}", file=sys.stderr)
        return 2
    except (ApiError, CrucibleError, TimeoutError) as err:
        print(f"crucible: {err}", file=sys.stderr)
        return 1


def _token(given: str | None) -> str | None:
    """``--token``, else ``$CRUCIBLE_TOKEN``, else the local service's generated token file."""
    if given:
        return given
    if os.environ.get("CRUCIBLE_TOKEN"):
        return os.environ["CRUCIBLE_TOKEN"]
    from service.config import DEFAULT_STATE_DIR, TOKEN_FILE

    try:
        return (Path(DEFAULT_STATE_DIR).expanduser() / TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _submit(client: Any, args: argparse.Namespace) -> int:
    job = client.submit(args.spec)
    print(f"submitted job {job.id} ({job.summary.get('name')!r}): {job.summary.get('state')}")
    if not args.wait:
        return 0
    try:
        summary = job.wait()
    except KeyboardInterrupt:
        print(f"crucible: stopped waiting; the job goes on (crucible cancel {job.id})", file=sys.stderr)
        return 130
    _print_job(summary, [])
    return 0 if summary.get("state") == "succeeded" else 1


def _status(client: Any, args: argparse.Namespace) -> int:
    if args.job is None:
        rows = [_job_row(job.summary) for job in client.jobs()]
        if rows:
            _table(["ID", "NAME", "STATE", "TRIALS ok/failed/pruned/running", "BEST"], rows)
        else:
            print("no jobs")
        return 0
    detail = client.job(args.job).detail()
    _print_job(detail, detail.get("trials") or [])
    return 0


def _cancel(client: Any, args: argparse.Namespace) -> int:
    from service.client import JobHandle

    s = JobHandle(client, args.job).cancel()
    state = s.get("state")
    what = {"cancelled": "cancelled", "succeeded": "already succeeded", "failed": "already failed"}
    print(f"job {s.get('id')} ({s.get('name')!r}): {what.get(state, f'cancel requested (state {state})')}")
    return 0


_REMOTE = {"submit": _submit, "status": _status, "cancel": _cancel}


def _job_row(s: dict[str, Any]) -> list[str]:
    c = s.get("counts") or {}
    trials = (
        f"{c.get('ok', 0)}/{c.get('failed', 0)}/{c.get('pruned', 0)}/{c.get('running', 0)} of {c.get('budget', '?')}"
    )
    best = s.get("best") or {}
    return [str(s.get("id")), str(s.get("name")), str(s.get("state")), trials, _fmt(best.get("value", "-"))]


def _print_job(s: dict[str, Any], trials: list[dict[str, Any]]) -> None:
    best = s.get("best")
    rows = [
        ("job", f"{s.get('id')} ({s.get('name')!r}, owner {s.get('owner')})"),
        ("state", str(s.get("state")) + (f" ({s['stop_reason']})" if s.get("stop_reason") else "")),
        ("search", f"{s.get('strategy')}, {s.get('mode')} {s.get('metric')}"),
        ("trials", _job_row(s)[3]),
        ("best", "-" if not best else f"#{best.get('trial_id')} = {_fmt(best.get('value'))}  {_params(best)}"),
        ("created", _when(s.get("created"))),
        ("finished", _when(s.get("finished"))),
        ("mlflow", f"run {s.get('mlflow_run_id') or '-'} on {s.get('tracking_uri')}"),
    ]
    if s.get("error"):
        rows.append(("error", str(s["error"])))
    for key, value in rows:
        print(f"{key:<9} {value}")
    if trials:
        print()
        header = ["TRIAL", "STATUS", "VALUE", "ATTEMPTS", "DEVICE", "SECONDS", "PARAMS / REASON"]
        _table(header, [_trial_row(t) for t in trials])


def _trial_row(t: dict[str, Any]) -> list[str]:
    start, end = t.get("started"), t.get("finished")
    secs = f"{end - start:.1f}" if isinstance(start, int | float) and isinstance(end, int | float) else "-"
    tail = _params(t) + (f"  [{t['reason']}]" if t.get("reason") else "")
    value = "-" if t.get("value") is None else _fmt(t["value"])
    device = f"{t.get('device') or '-'}@{t.get('node') or '-'}"
    return [str(t.get("trial_id")), str(t.get("status")), value, str(t.get("attempts", 1)), device, secs, tail]


def _params(t: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in (t.get("params") or {}).items())


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if isinstance(ts, int | float) else "-"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
