"""Scaling: the same fixed budget on one Ray node against two, through the whole deployment.

``deploy/local-cluster.sh`` starts the deployment on this machine: a Ray head (and, for the
two-node run, a second Ray node), each with 1 CPU, an ``mlflow server`` (sqlite backend) and
``crucible serve`` joined to the cluster. The job, submitted with ``service.Client``, is
``--trials`` trials of ``sleep(--sleep)`` (random search, ``budget.parallel`` 2, 1 CPU per trial,
every trial logged to the MLflow server over HTTP), so one node runs one trial at a time and
two nodes run two. Each cluster first runs a 2-trial warm-up job, so that the timed job finds
its worker actors started.

* wall: from the job's submission to its last trial's end (the service's records);
* ideal: trials * sleep / slots, slots = one per node;
* efficiency = ideal / wall; speedup = wall on 1 node / wall on 2 nodes;
* end to end: submission to the job's end, its MLflow summary (plots, trial table) included.

Usage:
    python benchmarks/scaling.py [--trials 40] [--sleep 0.5] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "local-cluster.sh"


def sleepy(config, report=None):
    """The trial: sleep, return the point as the loss (imported by the Ray workers)."""
    time.sleep(config["sleep"])
    return {"loss": float(config["x"])}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(name: str, trials: int, sleep: float) -> dict:
    return {
        "name": name,
        "strategy": "random",
        "objective": {"metric": "loss", "mode": "min", "function": "benchmarks.scaling:sleepy"},
        "budget": {"trials": trials, "parallel": 2},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "fixed": {"sleep": sleep},
        "resources": {"cpu": 1},
        "seed": 1,
    }


def run_cluster(nodes: int, trials: int, sleep: float, repeats: int) -> list[tuple[float, float]]:
    """Start the deployment with ``nodes`` Ray nodes; (wall, end-to-end) seconds per timed job."""
    sys.path.insert(0, str(ROOT))
    from service.client import Client

    workdir = Path(tempfile.mkdtemp(prefix="crc-bench-"))
    port = _free_port()
    env = {
        **os.environ,
        "CRUCIBLE_CLUSTER_DIR": str(workdir),
        "CRUCIBLE_NODES": str(nodes),
        "CRUCIBLE_RAY_PORT": str(_free_port()),
        "CRUCIBLE_MLFLOW_PORT": str(_free_port()),
        "CRUCIBLE_PORT": str(port),
        "CRUCIBLE_PYTHON": sys.executable,
        "CRUCIBLE_ALLOWED_MODULES": "benchmarks.scaling",
        "RAY_AUTH_MODE": "disabled",
    }
    out: list[tuple[float, float]] = []
    try:
        subprocess.run(["bash", str(SCRIPT), "up"], env=env, check=True, capture_output=True, timeout=300)
        client = Client(f"http://127.0.0.1:{port}", token=(workdir / "state" / "token").read_text().strip())
        client.submit(_spec("warm-up", 2, 0.01)).wait(timeout=300)
        for i in range(repeats):
            job = client.submit(_spec(f"scaling-{nodes}-{i}", trials, sleep))
            final = job.wait(timeout=60 + 10 * trials * sleep)
            assert final["state"] == "succeeded" and final["counts"]["ok"] == trials, final
            last = max(t["finished"] for t in job.trials())
            out.append((last - final["created"], final["finished"] - final["created"]))
            nodes_used = {t["node"] for t in job.trials()}
            print(f"{nodes} node(s), run {i + 1}: wall {out[-1][0]:.1f} s on {len(nodes_used)} node(s)", flush=True)
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=180)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=1, help="timed jobs per cluster (the median is reported)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling.md"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    rows = []
    for nodes in (1, 2):
        runs = run_cluster(nodes, args.trials, args.sleep, args.repeats)
        wall = statistics.median(r[0] for r in runs)
        e2e = statistics.median(r[1] for r in runs)
        rows.append((nodes, wall, e2e, args.trials * args.sleep / nodes))
    load_after = os.getloadavg()[0]

    import mlflow
    import ray

    base = rows[0][1]
    header = (
        f"# Scaling: {args.trials} trials of sleep({args.sleep}) on 1 Ray node against 2\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python benchmarks/scaling.py` on {platform.machine()}, "
        f"{os.cpu_count()} cores (load average {load_before:.1f} before, {load_after:.1f} after; the machine is "
        f"shared), Python {platform.python_version()}, Ray {ray.__version__}, MLflow {mlflow.__version__}.\n"
        "Each Ray node is a separate `ray start` process on loopback with 1 CPU (`deploy/local-cluster.sh`); "
        "the job goes through `crucible serve` with `budget.parallel` 2 and logs every trial to an "
        "`mlflow server` (sqlite) over HTTP. Wall = submission to the last trial's end; ideal = "
        "trials * sleep / nodes; efficiency = ideal / wall; end to end adds the job's MLflow summary "
        f"(plots, trial table). Median of {args.repeats} timed job(s) per cluster, after a warm-up job.\n\n"
    )
    table = "| Ray nodes | wall (s) | ideal (s) | efficiency | speedup | end to end (s) |\n"
    table += "|---:|---:|---:|---:|---:|---:|\n"
    table += "".join(
        f"| {n} | {wall:.1f} | {ideal:.1f} | {ideal / wall:.2f} | {base / wall:.2f} | {e2e:.1f} |\n"
        for n, wall, e2e, ideal in rows
    )
    print(header + table)
    Path(args.out).write_text(header + table)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
