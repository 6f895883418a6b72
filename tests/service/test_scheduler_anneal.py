"""A replica-exchange job survives a SIGKILLed service: it resumes from the replicas' checkpoints.

The service runs in its own process (``sched_proc.py``) on a real local Ray, with a real sqlite
job store and MLflow store, and trains real digits replicas; it is killed after two rounds and
restarted here. The chains are deterministic, so the resumed job must reproduce an uninterrupted
run of the same spec round for round, which a chain restarted from scratch would not.
"""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient
from support import resume_and_wait, sigkill_when, start_scheduler_process

from search.base import Status
from service.runner import run
from service.spec import JobSpec

REPLICAS, ROUNDS, STEPS = 4, 5, 50


def spec_dict(tracking_uri: str) -> dict:
    return {
        "name": "anneal-resume",
        "strategy": "anneal",
        "task": "digits",
        "model": "mlp",
        "fixed": {"hidden_layers": 1, "units": 32, "trainer": "hybrid"},
        "budget": {"trials": REPLICAS * ROUNDS, "parallel": 2},
        "strategy_options": {"replicas": REPLICAS, "steps": STEPS, "t_min": 1e-4, "t_max": 1e-2},
        "tracking": {"uri": tracking_uri},
        "seed": 5,
    }


def replica_rounds(trials: list[dict]) -> dict[tuple[int, int], dict]:
    return {(t["params"]["replica"], t["params"]["round"]): t for t in trials}


@pytest.mark.slow
def test_sigkilled_anneal_job_resumes_from_checkpoints(ray_local, tmp_path):
    store_url, mlflow_uri = f"sqlite:///{tmp_path / 'jobs.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = spec_dict(mlflow_uri)
    proc, job_id = start_scheduler_process(store_url, spec)
    before = sigkill_when(  # after two rounds, with the third running
        proc,
        store_url,
        job_id,
        lambda trials: (
            sum(t["status"] == "ok" for t in trials) >= 2 * REPLICAS and any(t["status"] == "running" for t in trials)
        ),
    )
    finished_before = {k: t for k, t in before.items() if t["status"] == "ok"}
    assert len(finished_before) >= 2 * REPLICAS, "killed after two rounds"
    assert len(finished_before) < REPLICAS * ROUNDS and any(t["status"] == "running" for t in before.values())

    restarted = time.time()
    done, by_id = resume_and_wait(store_url, job_id, timeout=240)  # the restarted service, in this process
    after = list(by_id.values())
    assert done["state"] == "succeeded", done["error"]
    for t in after:  # a replica's checkpoint is payload: it rides to the worker, never into the store
        assert "checkpoint" not in t["params"] and "checkpoint" not in t.get("config", {}), t["trial_id"]
    rounds = replica_rounds(after)
    assert sorted(rounds) == [(r, g) for r in range(REPLICAS) for g in range(ROUNDS)]  # every round, once
    assert all(t["status"] == "ok" for t in after)
    for k, t in finished_before.items():  # not run again
        mine = next(a for a in after if a["trial_id"] == k)
        assert (mine["finished"], mine["value"], mine["attempts"]) == (t["finished"], t["value"], 1)
    resumed = [key for key, t in rounds.items() if t["trial_id"] not in finished_before]
    assert {g for _, g in resumed} >= {ROUNDS - 1} and min(g for _, g in resumed) >= 2
    assert all(rounds[key]["finished"] > restarted for key in resumed)

    # the chains went on from their checkpoints: work counters carry over the restart ...
    for r in range(REPLICAS):
        work = [rounds[r, g]["metrics"]["evaluations"] for g in range(ROUNDS)]
        steps = [b - a for a, b in zip(work, work[1:], strict=False)]
        assert all(s == pytest.approx(steps[0]) for s in steps), (r, work)
    # ... and every round equals an uninterrupted run's (the chains are deterministic), so no replica
    # restarted from scratch, whose first round looks like the uninterrupted run's round 0
    reference = run(JobSpec.from_dict(spec), progress=False, tracking=False)
    expected = {(t.params["replica"], t.params["round"]): t for t in reference.trials}
    assert all(t.status is Status.OK for t in reference.trials)
    for key, t in rounds.items():
        assert t["metrics"]["energy"] == pytest.approx(expected[key].metrics["energy"], rel=1e-5), key
        assert t["params"]["temperature"] == pytest.approx(expected[key].params["temperature"]), key
    for r, g in resumed:
        assert rounds[r, g]["metrics"]["energy"] != pytest.approx(expected[r, 0].metrics["energy"], rel=1e-3)

    # MLflow: still one child run per replica, each round logged once
    client = MlflowClient(tracking_uri=mlflow_uri)
    parent = client.get_run(done["mlflow_run_id"])
    kids = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(int(k.data.tags["crucible.replica"]) for k in kids) == list(range(REPLICAS))
    for kid in kids:
        steps = sorted(m.step for m in client.get_metric_history(kid.info.run_id, "energy"))
        assert steps == list(range(ROUNDS)), kid.info.run_name
        assert kid.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(parent.info.run_id, "round")) == list(range(ROUNDS))
    assert parent.info.status == "FINISHED"
    assert not any("checkpoint" in key for run_ in [parent, *kids] for key in run_.data.params)
