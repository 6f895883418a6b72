"""ServerConfig: how the Crucible service runs, and its API tokens.

Like a job spec, a server config is validated when it is built: every problem is listed,
each naming the field path, echoing the value and saying what is allowed. Tokens come from
the config or, when it gives none, from ``<state_dir>/token``, generated at first start with
owner-only permissions. This module imports neither torch, Ray nor MLflow.

Example:
    >>> cfg = ServerConfig.from_dict({"port": 9000, "state_dir": "/tmp/crucible-doc"})
    >>> cfg.store_url
    'sqlite:////tmp/crucible-doc/crucible.db'
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.errors import CrucibleError, SpecIssue

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "~/.crucible"
TOKEN_FILE = "token"
MIN_TOKEN_CHARS = 16
_MODULE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class ConfigError(CrucibleError, ValueError):
    """A server config is invalid; raised when it is loaded, before anything starts.

    Attributes:
        issues: Every problem found (the message lists all of them).
    """

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = list(issues)
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"invalid server config ({len(self.issues)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class TokenInfo:
    """One API token and whose it is.

    Attributes:
        token: The secret sent as ``Authorization: Bearer <token>``.
        owner: Name the token's jobs are stored under.
        admin: ``True`` lets the token see and cancel every owner's jobs.
    """

    token: str
    owner: str
    admin: bool = False

    def __repr__(self) -> str:
        return f"TokenInfo(token='***', owner={self.owner!r}, admin={self.admin})"


@dataclass(frozen=True)
class ServerConfig:
    """A complete, validated service configuration.

    Attributes:
        host: Interface to listen on (loopback by default; there is no TLS, put a proxy in front).
        port: TCP port (0 picks a free one).
        state_dir: Directory for the job store and the generated token (``~`` is expanded).
        store_url: SQLAlchemy URL of the job store (default: sqlite in ``state_dir``).
        tracking_uri: MLflow tracking URI forced on every job (default: a sqlite store in
            ``state_dir``, so that a request cannot make the service write where it likes);
            an explicit ``null`` keeps each spec's own ``tracking.uri`` (trusted users only).
        ray_address: Ray cluster to join; ``None`` starts a local Ray.
        num_cpus: CPUs of the local Ray (``None``: all).
        tokens: API tokens; empty means one generated admin token in ``<state_dir>/token``.
        allowed_modules: Modules (or package prefixes) whose ``objective.function`` import
            paths a remote spec may name; empty admits none, only built-in tasks.
        max_body_bytes: Largest request body accepted.
        max_trial_retries: Cap on a job's ``budget.trial_retries``.

    Example:
        >>> ServerConfig(port=8081, state_dir="/tmp/c").host
        '127.0.0.1'
    """

    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: str = DEFAULT_STATE_DIR
    store_url: str | None = None
    tracking_uri: str | None = ""
    ray_address: str | None = None
    num_cpus: int | None = None
    tokens: tuple[TokenInfo, ...] = ()
    allowed_modules: tuple[str, ...] = ()
    max_body_bytes: int = 1_000_000
    max_trial_retries: int = 1

    def __post_init__(self) -> None:
        issues: list[SpecIssue] = []
        if isinstance(self.state_dir, str | os.PathLike) and str(self.state_dir):
            object.__setattr__(self, "state_dir", os.path.expanduser(os.fspath(self.state_dir)))
        if self.store_url is None and isinstance(self.state_dir, str):
            object.__setattr__(self, "store_url", f"sqlite:///{Path(self.state_dir) / 'crucible.db'}")
        if self.tracking_uri == "" and isinstance(self.state_dir, str):
            object.__setattr__(self, "tracking_uri", f"sqlite:///{Path(self.state_dir) / 'mlflow.db'}")
        object.__setattr__(self, "tokens", tuple(_parse_tokens(self.tokens, issues)))
        if isinstance(self.allowed_modules, list):
            object.__setattr__(self, "allowed_modules", tuple(self.allowed_modules))
        _validate(self, issues)
        if issues:
            raise ConfigError(issues)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_yaml(cls, path: str | Path) -> ServerConfig:
        """Load and validate a config from a YAML file (an empty file gives the defaults)."""
        with open(path, encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh)
            except yaml.YAMLError as err:
                raise ConfigError([SpecIssue("<file>", str(path), f"must be valid YAML ({err})")]) from None
        return cls.from_dict({} if data is None else data)

    @classmethod
    def from_dict(cls, data: Any) -> ServerConfig:
        """Build and validate a config from plain data (the YAML form)."""
        if not isinstance(data, dict):
            raise ConfigError([SpecIssue("<config>", data, "must be a mapping of fields")])
        allowed = {f.name for f in dataclasses.fields(cls)}
        issues = [
            SpecIssue(str(k), v, f"is not a known field; allowed: {', '.join(sorted(allowed))}")
            for k, v in data.items()
            if k not in allowed
        ]
        try:
            config = cls(**{k: v for k, v in data.items() if k in allowed})
        except ConfigError as err:
            raise ConfigError(issues + err.issues) from None
        if issues:
            raise ConfigError(issues)
        return config

    @property
    def token_path(self) -> Path:
        """Where the generated admin token is kept."""
        return Path(self.state_dir) / TOKEN_FILE

    def admits(self, import_path: str) -> bool:
        """Whether ``objective.function`` may name ``import_path`` ("pkg.module:fn").

        Example:
            >>> ServerConfig(allowed_modules=("myorg.objectives",), state_dir="/tmp/c").admits("myorg.objectives.cnn:f")
            True
        """
        module = import_path.partition(":")[0]
        return any(module == m or module.startswith(m + ".") for m in self.allowed_modules)


# ------------------------------------------------------------------ validation
def _parse_tokens(raw: Any, issues: list[SpecIssue]) -> list[TokenInfo]:
    if raw is None:
        return []
    if not isinstance(raw, list | tuple):
        issues.append(SpecIssue("tokens", raw, "must be a list of {token, owner, admin} mappings"))
        return []
    out: list[TokenInfo] = []
    keys = {"token", "owner", "admin"}
    for i, item in enumerate(raw):
        path = f"tokens[{i}]"
        if isinstance(item, TokenInfo):
            item = dataclasses.asdict(item)
        if not isinstance(item, dict):
            issues.append(SpecIssue(path, _redact(item), "must be a mapping with keys token, owner, admin"))
            continue
        n_before = len(issues)
        for key in item:
            if key not in keys:
                why = "is not a known field; allowed: admin, owner, token"
                issues.append(SpecIssue(f"{path}.{key}", item[key], why))
        token, owner, admin = item.get("token"), item.get("owner"), item.get("admin", False)
        if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN_CHARS:
            # Never echo a (possibly real) secret into an error message or log.
            issues.append(SpecIssue(f"{path}.token", _redact(token), f"must be a string of >= {MIN_TOKEN_CHARS} chars"))
        if not isinstance(owner, str) or not owner.strip():
            issues.append(SpecIssue(f"{path}.owner", owner, "must be a non-empty string"))
        if not isinstance(admin, bool):
            issues.append(SpecIssue(f"{path}.admin", admin, "must be true or false"))
        if len(issues) == n_before:
            if any(hmac.compare_digest(t.token.encode(), token.strip().encode()) for t in out):
                issues.append(SpecIssue(f"{path}.token", "***", "must not repeat another entry's token"))
            else:
                out.append(TokenInfo(token.strip(), owner.strip(), admin))
    return out


def _redact(value: Any) -> Any:
    return "***" if isinstance(value, str) and value else value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate(c: ServerConfig, issues: list[SpecIssue]) -> None:
    add = issues.append
    if not isinstance(c.host, str) or not c.host.strip():
        add(SpecIssue("host", c.host, "must be a host name or IP address, e.g. '127.0.0.1' or '0.0.0.0'"))
    if not _is_int(c.port) or not 0 <= c.port <= 65535:
        add(SpecIssue("port", c.port, "must be an integer in [0, 65535] (0 picks a free port)"))
    if not isinstance(c.state_dir, str) or not c.state_dir:
        add(SpecIssue("state_dir", c.state_dir, "must be a directory path"))
    if not isinstance(c.store_url, str) or "://" not in c.store_url:
        add(SpecIssue("store_url", c.store_url, "must be a SQLAlchemy URL, e.g. 'sqlite:///path/crucible.db'"))
    for name in ("tracking_uri", "ray_address"):
        v = getattr(c, name)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            add(SpecIssue(name, v, "must be a non-empty string or null"))
    if c.num_cpus is not None and (not _is_int(c.num_cpus) or c.num_cpus <= 0):
        add(SpecIssue("num_cpus", c.num_cpus, "must be a positive integer or null"))
    elif c.num_cpus is not None and isinstance(c.ray_address, str) and c.ray_address not in ("", "local"):
        add(SpecIssue("num_cpus", c.num_cpus, f"must be null when joining the Ray cluster at ray_address="
                      f"{c.ray_address!r} (its nodes declare their own CPUs)"))  # fmt: skip
    _validate_modules(c.allowed_modules, add)
    if not _is_int(c.max_body_bytes) or c.max_body_bytes <= 0:
        add(SpecIssue("max_body_bytes", c.max_body_bytes, "must be a positive integer"))
    if not _is_int(c.max_trial_retries) or c.max_trial_retries < 0:
        add(SpecIssue("max_trial_retries", c.max_trial_retries, "must be an integer >= 0"))


def _validate_modules(mods: Any, add: Any) -> None:
    if not isinstance(mods, tuple):
        add(SpecIssue("allowed_modules", mods, "must be a list of module names, e.g. ['myorg.objectives']"))
        return
    for i, m in enumerate(mods):
        if not isinstance(m, str) or not _MODULE_RE.match(m):
            add(SpecIssue(f"allowed_modules[{i}]", m, "must be a dotted module name, e.g. 'myorg.objectives'"))


# ----------------------------------------------------------------------- tokens
def ensure_tokens(config: ServerConfig) -> list[TokenInfo]:
    """The tokens the service accepts: the configured ones, else the admin token file.

    When the config lists no tokens, ``<state_dir>/token`` is read; at first start it is
    created with a fresh ``secrets.token_urlsafe(32)``, readable by its owner only
    (file 0600, directory 0700). That token is an admin token with owner ``"admin"``.

    Args:
        config: The server config.

    Returns:
        The accepted tokens.

    Example:
        >>> import tempfile
        >>> [t.owner for t in ensure_tokens(ServerConfig(state_dir=tempfile.mkdtemp()))]
        ['admin']
    """
    if config.tokens:
        return list(config.tokens)
    return [TokenInfo(_read_or_create_token(config.token_path), "admin", admin=True)]


def _read_or_create_token(path: Path) -> str:
    token = _read_token(path)
    if token:
        return token
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, and refuses to overwrite a token another process wrote meanwhile
    except FileExistsError:
        existing = _read_token(path)
        if existing:
            return existing
        os.replace(tmp, path)  # the file there was empty
    finally:
        tmp.unlink(missing_ok=True)
    return token


def _read_token(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is readable by others (mode %o); chmod 600 it", path, stat.S_IMODE(mode))
    return text or None


def match_token(tokens: Iterable[TokenInfo], presented: str) -> TokenInfo | None:
    """The token entry equal to ``presented``, compared in constant time, or ``None``."""
    given = presented.encode()
    found = None
    for info in tokens:
        if hmac.compare_digest(info.token.encode(), given):
            found = info
    return found
