"""service.Client and the remote CLI verbs against the real app (uvicorn) over a FakeBackend."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from service import Client
from service.cli import main
from service.client import (
    ApiError,
    JobHandle,
    NotFound,
    PayloadTooLarge,
    ServerError,
    SpecRejected,
    Unauthorized,
    Unreachable,
)
from service.errors import CrucibleError, SpecError
from service.spec import JobSpec, Objective
from tests.service.fakes import ADMIN, ALICE, BOB, CUSTOM_SPEC, GOOD_SPEC, fake_api

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with fake_api(str(tmp_path_factory.mktemp("state"))) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_env(api, monkeypatch, tmp_path):
    api.backend.fail_with = None
    monkeypatch.delenv("CRUCIBLE_TOKEN", raising=False)
    monkeypatch.delenv("CRUCIBLE_URL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.crucible/token of the real user
    yield
    api.backend.fail_with = None


@pytest.fixture
def alice(api) -> Client:
    return Client(api.url, token=ALICE.token, timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- verbs
def test_client_imports_without_torch_ray_or_mlflow():
    code = (
        "import sys, service.client; from service import Client; "
        "heavy = [m for m in ('torch', 'ray', 'mlflow', 'fastapi', 'uvicorn') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("form", ["jobspec", "dict", "path"])
def test_submit_takes_a_jobspec_a_dict_or_a_yaml_path(api, alice, form, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(GOOD_SPEC))
    spec = {"jobspec": JobSpec.from_dict(GOOD_SPEC), "dict": GOOD_SPEC, "path": str(path)}[form]
    job = alice.submit(spec)
    assert isinstance(job, JobHandle) and job.summary["state"] == "queued"
    assert api.backend.submitted[-1] == (JobSpec.from_dict(GOOD_SPEC), "alice")
    assert repr(job) == f"JobHandle(id={job.id!r}, name='fake-job', state='queued')"


def test_a_callable_objective_is_refused_before_sending(api, alice):
    spec = JobSpec(name="local", strategy="random", objective=Objective(metric="loss", function=lambda c, r: {}))
    n = len(api.backend.submitted)
    with pytest.raises(CrucibleError, match="callables only work embedded"):
        alice.submit(spec)
    with pytest.raises(CrucibleError, match="callables only work embedded"):
        alice.submit({**CUSTOM_SPEC, "objective": {"function": print}})
    assert len(api.backend.submitted) == n


def test_status_trials_best_wait_and_cancel(api, alice):
    job = alice.submit(GOOD_SPEC)
    assert job.best() is None and job.trials() == []
    api.backend.set_running(job.id)
    assert job.status()["state"] == "running"
    threading.Timer(0.3, api.backend.finish, args=(job.id,)).start()
    final = job.wait(timeout=10, poll=0.05)
    assert final["state"] == "succeeded" and "trials" not in final and "spec" not in final
    assert job.best()["value"] == pytest.approx(0.93)
    assert [t["status"] for t in job.trials()] == ["ok", "pruned"]
    assert job.detail()["spec"]["name"] == "fake-job"
    assert job.cancel()["state"] == "succeeded"  # a finished job is unchanged
    other = alice.submit(GOOD_SPEC)
    assert other.cancel()["state"] == "cancelled" and other.summary["state"] == "cancelled"


def test_wait_times_out_naming_the_job_and_its_state(alice):
    job = alice.submit(GOOD_SPEC)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"job {job.id} .*'queued'"):
        job.wait(timeout=0.3, poll=0.05)
    assert time.monotonic() - t0 < 5


def test_jobs_and_job_respect_owners(api, alice):
    mine = alice.submit(GOOD_SPEC)
    bob = Client(api.url, token=BOB.token)
    admin = Client(api.url, token=ADMIN.token)
    assert mine.id in [j.id for j in alice.jobs()]
    assert mine.id not in [j.id for j in bob.jobs()]
    assert mine.id in [j.id for j in admin.jobs()]
    assert admin.job(mine.id).summary["owner"] == "alice"
    with pytest.raises(NotFound) as err:
        bob.job(mine.id)
    assert err.value.status == 404 and err.value.detail == "job not found"
    with pytest.raises(NotFound):
        JobHandle(bob, mine.id).cancel()


def test_health_needs_no_token(api):
    assert Client(api.url).health()["status"] == "ok"


# --------------------------------------------------------------------- errors
def test_typed_errors(api, alice):
    with pytest.raises(Unauthorized) as err:
        Client(api.url, token="wrong-token-0123456789").jobs()
    assert err.value.status == 401 and isinstance(err.value, CrucibleError)
    with pytest.raises(Unauthorized):
        Client(api.url).jobs()
    with pytest.raises(PayloadTooLarge) as err:
        alice.submit({**GOOD_SPEC, "strategy_options": {"pad": "x" * 50_000}})
    assert err.value.status == 413 and "too large" in str(err.value)
    api.backend.fail_with = RuntimeError("db on fire")
    with pytest.raises(ServerError) as err:
        alice.jobs()
    assert err.value.status == 500 and "db on fire" not in str(err.value)


def test_spec_rejected_lists_issues_and_is_a_spec_error(alice):
    bad = {**GOOD_SPEC, "strategy": "grid", "budget": {"trials": 0}}
    with pytest.raises(SpecRejected) as err:
        alice.submit(bad)
    assert isinstance(err.value, SpecError) and isinstance(err.value, ApiError)
    assert err.value.status == 422
    assert {"strategy", "budget.trials"} <= {i.path for i in err.value.issues}
    assert "grid" in str(err.value) and "budget.trials" in str(err.value)


def test_unreachable_names_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable) as err:
        Client(url, token="t", timeout=2).jobs()
    assert url in str(err.value) and err.value.status is None


def test_bad_url_is_refused_up_front():
    with pytest.raises(CrucibleError, match="url"):
        Client("head:8080")


def test_redirects_are_not_followed_so_the_token_stays_put():
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            if self.path == "/jobs":
                self.send_response(302)
                self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"[]")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ApiError) as err:
            Client(f"http://127.0.0.1:{server.server_address[1]}", token="secret-token").jobs()
        assert err.value.status == 302 and seen == ["Bearer secret-token"]
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------ CLI
def test_cli_submit_status_cancel(api, tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(GOOD_SPEC))
    auth = ["--url", api.url, "--token", ALICE.token]
    assert main(["submit", str(path), *auth]) == 0
    out = capsys.readouterr().out
    job_id = out.split()[2]
    assert out.startswith(f"submitted job {job_id} ('fake-job'): queued")
    api.backend.finish(job_id)
    assert main(["status", *auth]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "STATE"]
    row = next(line for line in lines if line.startswith(job_id))
    assert row.split()[:4] == [job_id, "fake-job", "succeeded", "1/0/1/0"] and "of 4" in row and "0.93" in row
    assert main(["status", job_id, *auth]) == 0
    out = capsys.readouterr().out
    assert "succeeded (budget)" in out and "TRIAL" in out and "median stopping" in out and "lr=0.01" in out
    second = JobHandle(Client(api.url, token=ALICE.token), main_submit_id(api, path, capsys))
    assert main(["cancel", second.id, *auth]) == 0
    assert capsys.readouterr().out == f"job {second.id} ('fake-job'): cancelled\n"
    assert main(["cancel", job_id, *auth]) == 0
    assert "already succeeded" in capsys.readouterr().out


def main_submit_id(api, path, capsys) -> str:
    assert main(["submit", str(path), "--url", api.url, "--token", ALICE.token]) == 0
    return capsys.readouterr().out.split()[2]


def test_cli_submit_wait(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(GOOD_SPEC))
    with fake_api(str(tmp_path / "state"), auto_finish=True) as api:
        assert main(["submit", str(path), "--wait", "--url", api.url, "--token", BOB.token]) == 0
    out = capsys.readouterr().out
    assert "state     succeeded" in out and "#0 = 0.93  lr=0.01, activation=relu" in out


def test_cli_reads_url_and_token_from_env_then_token_file(api, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CRUCIBLE_URL", api.url)
    monkeypatch.setenv("CRUCIBLE_TOKEN", BOB.token)
    assert main(["status"]) == 0
    capsys.readouterr()
    monkeypatch.delenv("CRUCIBLE_TOKEN")
    token_file = tmp_path / "home" / ".crucible" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(ADMIN.token + "\n")
    assert main(["status"]) == 0
    token_file.write_text("not-a-token-at-all-xx\n")
    assert main(["status"]) == 2
    assert capsys.readouterr().err.startswith("crucible: GET")


def test_cli_errors_go_to_stderr_with_exit_codes(api, tmp_path, capsys):
    auth = ["--url", api.url, "--token", ALICE.token]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**GOOD_SPEC, "strategy": "grid"}))
    assert main(["submit", str(path), *auth]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crucible: invalid job spec") and "strategy" in err
    assert main(["status", *auth[:2], "--token", "wrong-token-0123456789"]) == 2
    assert capsys.readouterr().err == f"crucible: GET {api.url}/jobs: 401 unauthorized\n"
    assert main(["status", "nope", *auth]) == 1
    assert "404 job not found" in capsys.readouterr().err
    assert main(["submit", str(tmp_path / "missing.yaml"), *auth]) == 2
    assert "cannot read spec" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert main(["submit", str(broken), *auth]) == 2
    assert "must be valid YAML" in capsys.readouterr().err
    assert main(["status", "--url", f"http://127.0.0.1:{free_port()}", "--token", "t"]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_cli_serve_reports_config_errors(tmp_path, capsys):
    path = tmp_path / "server.yaml"
    path.write_text(yaml.safe_dump({"port": "eighty", "colour": 1}))
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "crucible: invalid server config (2 problem(s))" in err and "`port`" in err and "`colour`" in err
    assert main(["serve", "--config", str(tmp_path / "none.yaml")]) == 2
    assert main(["serve", "--port", "70000"]) == 2
