"""A two-node Ray cluster on one machine, driven end to end through `deploy/local-cluster.sh`.

The script starts a Ray head and a second Ray node as separate processes (different custom
resources), an `mlflow server` process (PostgreSQL backend when CRUCIBLE_TEST_POSTGRES_URL is
set, else sqlite) and `crucible serve` joined to the cluster. Jobs go in through
`service.Client`. The second node is then SIGKILLed mid-job (`local-cluster.sh kill-node2`).
`local-cluster.sh down` always runs: it stops only the process groups the script started (by
PID files), never `ray stop`, so the session's own local Ray is untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support import free_port

from service.client import Client

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local-cluster.sh"
PG_URL = os.environ.get("CRUCIBLE_TEST_POSTGRES_URL")
FNS = ROOT / "tests" / "service"

pytestmark = pytest.mark.slow
heavy = pytest.mark.skipif(
    not os.environ.get("CRUCIBLE_E2E_HEAVY"), reason="a heavier cluster variant: run `make e2e` (CRUCIBLE_E2E_HEAVY=1)"
)


@dataclass
class Cluster:
    """What `local-cluster.sh up` started, and how to reach it."""

    dir: Path
    env: dict[str, str]
    url: str
    mlflow_url: str
    backend: str

    def script(self, verb: str, timeout: float = 180) -> str:
        out = subprocess.run(["bash", str(SCRIPT), verb], env=self.env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0 and verb != "status":
            raise RuntimeError(f"local-cluster.sh {verb} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def node_ids(self) -> dict[str, str]:
        """Running Ray nodes -> the 8-character id that `crucible.node` tags carry."""
        found = re.findall(r"^(ray-\S+)\s+running \(PID \d+, node id ([0-9a-f]+)\)", self.script("status"), re.M)
        return {name: node_id[:8] for name, node_id in found}

    def client(self) -> Client:
        return Client(self.url, token=(self.dir / "state" / "token").read_text().strip())

    def logs(self) -> str:
        parts = []
        for log in sorted((self.dir / "logs").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-40:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)


@contextlib.contextmanager
def local_cluster(request, **settings: str) -> Iterator[Cluster]:
    """The whole deployment on loopback, `down` afterwards whatever happened; ``settings`` add env vars."""
    # Short on purpose: Ray's socket paths live under it and must stay below 108 characters.
    workdir = Path(tempfile.mkdtemp(prefix="crc-"))
    backend = request.getfixturevalue("pg_database") if PG_URL else ""
    ports = {"CRUCIBLE_RAY_PORT": free_port(), "CRUCIBLE_MLFLOW_PORT": free_port(), "CRUCIBLE_PORT": free_port()}
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "CRUCIBLE_CLUSTER_DIR": str(workdir),
        "CRUCIBLE_PYTHON": sys.executable,
        "CRUCIBLE_ALLOWED_MODULES": "trial_fns",
        "CRUCIBLE_STOP_GRACE": "8",
        "PYTHONPATH": os.pathsep.join([str(FNS), *filter(None, [os.environ.get("PYTHONPATH")])]),  # root goes first
        "RAY_AUTH_MODE": "disabled",
        **settings,
    }
    if backend:  # one PostgreSQL database for the MLflow server and the job store, as on a cluster
        env.update(CRUCIBLE_PG_URL=backend, CRUCIBLE_STORE_URL=backend)
    c = Cluster(
        dir=workdir,
        env=env,
        url=f"http://127.0.0.1:{ports['CRUCIBLE_PORT']}",
        mlflow_url=f"http://127.0.0.1:{ports['CRUCIBLE_MLFLOW_PORT']}",
        backend=backend or f"sqlite:///{workdir / 'mlflow.db'}",
    )
    try:
        c.script("up")
        yield c
    finally:
        print(c.logs(), file=sys.stderr)  # shown when the test fails
        c.script("down", timeout=120)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def cluster(request) -> Iterator[Cluster]:
    with local_cluster(request) as c:
        yield c


def job_spec(name: str, trials: int, sleep: float) -> dict:
    return {
        "name": name,
        "strategy": "random",
        "objective": {"metric": "loss", "mode": "min", "function": "trial_fns:sleepy"},
        "budget": {"trials": trials, "parallel": 2, "trial_retries": 1},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "fixed": {"sleep": sleep, "epochs": 2},
        "seed": 11,
    }


def mlflow_children(uri: str, run_id: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through the server, over HTTP"
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000
    )


def test_two_nodes_mlflow_server_and_losing_a_node_mid_job(cluster):
    nodes = cluster.node_ids()
    assert set(nodes) == {"ray-head", "ray-node2"} and nodes["ray-head"] != nodes["ray-node2"], nodes
    client = cluster.client()

    # 1. Trials run on both nodes; everything reaches the MLflow server over HTTP.
    job = client.submit(job_spec("two-nodes", trials=6, sleep=0.4))
    final = job.wait(timeout=120)
    assert final["state"] == "succeeded" and final["counts"]["ok"] == 6, final
    children = mlflow_children(cluster.mlflow_url, final["mlflow_run_id"])
    assert sorted(int(r.data.tags["crucible.trial_id"]) for r in children) == list(range(6))
    used = {r.data.tags["crucible.node"].split("/")[-1] for r in children}
    assert used == set(nodes.values()), f"trials ran on {used}, cluster nodes {nodes}"
    assert all(len(r.data.metrics) > 0 for r in children)
    artifacts = [p for p in (cluster.dir / "mlflow-artifacts").rglob("*") if p.is_file()]
    assert any(p.name == "trials.json" for p in artifacts), "the job's summary artifacts reached the server's store"
    assert not (cluster.dir / "state" / "mlflow.db").exists(), "nothing was logged to a local store"
    if cluster.backend.startswith("postgresql"):
        import psycopg

        with psycopg.connect(cluster.backend) as conn:
            (n_runs,) = conn.execute("SELECT count(*) FROM runs").fetchone()
        assert n_runs == 7  # parent + 6 children, in the server's PostgreSQL

    # 2. The second node dies mid-job: its trial runs again on the head; each trial is recorded once.
    job = client.submit(job_spec("lose-a-node", trials=10, sleep=1.0))
    deadline = time.time() + 90
    while time.time() < deadline:
        done = {t["node"].split("/")[-1] for t in job.trials() if t["status"] == "ok"}
        if done >= set(nodes.values()):
            break
        time.sleep(0.1)
    assert done >= set(nodes.values()), f"not every node had finished a trial: {done}"
    killed_at = time.time()
    cluster.script("kill-node2")
    final = job.wait(timeout=120)
    trials = job.trials()
    table = "\n".join(
        f"{t['trial_id']} {t['status']} attempts={t['attempts']} node={t['node']} "
        f"started={t['started'] - killed_at:+.2f} finished={(t['finished'] or 0) - killed_at:+.2f}"
        for t in trials
    )
    assert final["state"] == "succeeded" and final["counts"]["ok"] == 10, table
    assert sorted(t["trial_id"] for t in trials) == list(range(10))
    retried = [t for t in trials if t["attempts"] == 2]
    assert retried, "the trial running on the lost node was run again"
    head = nodes["ray-head"]
    assert all(t["node"].endswith(head) for t in retried), table
    assert all(t["node"].endswith(head) for t in trials if t["started"] > killed_at + 0.5), table
    children = mlflow_children(cluster.mlflow_url, final["mlflow_run_id"])
    ids = [int(r.data.tags["crucible.trial_id"]) for r in children]
    assert sorted(ids) == list(range(10)), "exactly one MLflow child run per trial"
    assert {r.data.tags["crucible.status"] for r in children} == {"ok"}


def wait_for_both_nodes(job, nodes: dict[str, str], timeout: float = 120) -> None:
    """Block until every node has finished at least one of the job's trials."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = {t["node"].split("/")[-1] for t in job.trials() if t["status"] == "ok"}
        if done >= set(nodes.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"not every node finished a trial within {timeout} s: {done}")


