"""Create the MLflow user that the Crucible service logs in as (MLflow's basic-auth app).

Run once after the tracking server is up (the Kubernetes Job in ``deploy/k8s/mlflow.yaml`` and
the ``mlflow-user`` service in ``deploy/mlflow/compose.yaml`` do). It logs in as the admin and
creates the user, or resets its password when the user exists, so running it again is harmless.
Every credential comes from the environment, never from this file:

* ``MLFLOW_TRACKING_URI``: the tracking server, e.g. ``http://mlflow:5000``
* ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``: the admin account
* ``CRUCIBLE_MLFLOW_USER`` (default ``crucible``) / ``CRUCIBLE_MLFLOW_PASSWORD``: the user to create

A user the auth app creates may create experiments and manages those it creates, which is all
the service needs; other users read them with the server's ``default_permission`` (READ).

Example:
    $ export MLFLOW_TRACKING_URI=http://mlflow:5000 MLFLOW_TRACKING_USERNAME=admin
    $ export MLFLOW_TRACKING_PASSWORD=... CRUCIBLE_MLFLOW_PASSWORD=...
    $ python deploy/mlflow/create_user.py
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request

REQUIRED = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "CRUCIBLE_MLFLOW_PASSWORD")


def wait_healthy(uri: str, timeout: float = 300.0) -> None:
    """Poll ``<uri>/health`` (no login needed) until the server answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
                return
        except OSError as err:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{uri} did not answer /health within {timeout:g} s: {err}") from err
            time.sleep(2)


def ensure_user(uri: str, username: str, password: str) -> str:
    """Create ``username`` with ``password``, or set its password if it exists; what was done."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    client = get_app_client("basic-auth", tracking_uri=uri)
    try:
        client.create_user(username=username, password=password)
        return "created"
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    client.update_user_password(username=username, password=password)
    return "exists; password updated"


def main() -> int:
    """Read the settings from the environment and make sure the user exists."""
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        print(f"create_user: set {', '.join(missing)}", file=sys.stderr)
        return 2
    uri = os.environ["MLFLOW_TRACKING_URI"]
    username = os.environ.get("CRUCIBLE_MLFLOW_USER", "crucible")
    wait_healthy(uri)
    outcome = ensure_user(uri, username, os.environ["CRUCIBLE_MLFLOW_PASSWORD"])
    print(f"create_user: MLflow user {username!r} at {uri}: {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
