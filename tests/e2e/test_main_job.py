"""The README's main job, end to end through the CLI: real Ray, real training, a sqlite MLflow store."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).parent / "crucible"  # the console script, as the README runs it
CRUCIBLE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "service.cli"]


def _run(args, cwd, timeout):
    env = {
        "PYTHONPATH": str(ROOT),
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "RAY_AUTH_MODE": "disabled",
        "HOME": str(Path.home()),
    }
    return subprocess.run(CRUCIBLE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_digits_bayes_main_job(tmp_path):
    """30 trials, 2 in parallel, under 10 minutes, best test accuracy >= 0.97, UI command printed."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    start = time.time()
    proc = _run(["run", "examples/digits-bayes.yaml"], cwd=tmp_path, timeout=900)
    wall = time.time() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Job 'digits-bayes': 30 trials" in out
    assert "digits-bayes: 100%" in proc.stderr  # the progress bar ran to the end
    test_acc = float(re.search(r"metric test_accuracy\s+([0-9.]+)", out).group(1))
    assert test_acc >= 0.97, out
    db = (tmp_path / "mlflow.db").resolve()
    assert f"mlflow ui --backend-store-uri sqlite:///{db} --port 5000" in out
    assert wall < 600, f"main job took {wall:.0f} s"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("digits-bayes")
    runs = client.search_runs([exp.experiment_id], max_results=200)
    assert sum(r.data.tags.get("crucible.kind") == "trial" for r in runs) == 30


def test_cli_rejects_bad_spec_before_running(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ntask: digits\nmodel: mlp\nbudget: {trials: 2, parallel: 4}\n"
        "space: {lr: {type: float, low: 0, high: 1, log: true}}\n"
    )
    proc = _run(["run", str(bad)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "`budget.parallel` must be <= budget.trials (2), but got 4." in proc.stderr
    assert "`space.lr.low` must be > 0 when log is true" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing half-written
