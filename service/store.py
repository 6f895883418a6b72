"""Durable job, trial and checkpoint records (SQLAlchemy: a sqlite file by default, PostgreSQL by URL).

The store is the service's source of truth. Every change that the job loop makes is one
transaction: a trial's start is stored with the strategy's checkpoint that handed it out,
and a trial's end with the checkpoint that took it in, so after a crash the strategy, the
trials table and the job row agree. On restart, jobs that were ``queued`` or ``running``
resume from their checkpoint; trials that were ``running`` are dispatched again with the
same id and params.

A trial row also says whether its MLflow child run is complete (``logged``), so a resumed
job re-logs only what the crash cut off, to the child run it already has.

Checkpoints are written at every trial start and end, so their bulk is stored once: each
string of at least :data:`BLOB_MIN_CHARS` characters in a checkpoint (a NEAT population, an
annealing replica's weights) goes to a blob table under its SHA-256 and the job row keeps a
reference; a write inserts only new blobs and drops the ones no longer referenced, in the
same transaction. Job rows are read without their checkpoint; :meth:`Store.checkpoint` reads
it whole.

Example:
    >>> store = Store("sqlite://")
    >>> job_id = store.create_job("demo", "alice", {"name": "demo"})
    >>> store.job(job_id)["state"]
    'queued'
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

_meta = sa.MetaData()

jobs = sa.Table(
    "crucible_jobs",
    _meta,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("owner", sa.String(200), nullable=False, index=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("started", sa.Float),
    sa.Column("finished", sa.Float),
    sa.Column("stop_reason", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("mlflow_run_id", sa.String(64)),
    sa.Column("checkpoint", sa.Text),
)

trials = sa.Table(
    "crucible_trials",
    _meta,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("crucible_jobs.id"), primary_key=True),
    sa.Column("trial_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("metrics", sa.Text, nullable=False, default="{}"),
    sa.Column("reason", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, default=1),
    sa.Column("node", sa.String(200)),
    sa.Column("device", sa.String(16)),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("finished", sa.Float),
    sa.Column("logged", sa.Boolean, nullable=False, default=False),
)


blobs = sa.Table(
    "crucible_checkpoint_blobs",
    _meta,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("crucible_jobs.id"), primary_key=True),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),
)

BLOB_MIN_CHARS = 8192
"""Checkpoint strings at least this long are stored once, as blobs, and referenced."""
_BLOB_REF = "__crucible_blob__"
_JOB_COLUMNS = [c for c in jobs.c if c.name != "checkpoint"]


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs["poolclass"] = StaticPool
        engine = sa.create_engine(url, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True, default=str)


class Store:
    """Jobs, trials and strategy checkpoints in one SQL database.

    Args:
        url: SQLAlchemy URL (``sqlite:///path/crucible.db``, ``postgresql://user@host/db``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        self._digests: dict[int, tuple[str, str]] = {}
        _meta.create_all(self.engine)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # ------------------------------------------------------------------ jobs
    def create_job(self, name: str, owner: str, spec: dict[str, Any]) -> str:
        """Store a new ``queued`` job and return its id."""
        job_id = uuid.uuid4().hex[:12]
        with self.engine.begin() as conn:
            conn.execute(
                jobs.insert().values(
                    id=job_id, name=name, owner=owner, spec=_dumps(spec), state=QUEUED, created=time.time()
                )
            )
        return job_id

    def job(self, job_id: str) -> dict[str, Any] | None:
        """One job row as a dict (``spec`` decoded; the checkpoint is :meth:`checkpoint`'s), or ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*_JOB_COLUMNS).where(jobs.c.id == job_id)).mappings().first()
        return _job_dict(row) if row is not None else None

    def jobs(self, owner: str | None = None, states: frozenset[str] | None = None) -> list[dict[str, Any]]:
        """Job rows, newest first; only ``owner``'s when given, only in ``states`` when given."""
        query = sa.select(*_JOB_COLUMNS).order_by(jobs.c.created.desc())
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if states is not None:
            query = query.where(jobs.c.state.in_(sorted(states)))
        with self.engine.connect() as conn:
            return [_job_dict(row) for row in conn.execute(query).mappings()]

    def checkpoint(self, job_id: str) -> dict[str, Any] | None:
        """The job's latest strategy checkpoint, blobs put back in (``None`` before the first)."""
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(jobs.c.checkpoint).where(jobs.c.id == job_id)).scalar()
            if not text:
                return None
            found = dict(conn.execute(sa.select(blobs.c.digest, blobs.c.data).where(blobs.c.job_id == job_id)).all())
        return _join(json.loads(text), found)

    def _digest(self, text: str) -> str:
        """SHA-256 of a blob; remembered per string object, as frozen chunks come back in every checkpoint."""
        known = self._digests.get(id(text))
        if known is not None and known[0] is text:
            return known[1]
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if len(self._digests) >= 4096:
            self._digests.clear()
        self._digests[id(text)] = (text, digest)  # the string is held: its id cannot be reused meanwhile
        return digest

    def _write_checkpoint(self, conn: sa.Connection, job_id: str, checkpoint: dict[str, Any]) -> None:
        """Within ``conn``'s transaction: new blobs in, unreferenced ones out, the job row's reference document."""
        found: dict[str, str] = {}
        document = _split(checkpoint, found, self._digest)
        held = set(conn.execute(sa.select(blobs.c.digest).where(blobs.c.job_id == job_id)).scalars())
        new = [{"job_id": job_id, "digest": d, "data": found[d]} for d in sorted(found.keys() - held)]
        if new:
            conn.execute(blobs.insert(), new)
        stale = held - found.keys()
        if stale:
            conn.execute(blobs.delete().where(blobs.c.job_id == job_id, blobs.c.digest.in_(sorted(stale))))
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(checkpoint=_dumps(document)))

    def update_job(self, job_id: str, **values: Any) -> None:
        """Set columns of a job row (a ``checkpoint`` is stored as :meth:`trial_finished` stores it)."""
        checkpoint = values.pop("checkpoint", None)
        with self.engine.begin() as conn:
            if values:
                conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))
            if checkpoint is not None:
                self._write_checkpoint(conn, job_id, checkpoint)

    def request_cancel(self, job_id: str) -> bool:
        """Durably mark a job for cancellation; a queued job is cancelled at once.

        Returns:
            False if the job had already ended (nothing changed).
        """
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id)).first()
            if row is None or row.state in TERMINAL:
                return False
            values: dict[str, Any] = {"cancel_requested": True}
            if row.state == QUEUED:
                values.update(state=CANCELLED, finished=time.time(), stop_reason="cancelled")
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))
        return True

    # ------------------------------------------------------------------ trials
    def trial_started(
        self, job_id: str, trial_id: int, params: dict[str, Any], checkpoint: dict[str, Any] | None
    ) -> None:
        """Store a dispatched trial (or count one more attempt of a re-queued one) with the checkpoint."""
        now = time.time()
        with self.engine.begin() as conn:
            updated = conn.execute(
                trials.update()
                .where(trials.c.job_id == job_id, trials.c.trial_id == trial_id)
                .values(attempts=trials.c.attempts + 1, status="running", started=now)
            ).rowcount
            if not updated:
                conn.execute(
                    trials.insert().values(
                        job_id=job_id,
                        trial_id=trial_id,
                        params=_dumps(params),
                        status="running",
                        metrics="{}",
                        attempts=1,
                        started=now,
                        logged=False,
                    )
                )
            if checkpoint is not None:
                self._write_checkpoint(conn, job_id, checkpoint)

    def trial_finished(self, job_id: str, record: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        """Store a trial's end (``TrialRecord.to_dict()`` form) with the checkpoint that took it in."""
        with self.engine.begin() as conn:
            conn.execute(
                trials.update()
                .where(trials.c.job_id == job_id, trials.c.trial_id == record["trial_id"])
                .values(
                    status=record["status"],
                    value=record["value"],
                    metrics=_dumps(record["metrics"]),
                    reason=record["reason"],
                    node=record["node"],
                    device=record["device"],
                    finished=record["finished"] or time.time(),
                )
            )
            if checkpoint is not None:
                self._write_checkpoint(conn, job_id, checkpoint)

    def mark_logged(self, job_id: str, trial_ids: list[int]) -> None:
        """Record that these trials' MLflow child runs are complete."""
        if not trial_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                trials.update().where(trials.c.job_id == job_id, trials.c.trial_id.in_(trial_ids)).values(logged=True)
            )

    def trials(self, job_id: str) -> list[dict[str, Any]]:
        """A job's trial rows in id order (JSON columns decoded)."""
        query = trials.select().where(trials.c.job_id == job_id).order_by(trials.c.trial_id)
        with self.engine.connect() as conn:
            return [_trial_dict(row) for row in conn.execute(query).mappings()]


def _job_dict(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["spec"] = json.loads(out["spec"])
    return out


def _split(value: Any, found: dict[str, str], digest: Callable[[str], str]) -> Any:
    """``value`` with every long string replaced by a reference; the strings land in ``found``."""
    if isinstance(value, str) and len(value) >= BLOB_MIN_CHARS:
        key = digest(value)
        found[key] = value
        return {_BLOB_REF: key}
    if isinstance(value, dict):
        return {k: _split(v, found, digest) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split(v, found, digest) for v in value]
    return value


def _join(value: Any, found: dict[str, str]) -> Any:
    """The inverse of :func:`_split`."""
    if isinstance(value, dict):
        if len(value) == 1 and _BLOB_REF in value:
            return found[value[_BLOB_REF]]
        return {k: _join(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, found) for v in value]
    return value


def _trial_dict(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["params"] = json.loads(out["params"])
    out["metrics"] = json.loads(out["metrics"])
    out.pop("job_id")
    return out
