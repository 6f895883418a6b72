"""Shared fixtures: one real local Ray for the whole session, fresh MLflow stores."""

from __future__ import annotations

import os

import pytest


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
