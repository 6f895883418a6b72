"""The trial loop's request to Ray's autoscaler (read back from where Ray's v1 autoscaler reads it)."""

from __future__ import annotations

import gc
import json

import trial_fns
from ray.autoscaler._private.commands import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
from ray.experimental.internal_kv import _internal_kv_get

from service.events import Reporter
from service.loop import frozen_heap
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


class SeeFreeze(Reporter):
    """Objects frozen out of the cyclic collector while the job's trials start."""

    def __init__(self) -> None:
        self.frozen: list[int] = []

    def on_trial_start(self, record) -> None:
        self.frozen.append(gc.get_freeze_count())


def test_frozen_heap_nests_and_leaves_an_earlier_freeze_alone(monkeypatch) -> None:
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gc.get_freeze_count() > 1000  # the imported modules
        with frozen_heap():
            assert gc.get_freeze_count() > 1000
        assert gc.get_freeze_count() > 1000  # the inner exit kept it
    assert gc.get_freeze_count() == 0
    gc.freeze()  # the process froze its own heap (as benchmarks/ do): not undone by a job
    made_since = [[i] for i in range(500)]  # what the process made after its own freeze
    try:
        calls: list[str] = []
        freeze, unfreeze = gc.freeze, gc.unfreeze
        monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze") or freeze())
        monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze") or unfreeze())
        with frozen_heap():
            unfrozen = {id(o) for o in gc.get_objects()}
            assert all(gc.is_tracked(x) and id(x) not in unfrozen for x in made_since)  # frozen on entry too
        assert calls == ["freeze"] and gc.get_freeze_count() > 1000  # frozen since, never unfrozen
    finally:
        monkeypatch.undo()
        gc.unfreeze()


def test_an_embedded_job_runs_with_the_heap_frozen_and_unfreezes_it(ray_local):
    see = SeeFreeze()
    spec = JobSpec.from_dict({
        "name": "freeze", "strategy": "random", "seed": 0,
        "objective": {"metric": "loss", "mode": "min", "function": trial_fns.quadratic},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "budget": {"trials": 3, "parallel": 1},
    })  # fmt: skip
    assert gc.get_freeze_count() == 0
    result = JobRunner(spec, [see]).run()
    assert len(result.trials) == 3
    assert see.frozen and min(see.frozen) > 1000
    assert gc.get_freeze_count() == 0
