"""Faults the service survives, with real processes: a worker killed by PID, the MLflow server away."""

from __future__ import annotations

import os
import signal
import time

import pytest
from support import free_port, start_mlflow_server
from test_scheduler import spec_dict

from service.scheduler import Scheduler
from service.spec import JobSpec


@pytest.fixture
def sched_factory(ray_local, tmp_path):
    made = []

    def make(**kwargs):
        s = Scheduler(f"sqlite:///{tmp_path / 'jobs.db'}", **kwargs)
        s.start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.shutdown()


def test_worker_killed_by_pid_mid_trial_is_retried(sched_factory, tmp_path):
    sched = sched_factory(tracking=False)
    spec = spec_dict("pid_then_sleep", trials=1, fixed={"pid_dir": str(tmp_path), "sleep": 5.0})
    job = sched.submit(JobSpec.from_dict(spec), "a")
    deadline = time.time() + 60
    while not list(tmp_path.glob("0.*")) and time.time() < deadline:
        time.sleep(0.1)
    (pid_file,) = list(tmp_path.glob("0.*"))
    time.sleep(0.5)
    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    done = sched.wait(job["id"], timeout=60)
    trial = sched.get_job(job["id"])["trials"][0]
    assert done["state"] == "succeeded" and trial["status"] == "ok" and trial["attempts"] == 2
    pids = pid_file.read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1], "the retry ran on a fresh worker process"


@pytest.mark.slow
def test_mlflow_server_away_for_a_while_loses_nothing(sched_factory, tmp_path, capfd):
    from mlflow.tracking import MlflowClient

    port = free_port()
    backend = f"sqlite:///{tmp_path / 'mlflow-server.db'}"
    server = start_mlflow_server(backend, port, tmp_path)
    uri = f"http://127.0.0.1:{port}"
    sched = sched_factory()
    try:
        spec = spec_dict("sleepy", trials=10, parallel=2, fixed={"sleep": 0.6}, tracking={"uri": uri})
        job = sched.submit(JobSpec.from_dict(spec), "a")
        while sched.get_job(job["id"])["counts"]["ok"] < 2:
            time.sleep(0.1)
        server.terminate()
        server.wait(timeout=30)
        down_at = sched.get_job(job["id"])["counts"]["ok"]
        time.sleep(4.0)
        during = sched.get_job(job["id"])["counts"]["ok"]
        assert during > down_at, "the job keeps running while the tracking server is away"
        server = start_mlflow_server(backend, port, tmp_path)
        done = sched.wait(job["id"], timeout=180)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert done["state"] == "succeeded"
    assert "MLflow store not answering" in capfd.readouterr().err
    client = MlflowClient(tracking_uri=backend)  # read back what reached the server, from its store
    parent = client.get_run(done["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(int(r.data.tags["crucible.trial_id"]) for r in children) == list(range(10))
    for run in children:
        assert run.info.status == "FINISHED" and "loss" in run.data.metrics and "x" in run.data.params
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert steps.count(1) == 1 and steps.count(2) == 1, "each epoch logged once"
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_ok"] == 10
