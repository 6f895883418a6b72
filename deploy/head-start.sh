#!/usr/bin/env bash
# The Ray head and the Crucible service, together, in the head's container (KubeRay head pod,
# or the head node of `ray up`). Runs until either of them exits; then stops the other and exits
# with its status, so that Kubernetes restarts the pair (the service resumes its jobs from the
# store). SIGTERM stops both.
#
# Environment:
#   RAY_START_CMD        the `ray start --head --block ...` command (default: KubeRay's generated
#                        $KUBERAY_GEN_RAY_START_CMD, else a head on port 6379 with no CPUs for trials)
#   RAY_GCS_PORT         the head's GCS port that command opens (default 6379)
#   CRUCIBLE_CONFIG      server config (default /etc/crucible/server.yaml)
#   CRUCIBLE_TOKEN_FILE  a mounted secret holding the admin API token; copied, owner-only, to
#                        <state_dir>/token, where `crucible serve` reads it
#   CRUCIBLE_ENV_FILE    optional KEY=value file (a mounted secret) read into the environment, e.g.
#                        MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD, PGPASSWORD
set -euo pipefail

CONFIG="${CRUCIBLE_CONFIG:-/etc/crucible/server.yaml}"
GCS_PORT="${RAY_GCS_PORT:-6379}"
START="${RAY_START_CMD:-${KUBERAY_GEN_RAY_START_CMD:-ray start --head --block --port=6379 --num-cpus=0 --disable-usage-stats}}"

ulimit -n 65536 2>/dev/null || echo "head-start: could not raise the open-file limit" >&2

if [[ -n "${CRUCIBLE_ENV_FILE:-}" ]]; then
  set -a
  # shellcheck disable=SC1090 # a secret mounted at run time
  . "$CRUCIBLE_ENV_FILE"
  set +a
fi

if [[ -n "${CRUCIBLE_TOKEN_FILE:-}" ]]; then
  state_dir="$(python -c 'import sys; from service.config import ServerConfig
print(ServerConfig.from_yaml(sys.argv[1]).state_dir)' "$CONFIG")"
  install -d -m 700 "$state_dir"
  install -m 600 "$CRUCIBLE_TOKEN_FILE" "$state_dir/token"
fi

# eval keeps the quoting of the generated command (e.g. --resources='{"a": 1}').
eval "exec $START" &
ray_pid=$!
until ray health-check --address "127.0.0.1:$GCS_PORT" >/dev/null 2>&1; do
  kill -0 "$ray_pid" 2>/dev/null || {
    echo "head-start: ray start exited" >&2
    exit 1
  }
  sleep 1
done

crucible serve --config "$CONFIG" &
serve_pid=$!
trap 'kill -TERM "$serve_pid" "$ray_pid" 2>/dev/null || true' TERM INT

status=0
wait -n "$ray_pid" "$serve_pid" || status=$?
kill -TERM "$serve_pid" "$ray_pid" 2>/dev/null || true
wait || true
exit "$status"
