"""Python client of a Crucible service: the verbs of the HTTP API, standard library only.

A laptop needs neither Ray, MLflow nor torch to submit and follow jobs: this module uses
``urllib`` and ``json`` (and PyYAML to read a spec file). Errors are typed: every failure
is an :class:`ApiError` (a :class:`~service.errors.CrucibleError`) carrying the HTTP status
and the server's message; a rejected spec is a :class:`SpecRejected`, which is also a
:class:`~service.errors.SpecError` listing every issue, as a local spec error would.

Example:
    >>> client = Client("http://127.0.0.1:8080", token="...")
    >>> client
    Client(url='http://127.0.0.1:8080')

    A running service is used like this::

        job = client.submit("examples/digits-bayes.yaml")
        job.wait()
        print(job.best())
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from service.errors import CrucibleError, SpecError, SpecIssue
from service.spec import JobSpec

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


# ---------------------------------------------------------------------- errors
class ApiError(CrucibleError):
    """A request to the service failed.

    Attributes:
        status: HTTP status (``None`` when no answer came back).
        detail: The server's message.
        issues: The server's list of problems (422), else empty.
        url: The URL requested.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: str | None = None,
        issues: list[Any] | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.issues = list(issues or [])
        self.url = url


class Unauthorized(ApiError):
    """401: the token is missing or not accepted."""


class NotFound(ApiError):
    """404: no such job, or not one this token may see."""


class PayloadTooLarge(ApiError):
    """413: the request body is over the server's ``max_body_bytes``."""


class ServerError(ApiError):
    """5xx: the service failed; its log has the details."""


class Unreachable(ApiError):
    """No answer: connection refused, timed out, or the name does not resolve."""


class SpecRejected(ApiError, SpecError):
    """422: the server refused the spec (or the JSON); ``issues`` lists every problem.

    It is also a :class:`~service.errors.SpecError`, so ``except SpecError`` catches a bad
    spec the same way embedded and remote.
    """

    def __init__(self, detail: str, issues: list[dict[str, Any]], *, url: str | None = None) -> None:
        spec_issues = [_spec_issue(i) for i in issues] or [SpecIssue("<spec>", None, detail)]
        SpecError.__init__(self, spec_issues)
        lines = "\n".join(f"  - {i}" for i in spec_issues)
        self.args = (f"{detail} ({len(spec_issues)} problem(s)):\n{lines}",)
        self.status, self.detail, self.url = 422, detail, url


def _spec_issue(raw: Any) -> SpecIssue:
    if not isinstance(raw, dict):
        return SpecIssue("<spec>", raw, "was rejected")
    return SpecIssue(str(raw.get("path", "<spec>")), raw.get("value"), str(raw.get("allowed", raw.get("message", ""))))


_BY_STATUS: dict[int, type[ApiError]] = {401: Unauthorized, 404: NotFound, 413: PayloadTooLarge}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: urllib would resend the bearer token to wherever they point."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        return None


# ---------------------------------------------------------------------- client
class Client:
    """A Crucible service, seen from Python.

    Args:
        url: Base URL of the service, e.g. ``http://head:8080``.
        token: API token (``crucible serve`` prints where its generated token is).
        timeout: Seconds to wait for each HTTP answer.

    Example:
        >>> Client("http://head:8080/", token="t").url
        'http://head:8080'
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 30) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CrucibleError(f"`url` must be an http(s) URL like 'http://head:8080', but got {url!r}.")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token = token
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    # ------------------------------------------------------------------ verbs
    def submit(self, spec: JobSpec | Mapping[str, Any] | str | os.PathLike[str]) -> JobHandle:
        """Submit a job; the server validates it and queues it.

        Args:
            spec: A :class:`JobSpec`, its dict (YAML) form, or the path of a YAML file.

        Returns:
            A handle on the queued job.

        Raises:
            SpecRejected: The server refused the spec; ``issues`` lists every problem.
            CrucibleError: The spec holds a Python callable (those only work embedded).
        """
        data = _spec_data(spec)
        try:
            body = json.dumps(data, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as err:
            raise CrucibleError(f"the spec cannot be sent as JSON: {err}") from None
        summary = self._request("POST", "/jobs", body)
        return JobHandle(self, str(summary["id"]), summary)

    def jobs(self) -> list[JobHandle]:
        """The jobs this token may see (all of them for an admin token), newest first."""
        return [JobHandle(self, str(s["id"]), s) for s in self._request("GET", "/jobs")]

    def job(self, job_id: str) -> JobHandle:
        """A handle on one job; raises :class:`NotFound` if there is none (or not yours)."""
        handle = JobHandle(self, job_id)
        handle.status()
        return handle

    def health(self) -> dict[str, Any]:
        """The service's liveness facts (needs no token)."""
        return self._request("GET", "/health", auth=False)

    # --------------------------------------------------------------- plumbing
    def _request(self, method: str, path: str, body: bytes | None = None, *, auth: bool = True) -> Any:
        url = self.url + path
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if auth and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise _api_error(method, url, err.code, _read(err)) from None
        except (urllib.error.URLError, OSError) as err:
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
            hint = ""
            if body is not None and len(body) > 1_000_000 and isinstance(reason, ConnectionError):
                hint = f" (while sending {len(body)} bytes: the server may refuse a body that large)"
            raise Unreachable(f"cannot reach {url}: {reason}{hint}", url=url) from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise ApiError(f"{method} {url}: the answer is not JSON", status=200, url=url) from None


