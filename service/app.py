"""The Crucible HTTP API: submit, list, inspect and cancel jobs on a running service.

``create_app(backend, config, tokens)`` builds a FastAPI app over any *backend* with the
five methods of :class:`Backend` (the real one is ``service.scheduler.Scheduler``);
``serve(config)`` starts that scheduler and runs the app under uvicorn.

Every route but ``/health`` (and the OpenAPI schema) needs ``Authorization: Bearer <token>``.
A token sees its own jobs; an admin token sees all. Bad input never gets a 5xx: an oversized
body gets 413, malformed JSON or an invalid spec 422 listing every problem, and nothing
reaches the backend until the spec is valid. Remote specs may only name ``objective.function``
import paths under ``config.allowed_modules``; the app itself never imports them.

Example:
    >>> from service.config import ServerConfig, TokenInfo
    >>> class Nothing:
    ...     def health(self): return {"ray": False}
    >>> app = create_app(Nothing(), ServerConfig(state_dir="/tmp/c"), [TokenInfo("t" * 16, "me")])
    >>> sorted({r.path for r in app.routes if r.path.startswith(("/jobs", "/health"))})
    ['/health', '/jobs', '/jobs/{job_id}', '/jobs/{job_id}/cancel', '/jobs/{job_id}/trials']
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.bodylimit import BodyLimit
from service.config import ServerConfig, TokenInfo, ensure_tokens, match_token
from service.errors import SpecError, SpecIssue
from service.spec import JobSpec

log = logging.getLogger(__name__)

MAX_DEPTH = 32  # of a request's JSON: deep enough for any spec, shallow enough for recursive code
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class Backend(Protocol):
    """What the API fronts; ``service.scheduler.Scheduler`` is the real one."""

    def submit(self, spec: JobSpec, owner: str) -> dict[str, Any]:
        """Store a validated job as queued; return its summary."""

    def list_jobs(self, owner: str | None) -> list[dict[str, Any]]:
        """Summaries, newest first; ``owner=None`` lists everyone's."""

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        """Detail (summary + ``spec`` + ``trials``), or ``None`` if unknown."""

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Request a durable cancel; return the summary (a terminal job is unchanged)."""

    def health(self) -> dict[str, Any]:
        """Liveness facts, e.g. ``{"ray": True, "jobs_running": 2, "jobs_queued": 0}``."""


# ---------------------------------------------------------------- schema (docs)
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Counts(_Open):
    """Trial counts of a job."""

    budget: int
    ok: int
    failed: int
    pruned: int
    running: int


class Best(_Open):
    """The best trial so far."""

    trial_id: int
    value: float
    params: dict[str, Any]
    metrics: dict[str, Any]


class JobSummary(_Open):
    """One job, as listed."""

    id: str
    name: str
    owner: str
    state: str = Field(description="queued | running | succeeded | failed | cancelled")
    strategy: str
    metric: str
    mode: str = Field(description="min | max")
    created: float
    started: float | None
    finished: float | None
    stop_reason: str | None
    error: str | None
    counts: Counts
    best: Best | None
    mlflow_run_id: str | None
    tracking_uri: str


class Trial(_Open):
    """One trial of a job."""

    trial_id: int
    params: dict[str, Any]
    status: str = Field(description="running | ok | failed | pruned")
    value: float | None
    metrics: dict[str, Any]
    reason: str | None
    attempts: int
    node: str | None
    device: str | None
    started: float | None
    finished: float | None


class JobDetail(JobSummary):
    """One job with its spec and trials."""

    spec: dict[str, Any]
    trials: list[Trial]


class Issue(BaseModel):
    """One problem with a submitted spec."""

    path: str = Field(description="dotted field path, e.g. space.lr.low")
    value: Any = Field(description="the value found there (repr'd when not JSON)")
    allowed: str = Field(description="what would have been accepted")
    message: str


class Rejected(BaseModel):
    """A request the API refused because of its content."""

    detail: str
    issues: list[Issue]


class Detail(BaseModel):
    """An error with a message only."""

    detail: str


_SPEC_FIELDS = {
    "string": ("name", "strategy", "task", "model"),
    "integer": ("seed",),
    "object": ("objective", "budget", "space", "fixed", "pruning", "resources", "tracking", "strategy_options"),
}
_SPEC_SCHEMA = {
    "type": "object",
    "description": "A job spec, the same shape as the YAML form (JobSpec.to_dict()).",
    "required": ["name"],
    "properties": {k: {"type": t} for t, keys in _SPEC_FIELDS.items() for k in keys},
}
_SPEC_BODY = {"required": True, "content": {"application/json": {"schema": _SPEC_SCHEMA}}}
_NOT_FOUND = {404: {"model": Detail, "description": "no such job (or not yours)"}}
_SUBMIT_ERRORS = {
    413: {"model": Detail, "description": "body too large"},
    422: {"model": Rejected, "description": "malformed JSON or invalid spec; every issue listed"},
}


def _docs(summary: str, model: Any, errors: dict[int, Any] | None = None, ok: int = 200) -> dict[str, Any]:
    """OpenAPI facts of a jobs route: its answer's model and its error answers."""
    responses = {
        ok: {"model": model},
        401: {"model": Detail, "description": "missing or wrong token"},
        **(errors or {}),
    }
    return {"tags": ["jobs"], "summary": summary, "response_model": None, "responses": responses}


