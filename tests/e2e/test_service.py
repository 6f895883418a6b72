"""The service end to end: `crucible serve` as a real process on a loopback port, a real local
Ray inside it, real sqlite stores, and `service.Client` over HTTP. Restarts kill it by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from support import free_port, wait_http

from service.client import Client

ROOT = Path(__file__).resolve().parents[2]
FNS = ROOT / "tests" / "service"
TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789", "admin": "admin-token-0123456789"}

pytestmark = pytest.mark.slow


class Service:
    """One `crucible serve` process and the files it keeps; restartable on the same port."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.port = tmp, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mlflow_uri = f"sqlite:///{tmp / 'mlflow.db'}"
        self.config = tmp / "server.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "host": "127.0.0.1",
                    "port": self.port,
                    "state_dir": str(tmp / "state"),
                    "store_url": f"sqlite:///{tmp / 'jobs.db'}",
                    "tracking_uri": self.mlflow_uri,
                    "num_cpus": 2,
                    "tokens": [
                        {"token": TOKENS["alice"], "owner": "alice"},
                        {"token": TOKENS["bob"], "owner": "bob"},
                        {"token": TOKENS["admin"], "owner": "admin", "admin": True},
                    ],
                    "allowed_modules": ["trial_fns"],
                }
            )
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(FNS)])}
        log = open(self.tmp / "server.log", "ab")  # noqa: SIM115 — closed with the process
        cmd = [sys.executable, "-m", "service.cli", "serve", "--config", str(self.config)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        wait_http(f"{self.url}/health", timeout=120, proc=self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def client(self, who: str = "alice") -> Client:
        return Client(self.url, token=TOKENS[who])


@pytest.fixture
def service(tmp_path):
    svc = Service(tmp_path)
    svc.start()
    yield svc
    svc.stop()


def job_spec(fn="quadratic", trials=4, parallel=2, name="svc", strategy="random", **fixed):
    return {
        "name": name,
        "strategy": strategy,
        "objective": {"metric": "loss", "mode": "min", "function": f"trial_fns:{fn}"},
        "budget": {"trials": trials, "parallel": parallel},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "fixed": {"epochs": 1, **fixed},
        "seed": 5,
    }


def mlflow_children(uri, run_id):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000
    )
    return parent, runs


def test_submit_wait_and_read_back_through_the_client(service):
    alice = service.client("alice")
    job = alice.submit(job_spec(trials=4))
    final = job.wait(timeout=120)
    assert final["state"] == "succeeded" and final["counts"]["ok"] == 4
    trials = job.trials()
    assert sorted(t["trial_id"] for t in trials) == [0, 1, 2, 3]
    assert job.best()["value"] == min(t["value"] for t in trials)
    parent, children = mlflow_children(service.mlflow_uri, final["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert [j.id for j in service.client("bob").jobs()] == []  # bob sees none of alice's jobs
    assert job.id in [j.id for j in service.client("admin").jobs()]


def test_sigkill_the_service_mid_job_and_restart(service):
    alice = service.client("alice")
    job = alice.submit(job_spec("sleepy", trials=10, parallel=2, strategy="bayes", sleep=1.0, epochs=2))
    doomed = alice.submit(job_spec("forever", trials=2, parallel=1, name="doomed"))
    deadline = time.time() + 120
    while time.time() < deadline:
        trials = job.trials()
        if sum(t["status"] == "ok" for t in trials) >= 3 and any(t["status"] == "running" for t in trials):
            break
        time.sleep(0.2)
    doomed.cancel()
    before = {t["trial_id"]: t for t in job.trials()}
    service.kill()  # SIGKILL by PID: no shutdown code runs
    service.start()
    final = job.wait(timeout=240)
    after = {t["trial_id"]: t for t in job.trials()}
    assert final["state"] == "succeeded" and sorted(after) == list(range(10))
    for k, t in before.items():
        if t["status"] != "running":  # finished before the kill: not run again
            assert (after[k]["finished"], after[k]["attempts"]) == (t["finished"], 1)
    assert any(t["status"] == "running" for t in before.values())
    assert all(after[k]["attempts"] == 2 for k, t in before.items() if t["status"] == "running")
    _, children = mlflow_children(service.mlflow_uri, final["mlflow_run_id"])
    assert sorted(int(r.data.tags["crucible.trial_id"]) for r in children) == list(range(10))
    assert doomed.wait(timeout=60)["state"] == "cancelled"  # the cancel outlived the crash


def test_fifty_jobs_from_several_threads(service):
    n_threads, per_thread, trials = 5, 10, 2
    handles, errors = [], []

    def submitter(i):
        client = service.client("alice" if i % 2 else "bob")
        try:
            for k in range(per_thread):
                handles.append(client.submit(job_spec(trials=trials, parallel=1, name=f"load-{i}-{k}")))
        except Exception as err:  # noqa: BLE001 — reported below
            errors.append(err)

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(handles) == n_threads * per_thread
    finals = [h.wait(timeout=600) for h in handles]
    bad = [f for f in finals if f["state"] != "succeeded" or f["counts"]["ok"] != trials]
    assert not bad, f"{len(bad)} jobs did not succeed, e.g. {bad[0]}"
    admin = service.client("admin")
    assert len(admin.jobs()) == 50
    for f in finals:
        assert sorted(t["trial_id"] for t in admin.job(f["id"]).trials()) == list(range(trials))
        _, children = mlflow_children(service.mlflow_uri, f["mlflow_run_id"])
        assert sorted(int(r.data.tags["crucible.trial_id"]) for r in children) == list(range(trials))
