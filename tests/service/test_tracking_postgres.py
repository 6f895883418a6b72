"""MLflow tracking on a PostgreSQL backend store (what a cluster deployment uses).

Needs PostgreSQL: set CRUCIBLE_TEST_POSTGRES_URL (CI sets it to the local server, e.g.
postgresql://postgres@127.0.0.1:5432/test). Each run creates and drops its own database.
"""

from __future__ import annotations

import pytest

from search.base import Status
from service.runner import run
from service.spec import JobSpec

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_tracking_uri(pg_database):
    return pg_database


def test_job_logs_to_postgres_store(ray_local, pg_tracking_uri):
    from mlflow.tracking import MlflowClient

    spec = JobSpec.from_dict(
        {
            "name": "pg-track",
            "strategy": "random",
            "objective": {"metric": "loss", "mode": "min", "function": "trial_fns:quadratic"},
            "budget": {"trials": 4, "parallel": 2},
            "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "fixed": {"epochs": 2},
            "tracking": {"uri": pg_tracking_uri},
        }
    )
    result = run(spec, progress=False)
    assert result.count(Status.OK) == 4
    client = MlflowClient(tracking_uri=pg_tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("pg-track").experiment_id])
    children = [r for r in runs if r.data.tags.get("crucible.kind") == "trial"]
    assert len(children) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == result.run_id for r in children)
    steps = [m.step for m in client.get_metric_history(children[0].info.run_id, "loss") if m.step > 0]
    assert sorted(steps) == [1, 2]
