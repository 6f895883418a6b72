"""TrialActor's plain ``call`` (trials that stream nothing, e.g. NEAT batches) on a real local Ray."""

from __future__ import annotations

import time

import pytest
import trial_fns  # noqa: F401 - importable by the workers (tests/service is on their path)

from service.workers import TrialActor


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
