"""Helpers shared by tests (import as ``from support import ...``): ports, HTTP waits, an MLflow server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200 (or fail with the process's exit)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start_mlflow_server(backend_uri: str, port: int, workdir: Path) -> subprocess.Popen:
    """A real ``mlflow server`` on loopback (artifacts served from ``workdir/artifacts``)."""
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(workdir / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = open(workdir / f"mlflow-server-{port}.log", "ab")  # noqa: SIM115 — closed with the process
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: starts faster
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir), env=env)
    wait_http(f"http://127.0.0.1:{port}/health", timeout=90, proc=proc)
    return proc


SCHED_PROC = Path(__file__).parent / "service" / "sched_proc.py"


def start_scheduler_process(
    store_url: str, spec: dict | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """``tests/service/sched_proc.py`` — a scheduler on its own 2-CPU Ray — in its own process, with
    ``spec`` submitted: the process and the job id (``""`` without a spec)."""
    import json

    root, here = SCHED_PROC.parents[2], SCHED_PROC.parent
    args = [sys.executable, str(SCHED_PROC), store_url] + ([json.dumps(spec)] if spec else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(here)]), **(env or {})}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env, cwd=str(root))
    line = proc.stdout.readline().split()
    assert line and line[0] == "ready", line
    return proc, line[1] if len(line) > 1 else ""


def sigkill_when(proc: subprocess.Popen, store_url: str, job_id: str, ready, timeout: float = 120.0) -> dict[int, dict]:
    """SIGKILL the scheduler process once ``ready(trial rows)`` holds (or at the timeout); the rows then, by id."""
    import signal

    from service.scheduler import Scheduler

    probe = Scheduler(store_url, tracking=False)  # a read-only look at the store
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and not ready(probe.store.trials(job_id)):
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return {t["trial_id"]: t for t in probe.store.trials(job_id)}
    finally:
        probe.store.close()
        if proc.poll() is None:
            proc.kill()


def resume_and_wait(store_url: str, job_id: str, timeout: float) -> tuple[dict, dict[int, dict]]:
    """Restart the service (a Scheduler in this process) on the store; wait for the job: its row, trials by id."""
    from service.scheduler import Scheduler

    sched = Scheduler(store_url)
    sched.start()
    try:
        done = sched.wait(job_id, timeout=timeout)
        return done, {t["trial_id"]: t for t in sched.get_job(job_id)["trials"]}
    finally:
        sched.shutdown()