@heavy
def test_builtin_trainer_on_two_nodes_losing_one_logs_the_best_model_to_the_server(cluster):
    nodes = cluster.node_ids()
    spec = yaml.safe_load((ROOT / "examples" / "digits-bayes.yaml").read_text())
    spec["budget"] = {"trials": 10, "parallel": 2, "trial_retries": 1}
    spec["fixed"] = {"epochs": 15, "patience": 5}
    spec["pruning"] = {"kind": "none"}
    job = cluster.client().submit(spec)
    wait_for_both_nodes(job, nodes, timeout=300)
    cluster.script("kill-node2")
    final = job.wait(timeout=600)
    trials = job.trials()
    assert final["state"] == "succeeded" and final["counts"]["ok"] == 10, final
    assert sorted(t["trial_id"] for t in trials) == list(range(10))
    assert {t["node"].split("/")[-1] for t in trials} == set(nodes.values())
    children = mlflow_children(cluster.mlflow_url, final["mlflow_run_id"])
    assert sorted(int(r.data.tags["crucible.trial_id"]) for r in children) == list(range(10))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cluster.mlflow_url)
    assert client.list_artifacts(final["mlflow_run_id"], "model"), "the best model went to the server's store"
    assert any(p.name == "MLmodel" for p in (cluster.dir / "mlflow-artifacts").rglob("*"))


@heavy
def test_tracking_server_with_basic_auth_takes_credentials_from_the_environment(request, monkeypatch):
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs `pip install 'mlflow[auth]'`")
    password = secrets.token_hex(12)
    with local_cluster(request, CRUCIBLE_NODES="1", CRUCIBLE_MLFLOW_AUTH="1", MLFLOW_AUTH_ADMIN_PASSWORD=password) as c:
        final = c.client().submit(job_spec("auth", trials=3, sleep=0.1)).wait(timeout=120)
        assert final["state"] == "succeeded", final
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{c.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=5")
        assert err.value.code == 401, "the server refuses anonymous clients"
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        children = mlflow_children(c.mlflow_url, final["mlflow_run_id"])
        assert len(children) == 3, "the service logged in with the credentials from its environment"
