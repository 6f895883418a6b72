"""Shared fixtures: one real local Ray for the whole session, fresh MLflow stores."""

from __future__ import annotations

import os
import uuid

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
