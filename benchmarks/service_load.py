"""Service load: submission latency and end-to-end throughput of `crucible serve` under concurrent jobs.

One real service process (``python -m service.cli serve``) is started on a free loopback
port with a fresh sqlite job store, a fresh sqlite MLflow store, ``num_cpus: 2`` and one
token. Its trial function is :func:`noop` in this module (no work: it returns
``{"loss": x}``), so what is measured is the service itself: HTTP API, validation, job
store, MLflow logging of every job and trial, Ray dispatch and the job finish step.

For each level N (default 1, 10, 50) N client threads, released together by a barrier,
each submit one job (``--trials-per-job`` trials, ``parallel: 1``, random search over
``x`` in [0, 1]) through :class:`service.client.Client`; every ``submit`` call is timed.
Then the benchmark waits for all N jobs to end. Per level it reports submit latency p50
and p99, the wall time from the first submit to the last job's ``finished`` time (stored
by the server; client and server share one clock), and trials/s and jobs/s over that wall
time. The server is not restarted between levels; one small warm-up job runs first (not
counted) so that Ray's worker start and the MLflow schema creation are not billed to
level 1. After each level every job must have succeeded with exactly its trials, all
``ok`` (read back with ``client.job(id).trials()``); otherwise the run fails loudly.

Usage:
    python benchmarks/service_load.py [--levels 1,10,50] [--trials-per-job 4] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.client import Client

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "service-load-token-0123456789"
FUNCTION = "benchmarks.service_load:noop"
START_TIMEOUT = 120.0  # seconds for the server to answer /health
POLL = 0.25  # seconds between status polls while jobs run


def noop(config: dict[str, Any], report: Any = None) -> dict[str, float]:
    """The trial: no work at all, the loss is the sampled ``x``."""
    return {"loss": float(config["x"])}


@dataclass
class Level:
    """What one level measured."""

    jobs: int
    trials: int
    latencies_ms: list[float]
    wall_s: float
    first_trial_s: list[float]  # job created -> its first trial started
    finish_s: list[float]  # job's last trial finished -> job finished (plots, MLflow summary)

    @property
    def trials_per_s(self) -> float:
        return self.trials / self.wall_s

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linearly interpolated between ranks."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def job_spec(name: str, trials: int, seed: int) -> dict[str, Any]:
    """The spec of one load job: ``trials`` no-op trials, one at a time, random search."""
    return {
        "name": name,
        "strategy": "random",
        "objective": {"metric": "loss", "mode": "min", "function": FUNCTION},
        "budget": {"trials": trials, "parallel": 1},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "seed": seed,
    }


# ------------------------------------------------------------------ the server
class Server:
    """One `crucible serve` subprocess on loopback, with its config and stores in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        import yaml

        self.workdir = workdir
        self.log_path = workdir / "server.log"
        self.config_path = workdir / "server.yaml"
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    "host": "127.0.0.1",
                    "port": 0,  # the server picks a free port and prints it
                    "state_dir": str(workdir / "state"),
                    "store_url": f"sqlite:///{workdir / 'jobs.db'}",
                    "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
                    "num_cpus": 2,
                    "tokens": [{"token": TOKEN, "owner": "bench"}],
                    "allowed_modules": ["benchmarks.service_load"],
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        """Start the process and wait until ``/health`` answers."""
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": pythonpath}
        cmd = [sys.executable, "-m", "service.cli", "serve", "--config", str(self.config_path)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT), start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.url:
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server printed no address within {START_TIMEOUT:g} s; see {self.log_path}")
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("crucible: serving "):
                    self.url = line.split()[2]
                    break
            else:
                time.sleep(0.2)
        if not self.url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the server listens on {self.url}, not on loopback")
        client = self.client()
        while True:
            self._check_alive()
            try:
                client.health()
                return
            except Exception as err:  # noqa: BLE001 — Unreachable and friends: retry until the deadline
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.url}/health did not answer: {err}") from None
            time.sleep(0.2)

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log_path}")

    def client(self, timeout: float = 60.0) -> Client:
        """A client holding the benchmark's token."""
        from service.client import Client

        return Client(self.url, token=TOKEN, timeout=timeout)

    def tracebacks(self) -> int:
        """How many Python tracebacks the server has logged so far."""
        return self.log_path.read_text(errors="replace").count("Traceback (most recent call last)")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole process group (Ray's processes included) if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        try:  # whatever the server started in its session and left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# ------------------------------------------------------------------ one level
def wait_all(client: Client, ids: set[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll the job list until every job in ``ids`` has ended; their summaries by id."""
    deadline = time.monotonic() + timeout
    while True:
        summaries = {j.id: j.summary for j in client.jobs() if j.id in ids}
        ended = {k: s for k, s in summaries.items() if s.get("state") in ("succeeded", "failed", "cancelled")}
        if len(ended) == len(ids):
            return ended
        if time.monotonic() > deadline:
            states: dict[str, int] = {}
            for s in summaries.values():
                states[str(s.get("state"))] = states.get(str(s.get("state")), 0) + 1
            raise TimeoutError(f"{len(ids) - len(ended)} of {len(ids)} jobs unfinished after {timeout:g} s: {states}")
        time.sleep(POLL)


def verify(server: Server, finals: dict[str, dict[str, Any]], trials: int) -> dict[str, list[dict[str, Any]]]:
    """Every job succeeded and holds exactly trials 0..trials-1, all ok; raise otherwise; the trials by job."""
    client = server.client()
    problems = []
    by_job: dict[str, list[dict[str, Any]]] = {}
    for job_id, summary in finals.items():
        if summary["state"] != "succeeded" or summary["counts"]["ok"] != trials:
            state, counts, error = summary["state"], summary["counts"], summary["error"]
            problems.append(f"{summary['name']} ({job_id}): {state}, {counts}, {error}")
            continue
        rows = by_job[job_id] = client.job(job_id).trials()
        ids = sorted(t["trial_id"] for t in rows)
        if ids != list(range(trials)) or any(t["status"] != "ok" for t in rows):
            problems.append(f"{summary['name']} ({job_id}): trials {ids}, statuses {[t['status'] for t in rows]}")
    if problems:
        shown = "\n  ".join(problems[:10])
        where = f"server log: {server.log_path}"
        raise RuntimeError(f"{len(problems)} of {len(finals)} jobs are wrong ({where}):\n  {shown}")
    return by_job


def run_level(server: Server, n: int, trials: int, tag: str, timeout: float) -> Level:
    """Submit ``n`` jobs from ``n`` threads at once, wait for all, verify them."""
    barrier = threading.Barrier(n)
    starts: list[float] = [math.nan] * n
    latencies: list[float] = [math.nan] * n
    ids: list[str] = [""] * n
    errors: list[str] = []

    def submitter(i: int) -> None:
        client = server.client()
        spec = job_spec(f"load-{tag}-{i}", trials, seed=i)
        try:
            barrier.wait(timeout=60)
            starts[i] = time.time()
            t0 = time.perf_counter()
            handle = client.submit(spec)
            latencies[i] = (time.perf_counter() - t0) * 1000.0
            ids[i] = handle.id
        except Exception as err:  # noqa: BLE001 — collected and raised below
            errors.append(f"job {i}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=submitter, args=(i,), name=f"submit-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if any(t.is_alive() for t in threads) or errors:
        raise RuntimeError(f"{len(errors)} of {n} submits failed: {errors[:5]}")
    finals = wait_all(server.client(), set(ids), timeout)
    by_job = verify(server, finals, trials)
    wall = max(s["finished"] for s in finals.values()) - min(starts)
    first = [min(t["started"] for t in by_job[k]) - s["created"] for k, s in finals.items()]
    finish = [s["finished"] - max(t["finished"] for t in by_job[k]) for k, s in finals.items()]
    return Level(n, n * trials, latencies, wall, first_trial_s=first, finish_s=finish)


# ------------------------------------------------------------------ report
def render(levels: list[Level], trials: int, tracebacks: int, load: float) -> str:
    """The markdown header and table."""
    import mlflow
    import ray

    header = (
        f"# Service load: concurrent jobs of {trials} no-op trials on `crucible serve`\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, Ray {ray.__version__}, MLflow {mlflow.__version__}, "
        f"1-minute load average {load:.2f} before the run. "
        f"One service process (local Ray, `num_cpus: 2`, sqlite job store, sqlite MLflow store) for all levels, "
        f'after one warm-up job. A trial is `benchmarks.service_load:noop` (returns `{{"loss": x}}`, no work); '
        f"each job is {trials} trials, `parallel: 1`, random search. N client threads submit N jobs at once; "
        f"wall = first submit to last job finished (MLflow parent and child runs, plots and job finish included). "
        "Diagnostics (server timestamps): *first trial* = job created to its first trial started, "
        "*finish step* = job's last trial finished to job finished (plots, MLflow summary and artifacts). "
        f"Server tracebacks logged during the run: {tracebacks}.\n\n"
    )
    table = (
        "| concurrent jobs | trials | submit p50 (ms) | submit p99 (ms) | wall (s) | trials/s | jobs/s "
        "| first trial p50 / max (s) | finish step p50 / max (s) |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    for lv in levels:
        table += (
            f"| {lv.jobs} | {lv.trials} | {percentile(lv.latencies_ms, 50):.0f} | "
            f"{percentile(lv.latencies_ms, 99):.0f} | {lv.wall_s:.1f} | {lv.trials_per_s:.1f} | {lv.jobs_per_s:.2f} "
            f"| {percentile(lv.first_trial_s, 50):.2f} / {max(lv.first_trial_s):.2f} "
            f"| {percentile(lv.finish_s, 50):.2f} / {max(lv.finish_s):.2f} |\n"
        )
    return header + table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,10,50", help="comma-separated numbers of concurrent jobs")
    parser.add_argument("--trials-per-job", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a level may take to finish")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "service_load.md"))
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",") if v.strip()]
    if not levels or min(levels) < 1 or args.trials_per_job < 1:
        parser.error(f"--levels and --trials-per-job must be positive, but got {args.levels!r}, {args.trials_per_job}")
    sys.path.insert(0, str(ROOT))

    load = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="service-load-"))
    server = Server(workdir)
    results: list[Level] = []
    ok = False
    try:
        t0 = time.monotonic()
        server.start()
        print(f"server up at {server.url} in {time.monotonic() - t0:.1f} s (log {server.log_path})", flush=True)
        t0 = time.monotonic()
        run_level(server, 1, 2, "warmup", args.timeout)
        print(f"warm-up job done in {time.monotonic() - t0:.1f} s", flush=True)
        for n in levels:
            level = run_level(server, n, args.trials_per_job, f"n{n}", args.timeout)
            results.append(level)
            print(
                f"N={n}: submit p50 {percentile(level.latencies_ms, 50):.0f} ms, "
                f"p99 {percentile(level.latencies_ms, 99):.0f} ms, wall {level.wall_s:.1f} s, "
                f"{level.trials_per_s:.1f} trials/s",
                flush=True,
            )
        tracebacks = server.tracebacks()
        ok = True
    finally:
        server.stop()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir} (server log {server.log_path})", file=sys.stderr)

    text = render(results, args.trials_per_job, tracebacks, load)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
