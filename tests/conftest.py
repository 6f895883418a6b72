"""Shared fixtures: one real local Ray for the whole session, fresh MLflow stores."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

PG_URL = os.environ.get("CRUCIBLE_TEST_POSTGRES_URL")
NO_PG = "PostgreSQL tests need CRUCIBLE_TEST_POSTGRES_URL (CI sets it to postgresql://postgres@127.0.0.1:5432/test)"


def pytest_configure(config):
    # Loopback-only test cluster; the token banner is noise here.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs, started once (takes a few seconds)."""
    import ray

    from service.runner import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def sqlite_uri(tmp_path):
    """A fresh MLflow sqlite store for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def pg_database():
    """A fresh PostgreSQL database for one test (dropped after); skips without CRUCIBLE_TEST_POSTGRES_URL."""
    if not PG_URL:
        pytest.skip(NO_PG)
    psycopg = pytest.importorskip("psycopg", reason="psycopg is installed by `deploy/install.sh --test`")
    name = f"crucible_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(PG_URL, autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()


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
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir))
    wait_http(f"http://127.0.0.1:{port}/health", timeout=90, proc=proc)
    return proc
