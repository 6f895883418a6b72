"""MLflow plumbing shared by the reporters: store set-up, the write plan, small helpers.

A reporter turns hook calls into queued events; :func:`plan` turns a batch of events into
ordered writes (creations first, one ``log_batch`` per run, then run ends), which a writer
applies and, when the store is away, keeps and retries in the same order.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from search.base import Status

RUN_STATUS = {Status.OK: "FINISHED", Status.FAILED: "FAILED", Status.PRUNED: "KILLED"}
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
# At most this many MLflow calls at once in this process, however many jobs log: MLflow's
# SQL stores share one small connection pool per URI, and a service runs many jobs.
GATE = threading.BoundedSemaphore(4)


def default_artifact_location(uri: str) -> str | None:
    """For a local sqlite store, keep artifacts in ``mlartifacts/`` beside the database file."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :]).resolve()
        return (db.parent / "mlartifacts").as_uri()
    return None


_WAL_ENABLED = False


def enable_sqlite_wal() -> None:
    """Open SQLite stores in WAL mode with ``synchronous=NORMAL``.

    MLflow's SQLite store commits every call with a full fsync, which makes logging a
    trial cost ~90 ms; in WAL mode it costs ~30 ms, and the MLflow UI can read the store
    while a job writes to it. A crash of the process loses nothing; only a power loss can
    lose the last transactions. Applies to SQLite connections opened from now on in
    this process (the SQLAlchemy ``connect`` event on every engine).
    """
    global _WAL_ENABLED
    if _WAL_ENABLED:
        return
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _wal(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    _WAL_ENABLED = True


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on ``uri`` (with the ``mlflow`` beside this Python)."""
    beside = Path(sys.executable).parent / "mlflow"
    mlflow_cmd = str(beside) if beside.exists() else "mlflow"
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :]).resolve()
        return f"{mlflow_cmd} ui --backend-store-uri sqlite:///{db} --port 5000"
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"{mlflow_cmd} ui --backend-store-uri {uri} --port 5000"


@dataclass
class Op:
    """One write to a child run: ``create``, ``batch`` (metrics, params, tags) or ``end``.

    ``logged`` writes nothing: it marks trial ``trial_id`` as completely logged, once every
    write before it succeeded (for reporters whose child runs outlive a trial).
    """

    kind: str
    trial_id: int
    ts: int = 0
    metrics: list[Metric] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    tags: list[RunTag] = field(default_factory=list)
    status: str = ""
    attempted: bool = False


def plan(events: list[tuple[str, Any]]) -> list[Op]:
    """Turn queued events into writes: creations first, one batch per run, then run ends, then ``logged`` marks."""
    creates: list[Op] = []
    batches: dict[int, Op] = {}
    ends: list[Op] = []
    marks: list[Op] = []

    def batch(trial_id: int) -> Op:
        return batches.setdefault(trial_id, Op("batch", trial_id))

    for kind, data in events:
        if kind == "start":
            trial_id, params, started = data
            creates.append(Op("create", trial_id, ts=started))
            batch(trial_id).params.extend(Param(k, short(v)) for k, v in params.items())
        elif kind == "report":
            trial_id, epoch, values, ts = data
            batch(trial_id).metrics.extend(Metric(k, v, ts, epoch) for k, v in values.items())
        elif kind == "tags":
            trial_id, tags = data
            batch(trial_id).tags.extend(RunTag(k, v) for k, v in tags.items())
        elif kind == "end":
            trial_id, status, final, value, reason, node, device, ts = data
            op = batch(trial_id)
            op.metrics.extend(Metric(k, v, ts, 0) for k, v in final.items())
            if value is not None:
                op.metrics.append(Metric("objective", value, ts, 0))
            op.tags += [
                RunTag("crucible.status", status.value),
                RunTag("crucible.node", node or "?"),
                RunTag("crucible.device", device or "?"),
            ]
            if reason:
                op.tags.append(RunTag("crucible.reason", reason[:5000]))
            ends.append(Op("end", trial_id, ts=ts, status=RUN_STATUS[status]))
        elif kind == "logged":
            marks.append(Op("logged", data))
    return creates + list(batches.values()) + ends + marks


def brief(err: BaseException) -> str:
    """Exception type and first line, for one-line log messages."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


def short(value: Any) -> str:
    """A param value as MLflow stores it: a string of at most 6000 characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def ms(seconds: float) -> int:
    """Unix seconds to MLflow's milliseconds."""
    return int(seconds * 1000)


def flat_numbers(stats: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as ``a.b`` metric names (lists and text are left out)."""
    out: dict[str, float] = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_numbers(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out
