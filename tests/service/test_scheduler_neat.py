"""A 'neat' job in the service's scheduler, SIGKILLed mid-job and resumed, ends as an uninterrupted run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from support import resume_and_wait, sigkill_when, start_scheduler_process

from service.events import Reporter
from service.runner import run
from service.spec import JobSpec

KILL_AFTER = 3  # generations evaluated before the kill (XOR with seed 1 takes 21)


def xor_spec(uri: str) -> dict:
    """XOR (as a user fitness function: the batches of generation KILL_AFTER take 0.5 s each)."""
    xor_io = {"fitness_threshold": 3.9, "genome": {"num_inputs": 2, "num_outputs": 1}}
    return {"name": "xor-resume", "strategy": "neat", "task": "function", "budget": {"trials": 120, "parallel": 2},
            "fixed": {"function": f"neat_fns:xor_slow_in_generation_{KILL_AFTER}"},
            "strategy_options": {"neat": xor_io}, "tracking": {"uri": uri}, "seed": 1}  # fmt: skip


class Generations(Reporter):
    """Collects each generation's statistics."""

    def __init__(self) -> None:
        self.stats: list[dict] = []

    def on_round(self, index: int, stats: dict) -> None:
        self.stats.append({k: v for k, v in stats.items() if k != "champion"})


def generation_running(trials: list[dict]) -> bool:
    """Generation KILL_AFTER's batches are running."""
    return any(t["status"] == "running" and t["params"]["generation"] == KILL_AFTER for t in trials)


@pytest.mark.slow
def test_neat_job_killed_mid_job_resumes_to_the_uninterrupted_result(ray_local, tmp_path):
    reference = Generations()
    ref = run(JobSpec.from_dict(xor_spec("sqlite:///unused.db")), progress=False, tracking=False,
              reporters=[reference])  # fmt: skip
    ref_generations = len(reference.stats)
    assert ref.best.value >= 3.9 and KILL_AFTER + 4 < ref_generations

    store_url, mlflow_uri = f"sqlite:///{tmp_path / 'jobs.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, job_id = start_scheduler_process(store_url, xor_spec(mlflow_uri))
    before = sigkill_when(proc, store_url, job_id, generation_running, timeout=90)
    finished_before = {k: t for k, t in before.items() if t["status"] != "running"}
    in_flight = [k for k, t in before.items() if t["status"] == "running"]
    assert len(finished_before) >= 2 * KILL_AFTER and in_flight, "killed mid-generation"

    done, after = resume_and_wait(store_url, job_id, timeout=120)  # the restarted service, in this process
    assert done["state"] == "succeeded"
    for t in after.values():  # genomes are work payload: sent to workers, never stored or served
        assert "genomes" not in t["params"] and "genomes" not in t.get("config", {}), t["trial_id"]
    assert done["best"]["value"] == ref.best.value  # the same evolution, bit for bit
    assert sorted(after) == list(range(2 * ref_generations))
    assert max(t["params"]["generation"] for t in after.values()) + 1 == ref_generations
    for k, t in finished_before.items():  # not run again
        assert (after[k]["finished"], after[k]["value"], after[k]["attempts"]) == (t["finished"], t["value"], 1)
    for k in in_flight:  # dispatched again once
        assert after[k]["attempts"] == 2 and after[k]["status"] == "ok"

    client = MlflowClient(tracking_uri=mlflow_uri)
    parent = client.get_run(done["mlflow_run_id"])
    history = client.get_metric_history(parent.info.run_id, "fitness_best")
    assert sorted(m.step for m in history) == list(range(ref_generations)), "one step per generation, none twice"
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [s["best"] for s in reference.stats]
    assert parent.data.metrics["generations"] == ref_generations and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_fitness"] == ref.best.value
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")  # fmt: skip
    assert children == []
    assert "best_genome/genome.pkl" in [a.path for a in client.list_artifacts(parent.info.run_id, "best_genome")]
