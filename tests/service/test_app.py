"""The HTTP API, served for real by uvicorn over a FakeBackend: auth, ownership, limits, validation."""

from __future__ import annotations

import copy
import http.client
import json
import logging
import sys
import types
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.app import create_app, serve
from service.config import ServerConfig
from service.errors import SpecError
from service.spec import JobSpec
from tests.service.fakes import ADMIN, ALICE, BOB, CUSTOM_SPEC, GOOD_SPEC, fake_api


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with fake_api(str(tmp_path_factory.mktemp("state"))) as running:
        yield running


@pytest.fixture(autouse=True)
def _healthy_backend(api):
    api.backend.fail_with = None
    yield
    api.backend.fail_with = None


def call(api, method: str, path: str, body: Any = None, token: str | None = None, headers=None):
    """(status, parsed JSON or raw bytes, headers) of one raw urllib request."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(api.url + path, data=data, method=method, headers=dict(headers or {}))
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw, hdrs = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as err:
        status, raw, hdrs = err.code, err.read(), err.headers
    try:
        return status, json.loads(raw), hdrs
    except ValueError:
        return status, raw, hdrs


def submit(api, spec=GOOD_SPEC, token=ALICE.token) -> dict:
    status, body, _ = call(api, "POST", "/jobs", spec, token)
    assert status == 201, body
    return body


# ------------------------------------------------------------------------ auth
def test_health_needs_no_token(api):
    status, body, _ = call(api, "GET", "/health")
    assert status == 200
    assert body["status"] == "ok" and body["ray"] is True and "jobs_queued" in body


def test_health_answers_503_when_the_backend_cannot(api):
    api.backend.fail_with = RuntimeError("ray is gone")
    status, body, _ = call(api, "GET", "/health")
    assert status == 503 and body["status"] == "error" and "ray is gone" not in json.dumps(body)


ROUTES = [
    ("GET", "/jobs"),
    ("POST", "/jobs"),
    ("GET", "/jobs/abc"),
    ("GET", "/jobs/abc/trials"),
    ("POST", "/jobs/abc/cancel"),
]
BAD_AUTH = [
    None,
    "Bearer wrong-token-0123456789",
    "Basic " + ALICE.token,
    "Bearer",
    ALICE.token,
    "Bearer " + ALICE.token[:-1],
]


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("auth", BAD_AUTH, ids=["none", "wrong", "basic", "empty", "no-scheme", "prefix"])
def test_every_protected_route_answers_401(api, method, path, auth):
    n = len(api.backend.submitted)
    headers = {} if auth is None else {"Authorization": auth}
    status, body, hdrs = call(api, method, path, GOOD_SPEC if method == "POST" else None, headers=headers)
    assert status == 401
    assert body == {"detail": "unauthorized"}
    assert hdrs["WWW-Authenticate"] == "Bearer"
    assert len(api.backend.submitted) == n


# ------------------------------------------------------------------- ownership
def test_owners_see_only_their_jobs_and_admin_sees_all(api):
    a = submit(api, token=ALICE.token)
    b = submit(api, token=BOB.token)
    assert a["owner"] == "alice" and b["owner"] == "bob" and a["state"] == "queued"
    assert api.backend.submitted[-2][1] == "alice"
    ids = lambda tok: {j["id"] for j in call(api, "GET", "/jobs", token=tok)[1]}  # noqa: E731
    assert a["id"] in ids(ALICE.token) and b["id"] not in ids(ALICE.token)
    assert b["id"] in ids(BOB.token) and a["id"] not in ids(BOB.token)
    assert {a["id"], b["id"]} <= ids(ADMIN.token)
    status, detail, _ = call(api, "GET", f"/jobs/{a['id']}", token=ADMIN.token)
    assert status == 200 and detail["spec"]["name"] == "fake-job" and detail["trials"] == []


@pytest.mark.parametrize("method,suffix", [("GET", ""), ("GET", "/trials"), ("POST", "/cancel")])
def test_another_owners_job_is_not_found_just_like_an_unknown_one(api, method, suffix):
    a = submit(api, token=ALICE.token)
    theirs = call(api, method, f"/jobs/{a['id']}{suffix}", token=BOB.token)
    unknown = call(api, method, f"/jobs/nope{suffix}", token=BOB.token)
    assert theirs[0] == unknown[0] == 404
    assert theirs[1] == unknown[1] == {"detail": "job not found"}
    assert a["id"] not in api.backend.cancelled


def test_cancel_by_owner_and_by_admin_and_of_a_finished_job(api):
    a, b = submit(api), submit(api)
    status, body, _ = call(api, "POST", f"/jobs/{a['id']}/cancel", token=ALICE.token)
    assert status == 200 and body["state"] == "cancelled" and "spec" not in body
    status, body, _ = call(api, "POST", f"/jobs/{b['id']}/cancel", token=ADMIN.token)
    assert status == 200 and body["state"] == "cancelled"
    c = submit(api)
    api.backend.finish(c["id"])
    status, body, _ = call(api, "POST", f"/jobs/{c['id']}/cancel", token=ALICE.token)
    assert status == 200 and body["state"] == "succeeded"


def test_trials_and_detail_carry_backend_data_with_nan_as_null(api):
    a = submit(api)
    api.backend.finish(a["id"])
    status, trials, _ = call(api, "GET", f"/jobs/{a['id']}/trials", token=ALICE.token)
    assert status == 200 and [t["status"] for t in trials] == ["ok", "pruned"]
    assert trials[1]["metrics"] == {"val_loss": None}  # NaN is not JSON: sent as null, not a 500
    status, detail, _ = call(api, "GET", f"/jobs/{a['id']}", token=ALICE.token)
    assert detail["best"]["value"] == pytest.approx(0.93) and detail["counts"]["pruned"] == 1


def test_submit_answers_201_with_location(api):
    status, body, hdrs = call(api, "POST", "/jobs", GOOD_SPEC, ALICE.token)
    assert status == 201 and hdrs["Location"] == f"/jobs/{body['id']}"
    spec, owner = api.backend.submitted[-1]
    assert owner == "alice" and spec == JobSpec.from_dict(GOOD_SPEC)


# ---------------------------------------------------------------- body limits
def big_spec(n: int) -> dict:
    return {**GOOD_SPEC, "strategy_options": {"pad": "x" * n}}


def test_oversized_body_with_content_length_gets_413(api):
    n = len(api.backend.submitted)
    status, body, _ = call(api, "POST", "/jobs", big_spec(30_000), ALICE.token)
    assert status == 413 and "20000" in body["detail"]
    status, _, _ = call(api, "POST", "/jobs", big_spec(1_000_000), ALICE.token)
    assert status == 413
    assert len(api.backend.submitted) == n


def raw_request(api, method: str, path: str, chunks: list[bytes] | None, headers: dict) -> tuple[int, bytes]:
    parts = urlsplit(api.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        if chunks is None:
            conn.request(method, path, headers=headers)
        else:
            conn.request(method, path, body=iter(chunks), headers=headers, encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_oversized_chunked_body_gets_413(api):
    n = len(api.backend.submitted)
    head = {
        "Authorization": f"Bearer {ALICE.token}",
        "Content-Type": "application/json",
        "Transfer-Encoding": "chunked",
    }
    status, raw = raw_request(api, "POST", "/jobs", [b"{" + b" " * 4096] * 10 + [b"}"], head)
    assert status == 413 and b"too large" in raw
    body = json.dumps(GOOD_SPEC).encode()
    status, raw = raw_request(api, "POST", "/jobs", [body[:10], body[10:]], head)
    assert status == 201, raw  # a small chunked body is fine
    assert len(api.backend.submitted) == n + 1


def test_content_length_that_is_not_a_number_is_refused(api):
    parts = urlsplit(api.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.putrequest("POST", "/jobs")
    conn.putheader("Authorization", f"Bearer {ALICE.token}")
    conn.putheader("Content-Length", "-5")
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    assert 400 <= status < 500


# ------------------------------------------------------------------ validation
def test_invalid_spec_lists_every_issue_and_never_reaches_the_backend(api):
    n = len(api.backend.submitted)
    bad = copy.deepcopy(GOOD_SPEC)
    bad["strategy"] = "grid"
    bad["budget"] = {"trials": -1, "parallel": 2}
    bad["space"]["lr"]["low"] = "tiny"
    bad["colour"] = "blue"
    status, body, _ = call(api, "POST", "/jobs", bad, ALICE.token)
    assert status == 422 and body["detail"] == "invalid job spec"
    paths = {i["path"] for i in body["issues"]}
    assert {"strategy", "budget.trials", "space.lr.low", "colour"} <= paths
    for issue in body["issues"]:
        assert set(issue) == {"path", "value", "allowed", "message"} and issue["allowed"]
    assert any(i["path"] == "strategy" and i["value"] == "grid" for i in body["issues"])
    assert len(api.backend.submitted) == n


@pytest.mark.parametrize(
    "function",
    [
        "os:system",
        "subprocess:run",
        "myorg.objectivesevil:train",  # a look-alike of the allowed prefix
        "myorg:train",  # the parent package is not allowed
        "builtins:eval",
        "myorg.objectives.cnn:train;rm",
        "myorg.objectives.cnn:",
    ],
)
def test_objective_function_outside_allowed_modules_is_refused(api, function):
    n = len(api.backend.submitted)
    spec = {**CUSTOM_SPEC, "objective": {**CUSTOM_SPEC["objective"], "function": function}}
    status, body, _ = call(api, "POST", "/jobs", spec, ALICE.token)
    assert status == 422
    assert [i["path"] for i in body["issues"]] == ["objective.function"]
    assert body["issues"][0]["value"] == function
    assert len(api.backend.submitted) == n
    assert function.partition(":")[0] not in sys.modules or function.startswith(("os", "subprocess", "builtins"))


def test_neat_fitness_function_outside_allowed_modules_is_refused(api):
    n = len(api.backend.submitted)
    neat = {"genome": {"num_inputs": 2, "num_outputs": 1}}
    spec = {"name": "evolve", "strategy": "neat", "task": "function", "budget": {"trials": 3},
            "fixed": {"function": "os:system"}, "strategy_options": {"neat": neat}}  # fmt: skip
    status, body, _ = call(api, "POST", "/jobs", spec, ALICE.token)
    assert status == 422
    assert [(i["path"], i["value"]) for i in body["issues"]] == [("fixed.function", "os:system")]
    assert len(api.backend.submitted) == n
    spec["fixed"]["function"] = "myorg.objectives.fit:xor"
    assert submit(api, spec)["metric"] == "fitness"
    assert "myorg" not in sys.modules


@pytest.mark.parametrize(
    "function", ["myorg.objectives.cnn:train", "myorg.objectives:train", "myorg.objectives.a.b:C.f"]
)
def test_objective_function_in_allowed_modules_is_accepted_without_import(api, function):
    spec = {**CUSTOM_SPEC, "objective": {**CUSTOM_SPEC["objective"], "function": function}}
    body = submit(api, spec)
    assert body["metric"] == "loss"
    assert api.backend.submitted[-1][0].objective.function == function
    assert "myorg" not in sys.modules


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"not json",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b"42",
        b"NaN",
        b'{"name": NaN}',
        b'{"seed": 1e400}',
        b"[" * 5000 + b"]" * 5000,
        b'{"name": ' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"name": "x", "fixed": ' + b'{"a":' * 900 + b"1" + b"}" * 901,
        b"\xff\xfe\x00",
        b'{"name": "x", "budget": "lots"}',
        b"{}",
        b'{"name": "x", "task": []}',
    ],
)
def test_malformed_or_non_object_bodies_get_422(api, raw):
    n = len(api.backend.submitted)
    status, body, _ = call(api, "POST", "/jobs", raw, ALICE.token)
    assert status == 422, body
    assert body["issues"] and all("path" in i and "message" in i for i in body["issues"])
    assert len(api.backend.submitted) == n


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": [value]}
    return value


def test_json_nesting_is_bounded(api):
    status, body, _ = call(api, "POST", "/jobs", {**GOOD_SPEC, "strategy_options": nested(20)}, ALICE.token)
    assert status == 422 and body["issues"][0]["path"] == "<body>" and "nested" in body["issues"][0]["message"]
    job = submit(api, {**GOOD_SPEC, "strategy_options": nested(10)})
    status, detail, _ = call(api, "GET", f"/jobs/{job['id']}", token=ALICE.token)
    assert status == 200 and detail["spec"]["strategy_options"] == nested(10)


def test_backend_failure_is_500_without_details(api, caplog):
    api.backend.fail_with = RuntimeError("secret internals at /srv/db")
    with caplog.at_level(logging.ERROR):
        for method, path, body in [("GET", "/jobs", None), ("POST", "/jobs", GOOD_SPEC), ("GET", "/jobs/x", None)]:
            status, answer, _ = call(api, method, path, body, ALICE.token)
            assert status == 500 and answer == {"detail": "internal error"}
    assert "secret internals" in caplog.text  # logged with its traceback, not sent


def test_openapi_schema_documents_the_api(api):
    status, schema, _ = call(api, "GET", "/openapi.json")
    assert status == 200
    assert {"/health", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/trials", "/jobs/{job_id}/cancel"} <= set(
        schema["paths"]
    )
    post = schema["paths"]["/jobs"]["post"]
    assert {"201", "401", "413", "422"} <= set(post["responses"])
    assert "requestBody" in post
    assert {"JobSummary", "JobDetail", "Trial", "Rejected"} <= set(schema["components"]["schemas"])
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


# ------------------------------------------------------------------------ fuzz
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


def _paths(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
    return out


PATHS = _paths({**GOOD_SPEC, **CUSTOM_SPEC, "objective": {**CUSTOM_SPEC["objective"], "x": 1}, "pruning": {"kind": 1}})
DELETE = object()


@st.composite
def mutated_specs(draw) -> dict:
    spec = copy.deepcopy(draw(st.sampled_from([GOOD_SPEC, CUSTOM_SPEC])))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        value = draw(st.one_of(JSON, st.just(DELETE), st.sampled_from(["myorg.objectives.m:f", "os:system", 0, -1])))
        node = spec
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None) if value is DELETE else node.__setitem__(path[-1], value)
    return spec


def _is_valid(body: Any, config: ServerConfig) -> bool:
    from service.app import check_spec

    try:
        JobSpec.from_dict(body)
    except SpecError:
        return False
    except Exception:  # noqa: BLE001 - a crash in from_dict is still not valid
        return False
    return check_spec(body, config)[0] is not None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(JSON, mutated_specs(), mutated_specs(), st.binary(max_size=64)))
def test_fuzzed_bodies_never_get_5xx_and_only_valid_specs_reach_the_backend(api, body):
    n = len(api.backend.submitted)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, answer, _ = call(api, "POST", "/jobs", raw, ALICE.token)
    assert status in (201, 422), (status, answer)
    event(f"status {status}")
    if status == 201:
        assert len(api.backend.submitted) == n + 1 and _is_valid(body, api.config)
    else:
        assert len(api.backend.submitted) == n and answer["issues"]
        assert isinstance(body, bytes) or not _is_valid(body, api.config)


# ----------------------------------------------------------------------- serve
class FakeScheduler:
    calls: list = []

    def __init__(self, **kwargs):
        FakeScheduler.calls.append(("init", kwargs))

    def start(self):
        FakeScheduler.calls.append(("start",))

    def shutdown(self):
        FakeScheduler.calls.append(("shutdown",))

    def health(self):
        return {"ray": True}


def test_serve_builds_the_scheduler_runs_uvicorn_and_shuts_down(tmp_path, monkeypatch, capsys):
    import uvicorn

    FakeScheduler.calls = []
    monkeypatch.setitem(sys.modules, "service.scheduler", types.SimpleNamespace(Scheduler=FakeScheduler))
    ran = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: ran.append((self.config, sockets)))
    config = ServerConfig(port=0, state_dir=str(tmp_path / "s"), ray_address="ray://head:10001", max_trial_retries=3)
    serve(config)
    init = FakeScheduler.calls[0][1]
    assert init == {
        "store_url": config.store_url,
        "ray_address": "ray://head:10001",
        "num_cpus": None,
        "tracking_uri": config.tracking_uri,
        "max_trial_retries": 3,
    }
    assert [c[0] for c in FakeScheduler.calls] == ["init", "start", "shutdown"]
    assert len(ran) == 1 and ran[0][0].app is not None
    out = capsys.readouterr().out
    token = (tmp_path / "s" / "token").read_text().strip()
    assert "http://127.0.0.1:" in out and str(tmp_path / "s" / "token") in out and token not in out
    assert out.count("\n") == 1


def test_serve_shuts_the_scheduler_down_when_uvicorn_fails(tmp_path, monkeypatch):
    import uvicorn

    FakeScheduler.calls = []
    monkeypatch.setitem(sys.modules, "service.scheduler", types.SimpleNamespace(Scheduler=FakeScheduler))

    def boom(self, sockets=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(uvicorn.Server, "run", boom)
    with pytest.raises(RuntimeError):
        serve(ServerConfig(port=0, state_dir=str(tmp_path), tokens=[{"token": "x" * 20, "owner": "o"}]))
    assert FakeScheduler.calls[-1] == ("shutdown",)


def test_create_app_reads_the_token_file_when_given_no_tokens(tmp_path):
    from tests.service.fakes import FakeBackend, running_app

    config = ServerConfig(state_dir=str(tmp_path))
    app = create_app(FakeBackend(), config)
    token = (tmp_path / "token").read_text().strip()
    with running_app(app) as url:
        ok = urllib.request.Request(url + "/jobs", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(ok, timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read()) == []
