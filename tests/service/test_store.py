"""The job store on sqlite (default) and PostgreSQL (CRUCIBLE_TEST_POSTGRES_URL)."""

from __future__ import annotations

import pytest
from test_scheduler import spec_dict

from service import store as st
from service.scheduler import Scheduler
from service.spec import JobSpec


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("pg_database")


def test_trial_lifecycle_and_checkpoints_are_stored_together(store_url):
    store = st.Store(store_url)
    try:
        job = store.create_job("j", "alice", {"name": "j"})
        store.trial_started(job, 0, {"x": 0.5}, {"next": 1})
        assert store.checkpoint(job) == {"next": 1}
        assert store.trials(job)[0]["status"] == "running" and store.trials(job)[0]["attempts"] == 1
        store.trial_started(job, 0, {"x": 0.5}, None)  # a retry counts an attempt, keeps the checkpoint
        assert store.trials(job)[0]["attempts"] == 2 and store.checkpoint(job) == {"next": 1}
        record = {"trial_id": 0, "status": "ok", "value": 0.25, "metrics": {"loss": 0.25}, "reason": None,
                  "node": "n", "device": "cpu", "finished": 12.0}  # fmt: skip
        store.trial_finished(job, record, {"next": 1, "told": 1})
        (row,) = store.trials(job)
        assert (row["status"], row["value"], row["metrics"], row["logged"]) == ("ok", 0.25, {"loss": 0.25}, False)
        store.mark_logged(job, [0])
        assert store.trials(job)[0]["logged"] is True
        assert store.checkpoint(job) == {"next": 1, "told": 1}
    finally:
        store.close()


def blob_rows(store, job):
    with store.engine.connect() as conn:
        return conn.execute(st.sa.select(st.blobs.c.digest).where(st.blobs.c.job_id == job)).scalars().all()


def test_long_checkpoint_strings_are_stored_once_and_dropped_when_no_longer_referenced(store_url):
    store = st.Store(store_url)
    try:
        job = store.create_job("j", "alice", {"name": "j"})
        other = store.create_job("k", "alice", {"name": "k"})
        w0, w1, w2 = ("a" * st.BLOB_MIN_CHARS, "b" * 20_000, "c" * 20_000)  # replica weights, say
        first = {"round": 0, "checkpoints": {"0": w0, "1": w1}, "short": "x" * (st.BLOB_MIN_CHARS - 1)}
        store.trial_started(job, 0, {}, first)
        store.trial_started(job, 1, {}, first)  # the same blobs again: nothing new is written
        assert store.checkpoint(job) == first and len(blob_rows(store, job)) == 2
        second = {"round": 1, "checkpoints": {"0": w0, "1": w2}, "list": [w2, 1]}
        record = {"trial_id": 1, "status": "ok", "value": 1.0, "metrics": {}, "reason": None, "node": "n",
                  "device": "cpu", "finished": 1.0}  # fmt: skip
        store.trial_finished(job, record, second)
        assert store.checkpoint(job) == second and len(blob_rows(store, job)) == 2  # w1 dropped, w2 once
        store.update_job(other, checkpoint={"pop": w1})
        assert store.checkpoint(other) == {"pop": w1} and store.checkpoint(job) == second  # per job
        with store.engine.connect() as conn:
            text = conn.execute(st.sa.select(st.jobs.c.checkpoint).where(st.jobs.c.id == job)).scalar()
        assert len(text) < 1000  # the job row holds references
        assert "checkpoint" not in store.job(job) and all("checkpoint" not in j for j in store.jobs())
        assert store.checkpoint(store.create_job("new", "bob", {})) is None
    finally:
        store.close()


def test_jobs_by_owner_and_state_and_durable_cancel(store_url):
    store = st.Store(store_url)
    try:
        a = store.create_job("a", "alice", {})
        b = store.create_job("b", "bob", {})
        assert [j["id"] for j in store.jobs("alice")] == [a]
        assert {j["id"] for j in store.jobs()} == {a, b}
        assert store.request_cancel(a) is True  # queued: cancelled at once
        assert store.job(a)["state"] == "cancelled" and store.job(a)["cancel_requested"]
        assert store.request_cancel(a) is False  # already ended: nothing changes
        store.update_job(b, state=st.RUNNING)
        assert store.request_cancel(b) is True and store.job(b)["state"] == "running"
        assert [j["id"] for j in store.jobs(states=frozenset({st.RUNNING}))] == [b]
        assert store.job("nope") is None
    finally:
        store.close()


@pytest.mark.postgres
def test_scheduler_runs_a_job_on_a_postgres_store(ray_local, pg_database):
    sched = Scheduler(pg_database, tracking=False)
    sched.start()
    try:
        job = sched.submit(JobSpec.from_dict(spec_dict("quadratic", trials=4, parallel=2)), "alice")
        done = sched.wait(job["id"], timeout=120)
        assert done["state"] == "succeeded" and done["counts"]["ok"] == 4
        assert done["best"]["value"] == min(t["value"] for t in sched.get_job(job["id"])["trials"])
    finally:
        sched.shutdown()
