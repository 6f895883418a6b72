"""The service's scheduler on a real local Ray and a real sqlite store: many jobs, faults, restarts."""

from __future__ import annotations

import time

import pytest
from support import resume_and_wait, sigkill_when, start_scheduler_process

from service.scheduler import Scheduler
from service.spec import JobSpec


def spec_dict(fn, trials=4, parallel=1, name="t", fixed=None, budget=None, tracking=None, strategy="random"):
    return {
        "name": name,
        "strategy": strategy,
        "objective": {"metric": "loss", "mode": "min", "function": f"trial_fns:{fn}"},
        "budget": {"trials": trials, "parallel": parallel, **(budget or {})},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "fixed": fixed or {},
        "seed": 3,
        **({"tracking": tracking} if tracking else {}),
    }


@pytest.fixture
def sched(ray_local, tmp_path):
    s = Scheduler(f"sqlite:///{tmp_path / 'jobs.db'}", tracking=False)
    s.start()
    yield s
    s.shutdown()


def intervals(sched, job_id):
    return [(t["started"], t["finished"]) for t in sched.get_job(job_id)["trials"]]


def peak(spans):
    events = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans])
    now = top = 0
    for _, d in events:
        now += d
        top = max(top, now)
    return top


def test_small_job_is_not_starved_by_a_large_one(sched):
    big = sched.submit(
        JobSpec.from_dict(spec_dict("sleepy", trials=12, parallel=2, name="big", fixed={"sleep": 0.4})), "a"
    )
    time.sleep(1.5)  # the big job holds both workers
    small = sched.submit(
        JobSpec.from_dict(spec_dict("sleepy", trials=3, parallel=1, name="small", fixed={"sleep": 0.2})), "b"
    )
    done_small = sched.wait(small["id"], timeout=120)
    big_now = sched.get_job(big["id"])
    assert done_small["state"] == "succeeded" and done_small["counts"]["ok"] == 3
    assert big_now["state"] == "running", "the small job should finish while the big one still runs"
    done_big = sched.wait(big["id"], timeout=120)
    assert done_big["state"] == "succeeded" and done_big["counts"]["ok"] == 12
    assert peak(intervals(sched, small["id"])) == 1  # each job's `parallel` holds
    assert peak(intervals(sched, big["id"])) <= 2
    # while both jobs were in the loop, each had a worker: the big job ran one trial at a time then
    s0, s1 = min(s for s, _ in intervals(sched, small["id"])), max(f for _, f in intervals(sched, small["id"]))
    overlapping = [(s, f) for s, f in intervals(sched, big["id"]) if s < s1 - 0.05 and f > s0 + 0.05]
    assert overlapping and peak(overlapping) <= 2


def test_queued_jobs_start_as_capacity_frees(sched):
    jobs = [
        sched.submit(
            JobSpec.from_dict(spec_dict("sleepy", trials=2, parallel=2, name=f"j{i}", fixed={"sleep": 0.2})), "a"
        )
        for i in range(5)
    ]
    states = {sched.get_job(j["id"])["state"] for j in jobs}
    assert "queued" in states
    for j in jobs:
        assert sched.wait(j["id"], timeout=120)["counts"]["ok"] == 2


def test_killed_worker_is_retried_on_a_fresh_actor(sched, tmp_path):
    spec = spec_dict(
        "dies_once", trials=3, parallel=1, fixed={"marker_dir": str(tmp_path)}, budget={"trial_retries": 1}
    )
    job = sched.submit(JobSpec.from_dict(spec), "a")
    done = sched.wait(job["id"], timeout=120)
    assert done["state"] == "succeeded" and done["counts"]["ok"] == 3
    assert [t["attempts"] for t in sched.get_job(job["id"])["trials"]] == [2, 2, 2]


def test_retries_exhausted_fail_the_trial(sched, tmp_path):
    # the spec asks for 2 retries; the scheduler's max_trial_retries (1) caps it
    spec = spec_dict("faulty", trials=1, parallel=1, budget={"trial_retries": 2})
    spec["space"] = {"x": {"type": "float", "low": 0.41, "high": 0.49}}  # always kills its worker
    done = sched.wait(sched.submit(JobSpec.from_dict(spec), "a")["id"], timeout=120)
    trial = sched.get_job(done["id"])["trials"][0]
    assert done["state"] == "failed" and trial["status"] == "failed"
    assert trial["attempts"] == 2 and trial["reason"].startswith("worker died")


def test_trial_over_its_time_limit_is_stopped_and_failed(sched):
    spec = spec_dict("forever", trials=2, parallel=2, budget={"max_trial_seconds": 1.0})
    done = sched.wait(sched.submit(JobSpec.from_dict(spec), "a")["id"], timeout=60)
    trials = sched.get_job(done["id"])["trials"]
    assert [t["status"] for t in trials] == ["failed", "failed"]
    assert all("over the trial time limit of 1 s" in t["reason"] for t in trials)
    assert all(t["finished"] - t["started"] < 5 for t in trials)


def test_cancel_is_durable(sched):
    job = sched.submit(JobSpec.from_dict(spec_dict("forever", trials=4, parallel=2)), "a")
    time.sleep(1.0)
    sched.cancel(job["id"])
    done = sched.wait(job["id"], timeout=30)
    assert done["state"] == "cancelled" and done["stop_reason"] == "cancelled"
    assert all(t["status"] == "pruned" for t in sched.get_job(job["id"])["trials"])
    assert sched.store.job(job["id"])["cancel_requested"]
    queued = sched.store.create_job(
        "later", "a", JobSpec.from_dict(spec_dict("forever")).to_dict()
    )  # not yet admitted: cancelled at once
    sched.cancel(queued)
    assert sched.get_job(queued)["state"] == "cancelled"


@pytest.mark.slow
def test_sigkill_mid_job_resumes_without_rerunning_or_duplicating(ray_local, tmp_path):
    from mlflow.tracking import MlflowClient

    store_url, mlflow_uri = f"sqlite:///{tmp_path / 'jobs.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = spec_dict(
        "sleepy", trials=10, parallel=2, fixed={"sleep": 1.0}, tracking={"uri": mlflow_uri}, strategy="bayes"
    )
    proc, job_id = start_scheduler_process(store_url, spec)
    before = sigkill_when(
        proc,
        store_url,
        job_id,
        lambda trials: sum(t["status"] == "ok" for t in trials) >= 3 and any(t["status"] == "running" for t in trials),
    )
    finished_before = {k: t for k, t in before.items() if t["status"] != "running"}
    in_flight = [k for k, t in before.items() if t["status"] == "running"]
    assert len(finished_before) >= 3 and in_flight

    done, after = resume_and_wait(store_url, job_id, timeout=240)  # the restarted service, in this process
    assert done["state"] == "succeeded" and sorted(after) == list(range(10))
    assert all(t["status"] == "ok" for t in after.values())
    for k, t in finished_before.items():  # not run again
        assert (after[k]["finished"], after[k]["value"], after[k]["attempts"]) == (t["finished"], t["value"], 1)
    for k in in_flight:  # re-queued and run once more
        assert after[k]["attempts"] == 2
    client = MlflowClient(tracking_uri=mlflow_uri)
    parent = client.get_run(done["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    ids = sorted(int(r.data.tags["crucible.trial_id"]) for r in children)
    assert ids == list(range(10)), "exactly one MLflow child run per trial"
    assert all(r.info.status == "FINISHED" for r in children)
    assert parent.info.status == "FINISHED"
