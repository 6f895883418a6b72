"""The trial loop's request to Ray's autoscaler (read back from where Ray's v1 autoscaler reads it)."""

from __future__ import annotations

import json

import trial_fns
from ray.autoscaler._private.commands import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
from ray.experimental.internal_kv import _internal_kv_get

from service.events import Reporter
from service.runner import JobRunner
from service.spec import JobSpec


def standing_request() -> list[dict]:
    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return json.loads(raw) if raw else []


class SeeRequest(Reporter):
    """What the autoscaler is asked for while trials run."""

    def __init__(self) -> None:
        self.seen: list[list[dict]] = []

    def on_trial_start(self, record) -> None:
        self.seen.append(standing_request())


def test_a_running_job_asks_the_autoscaler_for_its_workers_and_withdraws_at_the_end(ray_local):
    spec = JobSpec.from_dict({
        "name": "demand", "strategy": "random",
        "objective": {"metric": "loss", "mode": "min", "function": trial_fns.quadratic},
        "budget": {"trials": 4, "parallel": 2}, "resources": {"cpu": 0.5},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    })  # fmt: skip
    seer = SeeRequest()
    result = JobRunner(spec, [seer]).run()
    assert len(result.trials) == 4
    assert seer.seen and all(r == [{"CPU": 0.5}, {"CPU": 0.5}] for r in seer.seen)  # parallel x its shape
    assert standing_request() == []  # the job is over: nothing asked for any more
