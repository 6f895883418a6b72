"""TrialActor's plain ``call`` (trials that stream nothing, e.g. NEAT batches) on a real local Ray."""

from __future__ import annotations

import time

import pytest
import trial_fns  # noqa: F401 - importable by the workers (tests/service is on their path)

from service.workers import SharedInput, TrialActor


@pytest.fixture(scope="module")
def actor(ray_local):
    a = TrialActor.options(num_cpus=1).remote(1.0)
    yield a
    ray_local.kill(a)


def test_call_returns_the_final_message_and_drops_reports(ray_local, actor):
    msg = ray_local.get(actor.call.remote(1, {"x": 0.5, "epochs": 3}, 0, "trial_fns:quadratic"))
    assert msg["type"] == "final" and msg["trial_id"] == 1 and msg["status"] == "ok"
    assert msg["metrics"] == {"loss": pytest.approx(0.04), "x": 0.5}
    assert msg["device"] == "cpu" and msg["node"] and msg["reason"] is None


def test_call_fails_a_raising_trial_with_its_reason(ray_local, actor):
    msg = ray_local.get(actor.call.remote(2, {"x": 0.1}, 0, "trial_fns:faulty"))
    assert msg["status"] == "failed" and "ValueError: bad x=0.100" in msg["reason"]


def test_stop_reaches_a_call_before_and_while_it_runs(ray_local, actor):
    ray_local.get(actor.stop.remote(3))  # arrives before the trial starts
    msg = ray_local.get(actor.call.remote(3, {"x": 0.5}, 0, "trial_fns:quadratic"))
    assert msg["status"] == "pruned" and "stopped by the coordinator" in msg["reason"]
    ref = actor.call.remote(4, {}, 0, "trial_fns:forever")
    time.sleep(0.3)
    assert ray_local.get(actor.stop.remote(4)) is True  # the actor is threaded: stop runs beside the call
    msg = ray_local.get(ref, timeout=30)
    assert msg["status"] == "pruned"


def test_a_shared_input_is_fetched_once_per_worker(ray_local, actor):
    shared = SharedInput(ray_local.put({"v": 3.0}))
    first, second = (ray_local.get(actor.call.remote(i, {}, 0, "trial_fns:shared_identity", shared)) for i in (5, 6))
    assert first["metrics"]["value"] == second["metrics"]["value"] == 3.0
    assert first["metrics"]["shared_id"] == second["metrics"]["shared_id"]  # the cached object, not a new copy
    bare = [ray_local.get(actor.call.remote(i, {}, 0, "trial_fns:shared_identity", {"v": 4.0})) for i in (7, 8)]
    assert [m["metrics"]["value"] for m in bare] == [4.0, 4.0]  # a plain value still passes through
