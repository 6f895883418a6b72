"""An in-memory Backend for the HTTP API tests, and a real uvicorn server in a thread."""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from service.config import ServerConfig, TokenInfo
from service.spec import JobSpec

TERMINAL = ("succeeded", "failed", "cancelled")

ALICE = TokenInfo("alice-token-0123456789", "alice")
BOB = TokenInfo("bob-token-0123456789abc", "bob")
ADMIN = TokenInfo("admin-token-0123456789a", "root", admin=True)
TOKENS = (ALICE, BOB, ADMIN)

GOOD_SPEC: dict[str, Any] = {
    "name": "fake-job",
    "strategy": "bayes",
    "task": "digits",
    "model": "mlp",
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "budget": {"trials": 4, "parallel": 2},
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
    },
    "fixed": {"epochs": 3},
    "tracking": {"uri": "sqlite:///mlflow.db"},
    "seed": 1,
}

CUSTOM_SPEC: dict[str, Any] = {
    "name": "custom",
    "strategy": "random",
    "objective": {"metric": "loss", "mode": "min", "function": "myorg.objectives.cnn:train"},
    "budget": {"trials": 2},
    "space": {"x": {"type": "float", "low": -1.0, "high": 1.0}},
}


class FakeBackend:
    """Jobs in a dict; records every call so tests can assert what reached the backend."""

    def __init__(self, auto_finish: bool = False) -> None:
        self.auto_finish = auto_finish
        self.fail_with: Exception | None = None
        self.submitted: list[tuple[JobSpec, str]] = []
        self.cancelled: list[str] = []
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def submit(self, spec: JobSpec, owner: str) -> dict[str, Any]:
        self._check()
        assert isinstance(spec, JobSpec)
        job_id = uuid.uuid4().hex[:12]
        with self._lock:
            self.submitted.append((spec, owner))
            self._jobs[job_id] = {
                "id": job_id,
                "name": spec.name,
                "owner": owner,
                "state": "queued",
                "strategy": spec.strategy,
                "metric": spec.objective.metric,
                "mode": spec.objective.mode,
                "created": time.time() + len(self._jobs) * 1e-3,
                "started": None,
                "finished": None,
                "stop_reason": None,
                "error": None,
                "counts": {"budget": spec.budget.trials, "ok": 0, "failed": 0, "pruned": 0, "running": 0},
                "best": None,
                "mlflow_run_id": None,
                "tracking_uri": spec.tracking.uri,
                "spec": spec.to_dict(),
                "trials": [],
            }
        if self.auto_finish:
            self.finish(job_id)
        return self._summary(job_id)

    def list_jobs(self, owner: str | None) -> list[dict[str, Any]]:
        self._check()
        with self._lock:
            ids = [j["id"] for j in sorted(self._jobs.values(), key=lambda j: -j["created"])]
        return [self._summary(i) for i in ids if owner is None or self._jobs[i]["owner"] == owner]

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        self._check()
        with self._lock:
            job = self._jobs.get(job_id)
            return copy.deepcopy(job) if job is not None else None

    def cancel(self, job_id: str) -> dict[str, Any]:
        self._check()
        with self._lock:
            job = self._jobs[job_id]
            if job["state"] not in TERMINAL:
                self.cancelled.append(job_id)
                job.update(state="cancelled", finished=time.time(), stop_reason="cancelled")
        return self._summary(job_id)

    def health(self) -> dict[str, Any]:
        self._check()
        with self._lock:
            states = [j["state"] for j in self._jobs.values()]
        return {"ray": True, "jobs_running": states.count("running"), "jobs_queued": states.count("queued")}

    # ----------------------------------------------------------- test helpers
    def _summary(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            return {k: copy.deepcopy(v) for k, v in self._jobs[job_id].items() if k not in ("spec", "trials")}

    def finish(self, job_id: str, state: str = "succeeded", value: float = 0.93) -> None:
        """Mark a job done with two trials (one ok, one pruned)."""
        now = time.time()
        trials = [
            _trial(0, "ok", value, {"lr": 0.01, "activation": "relu"}, now),
            _trial(1, "pruned", None, {"lr": 0.05, "activation": "tanh"}, now, reason="median stopping"),
        ]
        with self._lock:
            job = self._jobs[job_id]
            job["counts"].update(ok=1, pruned=1)
            job.update(
                state=state,
                started=now - 2,
                finished=now,
                stop_reason="budget",
                trials=trials,
                mlflow_run_id="run123",
                best={"trial_id": 0, "value": value, "params": trials[0]["params"], "metrics": {"val_loss": 0.2}},
            )

    def set_running(self, job_id: str) -> None:
        with self._lock:
            self._jobs[job_id].update(state="running", started=time.time())


def _trial(
    trial_id: int, status: str, value: float | None, params: dict[str, Any], now: float, reason: str | None = None
) -> dict[str, Any]:
    return {
        "trial_id": trial_id,
        "params": params,
        "status": status,
        "value": value,
        "metrics": {"val_accuracy": value} if value is not None else {"val_loss": float("nan")},
        "reason": reason,
        "attempts": 1,
        "node": "127.0.0.1",
        "device": "cpu",
        "started": now - 1.5,
        "finished": now,
    }


@contextmanager
def running_app(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    sock = config.bind_socket()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Api:
    """A running app over a FakeBackend."""

    url: str
    backend: FakeBackend
    config: ServerConfig
    tokens: tuple[TokenInfo, ...] = field(default=TOKENS)


@contextmanager
def fake_api(tmp_dir: str, auto_finish: bool = False, **config: Any) -> Iterator[Api]:
    """The real app (``create_app``) over a FakeBackend, served on loopback."""
    from service.app import create_app

    cfg = ServerConfig.from_dict(
        {"state_dir": tmp_dir, "allowed_modules": ["myorg.objectives"], "max_body_bytes": 20_000, **config}
    )
    backend = FakeBackend(auto_finish=auto_finish)
    with running_app(create_app(backend, cfg, TOKENS)) as url:
        yield Api(url, backend, cfg)
