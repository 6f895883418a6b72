"""MLflow layout of a strategy-``anneal`` job: one child run per replica, swap statistics on the parent.

The first test runs a real embedded job (local Ray, digits, sqlite MLflow) and reads it back with
``MlflowClient``; the others drive the reporter with a real :class:`AnnealStrategy` and
hand-made replica energies (no Ray), for the failure and resume paths.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from search import make_strategy
from search.base import Result, Status
from service.events import JobResult, TrialRecord
from service.runner import run
from service.spec import JobSpec
from service.tracking import reporter_for
from service.tracking_anneal import AnnealMlflowReporter

REPLICAS, ROUNDS = 4, 3


def anneal_spec(uri: str, rounds: int = ROUNDS, steps: int = 30, name: str = "anneal-job") -> JobSpec:
    return JobSpec.from_dict({
        "name": name,
        "strategy": "anneal",
        "task": "digits",
        "model": "mlp",
        "fixed": {"hidden_layers": 1, "units": 32, "trainer": "hybrid", "eval_batch_size": 256},
        "budget": {"trials": REPLICAS * rounds, "parallel": REPLICAS},
        "resources": {"cpu": 0.5},  # all replicas at once on the tests' 2-CPU Ray
        "strategy_options": {"replicas": REPLICAS, "steps": steps, "t_min": 1e-4, "t_max": 1e-2},
        "tracking": {"uri": uri},
        "seed": 1,
    })  # fmt: skip


def children(client: MlflowClient, parent_id: str) -> list[Any]:
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_real_job_logs_one_run_per_replica_and_swaps_on_the_parent(ray_local, sqlite_uri, tmp_path):
    spec = anneal_spec(sqlite_uri)
    result = run(spec, progress=False)
    assert result.count(Status.OK) == REPLICAS * ROUNDS and result.run_id
    client = MlflowClient(tracking_uri=sqlite_uri)
    parent = client.get_run(result.run_id)
    kids = children(client, result.run_id)

    # exactly one child run per replica, found by its tag, finished, with only static params
    assert sorted(int(k.data.tags["crucible.replica"]) for k in kids) == list(range(REPLICAS))
    assert sorted(k.info.run_name for k in kids) == [f"replica-{r}" for r in range(REPLICAS)]
    assert all(k.info.status == "FINISHED" and k.data.tags["crucible.status"] == "ok" for k in kids)
    by_replica = {int(k.data.tags["crucible.replica"]): k for k in kids}
    for r, kid in by_replica.items():
        assert set(kid.data.params) == {"replica", "steps", "start_temperature"}
        assert (kid.data.params["replica"], kid.data.params["steps"]) == (str(r), "30")
        assert float(kid.data.params["start_temperature"]) == pytest.approx(1e-4 * 10 ** (2 * r / 3))

    # per-round stepped metrics on each replica: what its trials reported, round by round
    trials = {(t.params["replica"], t.params["round"]): t for t in result.trials}
    energy: dict[int, dict[int, float]] = {}
    for r, kid in by_replica.items():
        for key in ("energy", "temperature", "accept_rate", "val_accuracy", "test_accuracy", "train_loss", "failed"):
            points = history(client, kid.info.run_id, key)
            assert [step for step, _ in points] == list(range(ROUNDS)), (r, key)
            if key != "failed":
                assert [v for _, v in points] == pytest.approx([trials[r, g].metrics[key] for g in range(ROUNDS)])
        temps = history(client, kid.info.run_id, "temperature")
        assert [v for _, v in temps] == pytest.approx([trials[r, g].params["temperature"] for g in range(ROUNDS)])
        energy[r] = dict(history(client, kid.info.run_id, "energy"))
        assert "replica" not in kid.data.metrics and "round" not in kid.data.metrics

    # parent: the lowest replica energy and swap statistics per round
    best = history(client, result.run_id, "round_best_energy")
    assert [s for s, _ in best] == list(range(ROUNDS))
    for step, value in best:
        assert value == pytest.approx(min(energy[r][step] for r in range(REPLICAS)))
    assert parent.data.metrics["best_energy"] == pytest.approx(min(min(e.values()) for e in energy.values()))
    accepted = dict(history(client, result.run_id, "swaps_accepted"))
    for g in range(ROUNDS - 1):  # an accepted swap exchanges two replicas' temperatures for the next round
        moved = sum(
            trials[r, g].params["temperature"] != trials[r, g + 1].params["temperature"] for r in range(REPLICAS)
        )
        assert moved == 2 * accepted[g]
    assert [s for s, _ in history(client, result.run_id, "swapped.0_1")] == [0, 2]  # even rounds: rungs 0-1, 2-3
    assert [s for s, _ in history(client, result.run_id, "swapped.1_2")] == [1]  # odd rounds: rungs 1-2
    for pair in ("0_1", "1_2", "2_3"):
        rates = history(client, result.run_id, f"swap_accept.{pair}")
        assert rates and all(0.0 <= v <= 1.0 for _, v in rates)
    assert {"anneal.replicas", "anneal.ladder", "anneal.steps", "anneal.trainer"} <= set(parent.data.params)
    assert parent.data.tags["crucible.best_replica"] == str(result.best.params["replica"])

    # plots on the parent
    names = {Path(a.path).name for a in client.list_artifacts(result.run_id, "summary")}
    assert {"temperature_vs_round.png", "energy_vs_round.png", "trials.json"} <= names
    local = Path(client.download_artifacts(result.run_id, "summary", str(tmp_path / "dl")))
    for png in ("temperature_vs_round.png", "energy_vs_round.png"):
        assert (local / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the replicas' weights (the proposals' `checkpoint`) are logged nowhere
    for run_ in [parent, *kids]:
        assert not any("checkpoint" in key for key in run_.data.params), run_.info.run_name
    rows = json.loads((local / "trials.json").read_text())
    assert len(rows) == REPLICAS * ROUNDS and not any("checkpoint" in row["params"] for row in rows)


def drive_rounds(
    reporter: AnnealMlflowReporter,
    strategy: Any,
    energies: dict[tuple[int, int], float | None],
    records: dict[int, TrialRecord],
    start_round: int,
    end_round: int,
) -> None:
    """Play rounds ``[start_round, end_round)`` as the runner would, with given energies (``None``: failed)."""
    for _ in range(start_round, end_round):
        for proposal in strategy.ask(REPLICAS):
            r, g = proposal.params["replica"], proposal.params["round"]
            record = TrialRecord(proposal.trial_id, dict(proposal.params), dict(proposal.params))
            records[record.trial_id] = record
            reporter.on_trial_start(record)
            e = energies[r, g]
            if e is None:
                record.status, record.reason = Status.FAILED, "objective energy is not finite"
            else:
                record.status, record.value = Status.OK, e
                record.metrics = {"energy": e, "accept_rate": 0.5, "temperature": proposal.params["temperature"],
                                  "val_accuracy": 1.0 - e, "replica": float(r), "round": float(g)}  # fmt: skip
            record.finished = time.time()
            strategy.tell(Result(record.trial_id, record.params, record.status, record.value, record.metrics,
                                 record.reason))  # fmt: skip
            reporter.on_trial_end(record, None)
        index = len(strategy.rounds()) - 1  # the round the last tell closed
        reporter.on_round(index, strategy.rounds()[index])


def job_result(spec: JobSpec, records: dict[int, TrialRecord]) -> JobResult:
    ok = [t for t in records.values() if t.status is Status.OK]
    best = min(ok, key=lambda t: t.value) if ok else None
    return JobResult(spec.name, "energy", spec.mode, [records[k] for k in sorted(records)], best, "budget", 1.0)


def log_whole_job(uri, spec, strategy, energies, rounds, **reporter_options):
    """Rounds 0..rounds-1 through a fresh anneal reporter, job ended; its replica runs read back by replica."""
    reporter = reporter_for(spec, flush_interval=0.05, **reporter_options)
    assert isinstance(reporter, AnnealMlflowReporter)
    reporter.on_job_start(spec)
    records: dict[int, TrialRecord] = {}
    drive_rounds(reporter, strategy, energies, records, 0, rounds)
    reporter.on_job_end(job_result(spec, records), None)
    client = MlflowClient(tracking_uri=uri)
    kids = {int(k.data.tags["crucible.replica"]): k for k in children(client, reporter.run_id)}
    return reporter, records, client, kids


def test_a_failed_replica_round_is_tagged_and_the_replica_goes_on(sqlite_uri):
    spec = anneal_spec(sqlite_uri, rounds=3, name="fails")
    strategy = make_strategy("anneal", spec.search_config())
    energies = {(r, g): 2.0 - 0.1 * r - 0.2 * g for r in range(REPLICAS) for g in range(3)}
    energies[2, 1] = None  # replica 2's second round fails
    logged: list[int] = []
    reporter, records, client, kids = log_whole_job(sqlite_uri, spec, strategy, energies, 3, on_logged=logged.extend)
    assert sorted(kids) == list(range(REPLICAS))
    bad = kids[2]
    assert bad.data.tags["crucible.failed_round.1"] == "round 1 failed: objective energy is not finite"
    assert bad.data.tags["crucible.reason"].startswith("round 1 failed")
    assert bad.data.tags["crucible.rounds_failed"] == "1" and bad.data.tags["crucible.rounds_ok"] == "2"
    assert history(client, bad.info.run_id, "failed") == [(0, 0.0), (1, 1.0), (2, 0.0)]
    assert [s for s, _ in history(client, bad.info.run_id, "energy")] == [0, 2]  # the replica went on
    assert [s for s, _ in history(client, bad.info.run_id, "temperature")] == [0, 1, 2]
    assert bad.info.status == "FINISHED"
    assert all("crucible.reason" not in kids[r].data.tags for r in (0, 1, 3))
    assert history(client, reporter.run_id, "failed_replicas") == [(0, 0.0), (1, 1.0), (2, 0.0)]
    assert sorted(logged) == sorted(records), "each trial is marked logged once its round is written"


def test_all_rounds_failing_fails_the_replica_run(sqlite_uri):
    spec = anneal_spec(sqlite_uri, rounds=2, name="all-fail")
    strategy = make_strategy("anneal", spec.search_config())
    energies = {(r, g): (None if r == 3 else 1.5) for r in range(REPLICAS) for g in range(2)}
    reporter, _, client, kids = log_whole_job(sqlite_uri, spec, strategy, energies, 2)
    assert kids[3].info.status == "FAILED" and kids[3].data.tags["crucible.status"] == "failed"
    assert {kids[r].info.status for r in range(3)} == {"FINISHED"}
    assert client.get_run(reporter.run_id).info.status == "FINISHED"  # the job went on


def test_a_resumed_reporter_writes_on_into_the_same_runs_without_duplicates(sqlite_uri):
    spec = anneal_spec(sqlite_uri, rounds=4, name="resumed")
    strategy = make_strategy("anneal", spec.search_config())
    energies = {(r, g): 3.0 - 0.3 * g - 0.1 * r for r in range(REPLICAS) for g in range(4)}
    first = reporter_for(spec, flush_interval=0.05)
    first.on_job_start(spec)
    records: dict[int, TrialRecord] = {}
    drive_rounds(first, strategy, energies, records, 0, 2)
    first.close()  # the service dies here: no job end, runs left RUNNING

    state = json.loads(json.dumps(strategy.state()))
    strategy = type(strategy).restore(spec.search_config(), state)
    logged: list[int] = []
    second = reporter_for(spec, flush_interval=0.05, run_id=first.run_id, on_logged=logged.extend)
    second.on_job_start(spec)
    for record in records.values():  # what the scheduler re-logs: trials not marked logged
        second.on_trial_start(record)
        second.on_trial_end(record, None)
    for index, stats in enumerate(strategy.rounds()):  # the runner announces the rounds it restored
        second.on_round(index, stats)
    drive_rounds(second, strategy, energies, records, 2, 4)
    second.on_job_end(job_result(spec, records), None)

    client = MlflowClient(tracking_uri=sqlite_uri)
    kids = children(client, first.run_id)
    assert sorted(int(k.data.tags["crucible.replica"]) for k in kids) == list(range(REPLICAS))
    for kid in kids:
        assert [s for s, _ in history(client, kid.info.run_id, "energy")] == [0, 1, 2, 3]
        assert kid.info.status == "FINISHED"
    assert [s for s, _ in history(client, first.run_id, "round")] == [0, 1, 2, 3]
    swaps = history(client, first.run_id, "swap_accept.0_1")
    assert [s for s, _ in swaps] == [0, 1, 2, 3]
    expected = [p for p in strategy.swap_stats() if p["pair"] == [0, 1]][0]["rate"]
    assert swaps[-1][1] == pytest.approx(expected)  # the rate counts the rounds before the restart too
    assert sorted(set(logged)) == sorted(records)
    assert not math.isnan(client.get_run(first.run_id).data.metrics["best_energy"])
