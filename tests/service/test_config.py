"""ServerConfig loading and validation, and the token bootstrap."""

from __future__ import annotations

import dataclasses
import os
import stat
import sys

import pytest
import yaml

from service.config import ConfigError, ServerConfig, TokenInfo, ensure_tokens, match_token
from service.errors import CrucibleError


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = ServerConfig()
    assert (cfg.host, cfg.port, cfg.max_body_bytes, cfg.max_trial_retries) == ("127.0.0.1", 8080, 1_000_000, 1)
    assert cfg.state_dir == str(tmp_path / ".crucible")
    assert cfg.store_url == f"sqlite:///{tmp_path / '.crucible' / 'crucible.db'}"
    assert (
        cfg.tracking_uri == f"sqlite:///{cfg.state_dir}/mlflow.db" and cfg.ray_address is None and cfg.num_cpus is None
    )
    assert cfg.tokens == () and cfg.allowed_modules == ()
    assert not (tmp_path / ".crucible").exists()  # building a config writes nothing


def test_from_yaml(tmp_path):
    path = tmp_path / "server.yaml"
    data = {
        "host": "0.0.0.0",
        "port": 9000,
        "state_dir": str(tmp_path / "st"),
        "store_url": "postgresql+psycopg://u@db/crucible",
        "tracking_uri": "http://mlflow:5000",
        "ray_address": None,
        "num_cpus": 4,
        "tokens": [{"token": "a" * 20, "owner": "alice"}, {"token": "b" * 20, "owner": "ops", "admin": True}],
        "allowed_modules": ["myorg.objectives", "trial_fns"],
        "max_body_bytes": 5000,
        "max_trial_retries": 0,
    }
    path.write_text(yaml.safe_dump(data))
    cfg = ServerConfig.from_yaml(path)
    assert cfg.tokens == (TokenInfo("a" * 20, "alice"), TokenInfo("b" * 20, "ops", admin=True))
    assert cfg.allowed_modules == ("myorg.objectives", "trial_fns")
    assert (cfg.port, cfg.store_url, cfg.num_cpus, cfg.max_trial_retries) == (9000, data["store_url"], 4, 0)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert ServerConfig.from_yaml(empty).port == 8080


def test_every_problem_is_listed_with_path_value_and_what_is_allowed():
    bad = {
        "host": "",
        "port": 70000,
        "store_url": "crucible.db",
        "num_cpus": 0,
        "tokens": [{"token": "short", "owner": "", "admin": "yes", "role": "x"}, "nope"],
        "allowed_modules": ["ok.mod", "bad-mod", 3],
        "max_body_bytes": -1,
        "max_trial_retries": 1.5,
        "colour": "blue",
    }
    with pytest.raises(ConfigError) as err:
        ServerConfig.from_dict(bad)
    paths = [i.path for i in err.value.issues]
    assert sorted(paths) == sorted(
        [
            "colour",
            "host",
            "port",
            "store_url",
            "num_cpus",
            "tokens[0].role",
            "tokens[0].token",
            "tokens[0].owner",
            "tokens[0].admin",
            "tokens[1]",
            "allowed_modules[1]",
            "allowed_modules[2]",
            "max_body_bytes",
            "max_trial_retries",
        ]
    )
    text = str(err.value)
    assert isinstance(err.value, CrucibleError) and isinstance(err.value, ValueError)
    assert f"({len(paths)} problem(s))" in text
    assert "`port` must be an integer in [0, 65535]" in text and "70000" in text
    assert "'bad-mod'" in text and "colour" in text and "allowed: " in text
    assert "short" not in text and "nope" not in text  # token-ish values are never echoed


@pytest.mark.parametrize(
    "data,path",
    [
        ([1], "<config>"),
        ({"tokens": {"token": "a" * 20}}, "tokens"),
        ({"allowed_modules": "myorg"}, "allowed_modules"),
        ({"port": True}, "port"),
        ({"tracking_uri": "  "}, "tracking_uri"),
        ({"ray_address": 5}, "ray_address"),
        ({"ray_address": "auto", "num_cpus": 4}, "num_cpus"),
        ({"state_dir": ""}, "state_dir"),
        ({"tokens": [{"token": "a" * 20, "owner": "x"}, {"token": "a" * 20, "owner": "y"}]}, "tokens[1].token"),
    ],
)
def test_single_problems(data, path):
    with pytest.raises(ConfigError) as err:
        ServerConfig.from_dict(data)
    assert path in [i.path for i in err.value.issues]


def test_bad_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("port: [unclosed\n")
    with pytest.raises(ConfigError, match="<file>"):
        ServerConfig.from_yaml(path)


def test_replace_revalidates():
    with pytest.raises(ConfigError):
        dataclasses.replace(ServerConfig(state_dir="/tmp/x"), port=-1)


def test_repr_hides_tokens():
    cfg = ServerConfig(state_dir="/tmp/x", tokens=[{"token": "s3cret-s3cret-s3cret", "owner": "me"}])
    assert "s3cret" not in repr(cfg) and "me" in repr(cfg)


@pytest.mark.parametrize(
    "path,ok",
    [
        ("myorg.objectives:f", True),
        ("myorg.objectives.cnn:train", True),
        ("myorg.objectives.cnn.deep:C.f", True),
        ("myorg.objectivesx:f", False),
        ("myorg:f", False),
        ("other:f", False),
    ],
)
def test_admits(path, ok):
    assert ServerConfig(state_dir="/tmp/x", allowed_modules=["myorg.objectives"]).admits(path) is ok


# --------------------------------------------------------------------- tokens
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_generated_token_is_private_and_reused(tmp_path):
    cfg = ServerConfig(state_dir=str(tmp_path / "state"))
    first = ensure_tokens(cfg)
    assert len(first) == 1 and first[0].owner == "admin" and first[0].admin
    assert len(first[0].token) >= 40
    token_file = tmp_path / "state" / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert token_file.read_text().strip() == first[0].token
    assert ensure_tokens(cfg) == first  # the next start reads it back
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["token"]  # no temp files left


def test_generated_token_respects_a_loose_umask(tmp_path):
    old = os.umask(0)
    try:
        ensure_tokens(ServerConfig(state_dir=str(tmp_path / "s")))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s" / "token").stat().st_mode) == 0o600


def test_empty_token_file_is_replaced(tmp_path):
    (tmp_path / "token").write_text("\n")
    os.chmod(tmp_path / "token", 0o600)
    token = ensure_tokens(ServerConfig(state_dir=str(tmp_path)))[0].token
    assert token and (tmp_path / "token").read_text().strip() == token


def test_configured_tokens_write_no_file(tmp_path):
    cfg = ServerConfig(state_dir=str(tmp_path), tokens=[{"token": "t" * 20, "owner": "me", "admin": False}])
    assert ensure_tokens(cfg) == [TokenInfo("t" * 20, "me")]
    assert not (tmp_path / "token").exists()


def test_match_token():
    tokens = [TokenInfo("a" * 20, "alice"), TokenInfo("b" * 20, "bob", admin=True)]
    assert match_token(tokens, "b" * 20).owner == "bob"
    assert match_token(tokens, "a" * 19) is None and match_token(tokens, "") is None
    assert match_token(tokens, "é" * 20) is None