def _read(err: urllib.error.HTTPError) -> bytes:
    try:
        return err.read()
    except OSError:
        return b""


def _api_error(method: str, url: str, status: int, raw: bytes) -> ApiError:
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        payload = {}
    payload = payload if isinstance(payload, dict) else {}
    detail = str(payload.get("detail") or f"HTTP {status}")
    issues = payload.get("issues") if isinstance(payload.get("issues"), list) else []
    if status == 422:
        return SpecRejected(detail, issues, url=url)
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return kind(f"{method} {url}: {status} {detail}", status=status, detail=detail, issues=issues, url=url)


def _spec_data(spec: Any) -> dict[str, Any]:
    if isinstance(spec, JobSpec):
        data = spec.to_dict()
        fn = spec.objective.function
    elif isinstance(spec, Mapping):
        data = dict(spec)
        objective = data.get("objective")
        fn = objective.get("function") if isinstance(objective, Mapping) else None
    elif isinstance(spec, str | os.PathLike):
        with open(spec, encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh)
            except yaml.YAMLError as err:
                raise SpecError([SpecIssue("<file>", os.fspath(spec), f"must be valid YAML ({err})")]) from None
        if not isinstance(data, dict):
            raise SpecError([SpecIssue("<spec>", data, f"must be a mapping of fields (in {Path(spec)})")])
        return data
    else:
        raise CrucibleError(f"`spec` must be a JobSpec, a dict or a path to a YAML file, but got {spec!r}.")
    if fn is not None and not isinstance(fn, str):
        raise CrucibleError(
            f"`objective.function` is a Python callable ({fn!r}); callables only work embedded "
            "(service.run). For a remote job give an import path 'pkg.module:function' "
            "in a module the server allows."
        )
    return data


# ------------------------------------------------------------------ job handle
class JobHandle:
    """One job on the service: follow it, read its results, cancel it.

    Attributes:
        id: The job's id.
        summary: The last summary fetched (``{}`` until the first fetch).
    """

    def __init__(self, client: Client, job_id: str, summary: dict[str, Any] | None = None) -> None:
        self._client = client
        self.id = job_id
        self.summary: dict[str, Any] = dict(summary or {})

    def __repr__(self) -> str:
        name, state = self.summary.get("name"), self.summary.get("state")
        return f"JobHandle(id={self.id!r}, name={name!r}, state={state!r})"

    @property
    def _path(self) -> str:
        return "/jobs/" + urllib.parse.quote(self.id, safe="")

    def detail(self) -> dict[str, Any]:
        """The summary plus ``spec`` and ``trials``."""
        detail = self._client._request("GET", self._path)
        self.summary = {k: v for k, v in detail.items() if k not in ("spec", "trials")}
        return detail

    def status(self) -> dict[str, Any]:
        """The job's current summary (state, counts, best, ...)."""
        self.detail()
        return self.summary

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> dict[str, Any]:
        """Block until the job is succeeded, failed or cancelled; return its summary.

        Raises:
            TimeoutError: ``timeout`` seconds passed first (names the job and its last state).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            summary = self.status()
            if summary.get("state") in TERMINAL_STATES:
                return summary
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {self.id} ({summary.get('name')!r}) still {summary.get('state')!r} after {timeout:g} s"
                )
            left = poll if deadline is None else min(poll, max(0.0, deadline - time.monotonic()))
            time.sleep(left)

    def best(self) -> dict[str, Any] | None:
        """The best trial so far (``trial_id``, ``value``, ``params``, ``metrics``), or ``None``."""
        return self.status().get("best")

    def trials(self) -> list[dict[str, Any]]:
        """Every trial of the job so far."""
        return self._client._request("GET", self._path + "/trials")

    def cancel(self) -> dict[str, Any]:
        """Ask the service to cancel the job; returns its summary (a finished job is unchanged)."""
        self.summary = self._client._request("POST", self._path + "/cancel")
        return self.summary
