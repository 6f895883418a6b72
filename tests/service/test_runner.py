"""The job loop on a real local Ray: streaming reports, failures, limits, pruning."""

from __future__ import annotations

import pytest
import trial_fns

from search.base import Status
from service.events import Reporter
from service.runner import JobRunner
from service.spec import JobSpec


def make_spec(fn, trials=6, parallel=2, strategy="random", **extra):
    data = {
        "name": "t",
        "strategy": strategy,
        "objective": {"metric": "loss", "mode": "min", "function": fn},
        "budget": {"trials": trials, "parallel": parallel, **extra.pop("budget", {})},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "seed": 7,
        **extra,
    }
    return JobSpec.from_dict(data)


class Recorder(Reporter):
    """Records the order of hook calls."""

    def __init__(self):
        self.events = []

    def on_trial_start(self, record):
        self.events.append(("start", record.trial_id))

    def on_trial_report(self, record, epoch, metrics):
        self.events.append(("report", record.trial_id, epoch))

    def on_trial_end(self, record, best):
        self.events.append(("end", record.trial_id, record.status))


def test_custom_callable_streams_reports_and_finds_best(ray_local):
    rec = Recorder()
    spec = make_spec(trial_fns.quadratic, trials=8, parallel=2, fixed={"epochs": 3, "sleep": 0.05})
    result = JobRunner(spec, [rec]).run()
    assert len(result.trials) == 8 and result.count(Status.OK) == 8
    assert result.stop_reason == "budget"
    # best is the trial with the smallest (x - 0.3)^2
    expected = min(result.trials, key=lambda t: (t.params["x"] - 0.3) ** 2)
    assert result.best.trial_id == expected.trial_id
    # every trial's 3 epoch reports arrive before its end, in order
    for t in result.trials:
        mine = [e for e in rec.events if e[1] == t.trial_id]
        assert [e[0] for e in mine] == ["start", "report", "report", "report", "end"]
        assert [e[2] for e in mine if e[0] == "report"] == [1, 2, 3]
        assert [h[0] for h in t.history] == [1, 2, 3]
    # never more than `parallel` trials in flight
    in_flight = peak = 0
    for e in rec.events:
        in_flight += {"start": 1, "end": -1}.get(e[0], 0)
        peak = max(peak, in_flight)
    assert peak == 2


def test_import_path_function(ray_local):
    result = JobRunner(make_spec("trial_fns:quadratic", trials=4)).run()
    assert result.count(Status.OK) == 4
    assert all(t.node and t.device == "cpu" for t in result.trials)


def test_unimportable_function_fails_trials_with_reason(ray_local):
    result = JobRunner(make_spec("no_such_module_xyz:fn", trials=2)).run()
    assert result.count(Status.FAILED) == 2
    assert "cannot import module 'no_such_module_xyz'" in result.trials[0].reason


def test_exception_nan_and_killed_worker_fail_their_trial_and_job_goes_on(ray_local):
    # 24 random x in [0, 1): some raise, some return NaN, some kill their worker, the rest succeed
    result = JobRunner(make_spec("trial_fns:faulty", trials=24, parallel=2)).run()
    assert len(result.trials) == 24 and all(t.status is not None for t in result.trials)
    by_x = {t.trial_id: t.params["x"] for t in result.trials}
    for t in result.trials:
        x = by_x[t.trial_id]
        if x < 0.2:
            assert t.status is Status.FAILED and "ValueError: bad x=" in t.reason
        elif x < 0.4:
            assert t.status is Status.FAILED and "not finite" in t.reason
        elif x < 0.5:
            assert t.status is Status.FAILED and t.reason.startswith("worker died")
        else:
            assert t.status is Status.OK and t.value == pytest.approx(x)
    kinds = {("ValueError" in (t.reason or "")), ("finite" in (t.reason or "")), ("died" in (t.reason or ""))}
    assert len(kinds) >= 2, "the seed should exercise several failure kinds"
    assert any(t.reason and t.reason.startswith("worker died") for t in result.trials)
    assert result.best is not None and result.best.value >= 0.5


def test_target_ends_job_early(ray_local):
    spec = make_spec("trial_fns:quadratic", trials=40, parallel=2, budget={"target": 0.05})
    result = JobRunner(spec).run()
    assert result.stop_reason == "target"
    assert result.best.value <= 0.05
    assert len(result.trials) < 40


def test_wall_clock_limit_stops_running_trials(ray_local):
    spec = make_spec("trial_fns:forever", trials=4, parallel=2, budget={"max_wall_seconds": 2})
    result = JobRunner(spec).run()
    assert result.stop_reason == "wall_clock"
    assert result.wall_seconds < 15
    assert len(result.trials) == 2
    assert all(t.status is Status.PRUNED and t.reason == "stopped: wall_clock" for t in result.trials)


@pytest.mark.parametrize("kind", ["median", "asha"])
def test_pruning_stops_clearly_bad_trials_early(ray_local, kind):
    spec = make_spec(
        "trial_fns:slow_bad",
        trials=12,
        parallel=2,
        pruning={"kind": kind, "warmup_steps": 2, "min_trials": 2, "min_resource": 2, "reduction_factor": 3},
    )
    result = JobRunner(spec).run()
    pruned = [t for t in result.trials if t.status is Status.PRUNED]
    assert pruned, "no trial was pruned"
    for t in pruned:
        assert len(t.history) < 12 and t.reason.startswith(f"pruned at epoch {t.history[-1][0]} ({kind})")
    best = result.best
    assert best.status is Status.OK and len(best.history) == 12
    # the pruned trials were worse than the best one at the point they stopped
    assert all(t.params["x"] > best.params["x"] for t in pruned)


def test_gpu_request_on_cpu_cluster_is_a_clear_error_and_writes_nothing(ray_local, sqlite_uri, tmp_path):
    from service.errors import CrucibleError
    from service.runner import run

    spec = make_spec("trial_fns:quadratic", trials=2, resources={"cpu": 1, "gpu": 0.5}, tracking={"uri": sqlite_uri})
    with pytest.raises(CrucibleError, match=r"`resources.gpu` asks for 0.5 per trial, but the Ray cluster has 0 GPUs"):
        run(spec, progress=False)
    assert not (tmp_path / "mlflow.db").exists()


def test_parallel_beyond_cluster_capacity_is_capped(ray_local, capfd):
    rec = Recorder()
    spec = make_spec("trial_fns:quadratic", trials=6, parallel=4, fixed={"epochs": 1, "sleep": 0.1})
    result = JobRunner(spec, [rec]).run()
    assert result.count(Status.OK) == 6
    assert "running 2 trials at a time" in capfd.readouterr().err


def test_a_function_that_takes_a_context_gets_the_worker_and_a_cache_that_outlives_a_trial(ray_local):
    spec = make_spec(trial_fns.with_context, trials=6, parallel=1, seed=3)
    result = JobRunner(spec).run()
    assert [t.status for t in result.trials] == [Status.OK] * 6
    for t in result.trials:
        assert (t.metrics["cpus"], t.metrics["on_cpu"], t.metrics["stopped"]) == (1.0, 1.0, 0.0)
        assert t.metrics["seed"] == 3 * 100_003 + t.trial_id  # the trial's own seed
    assert sorted(t.metrics["runs_here"] for t in result.trials) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # one reused actor