# --------------------------------------------------------------- JSON helpers
def json_safe(value: Any, limit: int = 1000) -> Any:
    """``value`` if it is finite JSON (and short), else a (truncated) ``repr``."""
    try:
        if len(json.dumps(value, allow_nan=False)) <= limit:
            return value
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        text = repr(value)
    except RecursionError:
        return "<nested too deeply>"
    return text if len(text) <= limit else text[: limit // 5] + "..."


def _finite(value: Any) -> Any:
    """Replace NaN/inf (which JSON cannot carry) with ``None``, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """JSON that never fails on NaN/inf or odd types coming from the backend."""

    def render(self, content: Any) -> bytes:
        """Encode ``content`` as strict JSON."""
        return json.dumps(_finite(content), allow_nan=False, default=str, separators=(",", ":")).encode("utf-8")


def issue_json(issue: SpecIssue) -> dict[str, Any]:
    """The JSON form of one spec issue."""
    return {"path": issue.path, "value": json_safe(issue.value), "allowed": issue.allowed, "message": str(issue)}


def _rejected(detail: str, issues: Sequence[SpecIssue]) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": detail, "issues": [issue_json(i) for i in issues]}, status_code=422)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Strict JSON: no NaN/Infinity, no out-of-range numbers, nesting bounded; raises ValueError."""
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        data, max_depth = None, -1
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise ValueError(f"JSON is nested more than {MAX_DEPTH} levels deep")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return data


# ---------------------------------------------------------------- validation
def check_spec(data: Any, config: ServerConfig) -> tuple[JobSpec | None, list[SpecIssue]]:
    """Validate a submitted spec and the server's import-path policy; never imports it.

    Returns:
        ``(spec, [])`` when it is valid, else ``(None, every issue found)``.
    """
    spec: JobSpec | None = None
    issues: list[SpecIssue] = []
    try:
        spec = JobSpec.from_dict(data)
    except SpecError as err:
        issues = list(err.issues)
    except Exception as err:  # noqa: BLE001 - from_dict should raise SpecError; never 500 on bad input
        log.warning("JobSpec.from_dict raised %s instead of SpecError", type(err).__name__, exc_info=True)
        issues = [SpecIssue("<spec>", None, f"must be a valid job spec ({type(err).__name__}: {err})")]
    for path, fn in _import_paths(data):  # code a worker would import: only from allowed modules
        if not isinstance(fn, str) or any(i.path == path for i in issues):
            continue
        if not _IMPORT_PATH.match(fn):
            issues.append(SpecIssue(path, fn, "must be an import path 'pkg.module:function'"))
        elif not config.admits(fn):
            allowed = ", ".join(map(repr, config.allowed_modules)) or "none on this server"
            why = f"must name a function in an allowed module (allowed_modules: {allowed})"
            issues.append(SpecIssue(path, fn, why))
    return (None, issues) if issues else (spec, [])


def _import_paths(data: Any) -> list[tuple[str, Any]]:
    """The spec's fields that name code by import path: the objective, and a NEAT task's fitness."""
    if not isinstance(data, dict):
        return []
    objective, fixed = data.get("objective"), data.get("fixed")
    found = [("objective.function", objective.get("function") if isinstance(objective, dict) else None)]
    if isinstance(fixed, dict) and "function" in fixed:
        found.append(("fixed.function", fixed["function"]))
    return found


# ------------------------------------------------------------------------ auth
_bearer = HTTPBearer(auto_error=False, description="Crucible API token: `Authorization: Bearer <token>`")


async def _caller(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> TokenInfo:
    """The token entry of the request, or 401 (the same answer for a missing and a wrong token)."""
    info = match_token(request.app.state.tokens, creds.credentials) if creds is not None else None
    if info is None:
        raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
    return info


Caller = Annotated[TokenInfo, Depends(_caller)]


# ------------------------------------------------------------------------ app
def create_app(backend: Backend, config: ServerConfig, tokens: Sequence[TokenInfo] | None = None) -> FastAPI:
    """Build the HTTP API over ``backend``.

    Args:
        backend: Any object with the :class:`Backend` methods.
        config: Server config (allowed modules, body limit).
        tokens: Accepted tokens; ``None`` reads them with :func:`service.config.ensure_tokens`.

    Returns:
        The FastAPI app (an ASGI app; its schema is at ``/openapi.json``).
    """
    accepted = tuple(ensure_tokens(config) if tokens is None else tokens)
    if not accepted:
        raise ValueError("create_app needs at least one token")
    app = FastAPI(
        title="Crucible",
        version="0.1.0",
        description="Distributed hyperparameter search on Ray, logged to MLflow.",
        default_response_class=SafeJSONResponse,
    )
    app.state.backend = backend
    app.state.config = config
    app.state.tokens = accepted
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await run_in_threadpool(fn, *args)
        except Exception:
            log.exception("backend %s failed", getattr(fn, "__name__", fn))
            raise HTTPException(500, "internal error") from None

    async def owned(job_id: str, who: TokenInfo) -> dict[str, Any]:
        job = await call(backend.get_job, job_id)
        if not isinstance(job, dict) or not (who.admin or job.get("owner") == who.owner):
            raise HTTPException(404, "job not found")
        return job

    @app.get("/health", tags=["service"], summary="Liveness (no token needed)")
    async def health() -> SafeJSONResponse:
        """``{"status": "ok", ...backend facts}``; 503 when the backend cannot answer."""
        try:
            facts = await run_in_threadpool(backend.health)
        except Exception:
            log.exception("backend health failed")
            return SafeJSONResponse({"status": "error", "detail": "backend unavailable"}, status_code=503)
        return SafeJSONResponse({**dict(facts), "status": "ok"})

    @app.post(
        "/jobs",
        status_code=201,
        openapi_extra={"requestBody": _SPEC_BODY},
        **_docs("Submit a job spec", JobSummary, _SUBMIT_ERRORS, ok=201),
    )
    async def submit(request: Request, who: Caller) -> SafeJSONResponse:
        """Validate the spec (JSON, the YAML form) and queue it under the caller's name."""
        try:
            data = parse_json(await request.body())
        except ValueError as err:
            return _rejected("invalid JSON body", [SpecIssue("<body>", None, f"must be a JSON object ({err})")])
        if not isinstance(data, dict):
            return _rejected("invalid job spec", [SpecIssue("<spec>", data, "must be a mapping of fields")])
        spec, issues = check_spec(data, config)
        if spec is None:
            return _rejected("invalid job spec", issues)
        summary = await call(backend.submit, spec, who.owner)
        job_id = str(summary.get("id", "")) if isinstance(summary, dict) else ""
        return SafeJSONResponse(summary, status_code=201, headers={"Location": f"/jobs/{job_id}"})

    @app.get("/jobs", **_docs("List jobs (yours; all for an admin)", list[JobSummary]))
    async def list_jobs(who: Caller) -> SafeJSONResponse:
        """Job summaries, newest first."""
        return SafeJSONResponse(await call(backend.list_jobs, None if who.admin else who.owner))

    @app.get("/jobs/{job_id}", **_docs("One job: summary, spec and trials", JobDetail, _NOT_FOUND))
    async def get_job(job_id: str, who: Caller) -> SafeJSONResponse:
        """The job's detail; 404 for unknown jobs and other owners' jobs alike."""
        return SafeJSONResponse(await owned(job_id, who))

    @app.get("/jobs/{job_id}/trials", **_docs("A job's trials", list[Trial], _NOT_FOUND))
    async def trials(job_id: str, who: Caller) -> SafeJSONResponse:
        """Every trial of the job so far."""
        return SafeJSONResponse(list((await owned(job_id, who)).get("trials") or []))

    @app.post("/jobs/{job_id}/cancel", **_docs("Cancel a job", JobSummary, _NOT_FOUND))
    async def cancel(job_id: str, who: Caller) -> SafeJSONResponse:
        """Request a cancel (durable); a finished job is returned unchanged."""
        await owned(job_id, who)
        return SafeJSONResponse(await call(backend.cancel, job_id))

    return app


# ---------------------------------------------------------------------- serve
def serve(config: ServerConfig) -> None:
    """Run the service: the scheduler on Ray, and the API under uvicorn until interrupted.

    Example:
        $ crucible serve --config server.yaml
    """
    import uvicorn

    from service.scheduler import Scheduler

    tokens = ensure_tokens(config)
    app_placeholder: Any = None
    uv_config = uvicorn.Config(app_placeholder, host=config.host, port=config.port, log_level="warning")
    sock = uv_config.bind_socket()  # bind first: a busy port fails before Ray starts
    port = sock.getsockname()[1]
    scheduler = Scheduler(
        store_url=config.store_url,
        ray_address=config.ray_address,
        num_cpus=config.num_cpus,
        tracking_uri=config.tracking_uri,
        max_trial_retries=config.max_trial_retries,
    )
    try:
        scheduler.start()
        uv_config.app = create_app(scheduler, config, tokens)
        host = f"[{config.host}]" if ":" in config.host else config.host
        where = "tokens from the config" if config.tokens else f"token in {config.token_path}"
        print(f"crucible: serving http://{host}:{port} ({where})", flush=True)
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            print("crucible: warning: plain HTTP beyond loopback; put a TLS proxy in front", file=sys.stderr)
        uvicorn.Server(uv_config).run(sockets=[sock])
    finally:
        sock.close()
        scheduler.shutdown()
