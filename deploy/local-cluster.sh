#!/usr/bin/env bash
# A whole Crucible deployment on one machine, every part a separate process on loopback:
#
#   ray head   `ray start --head`    1 CPU, custom resource {"node_a": 1}
#   ray node2  `ray start --address` 1 CPU, custom resource {"node_b": 1}
#   mlflow     `mlflow server`       PostgreSQL backend when CRUCIBLE_PG_URL is set, else sqlite;
#                                    artifacts in $DIR/mlflow-artifacts, served over HTTP
#   crucible   `crucible serve`      joins the Ray cluster, logs every job to the MLflow server
#
# Usage:
#   bash deploy/local-cluster.sh up           # start all four; prints URLs and the token file
#   bash deploy/local-cluster.sh status       # which parts are running
#   bash deploy/local-cluster.sh kill-node2   # SIGKILL the second Ray node (fault drill)
#   bash deploy/local-cluster.sh down         # stop everything this script started
#
# Settings (environment):
#   CRUCIBLE_CLUSTER_DIR      state, logs, PID files, Ray temp dirs  (default ${TMPDIR:-/tmp}/crucible-cluster;
#                             keep it short: Ray's socket paths under it must stay below 108 characters)
#   CRUCIBLE_PYTHON           interpreter with Crucible installed     (default <repo>/.venv/bin/python)
#   CRUCIBLE_RAY_PORT         Ray head (GCS) port                     (default 6380)
#   CRUCIBLE_MLFLOW_PORT      MLflow server port                      (default 5000)
#   CRUCIBLE_PORT             Crucible API port                       (default 8080)
#   CRUCIBLE_NODES            Ray nodes to start: 2 (default) or 1 (the head alone, for comparisons)
#   CRUCIBLE_HEAD_CPUS, CRUCIBLE_NODE2_CPUS   CPUs Ray may use per node (default 1 each)
#   CRUCIBLE_OBJECT_STORE_BYTES               object store per node (default 200000000)
#   CRUCIBLE_PG_URL           MLflow backend store, e.g. postgresql://postgres@127.0.0.1:5432/mlflow
#   CRUCIBLE_STORE_URL        Crucible job store (default sqlite in $DIR/state)
#   CRUCIBLE_ALLOWED_MODULES  comma-separated modules whose functions jobs may name (server allowed_modules)
#   CRUCIBLE_MLFLOW_AUTH=1    run MLflow's basic-auth app (needs `pip install 'mlflow[auth]'`); the admin
#                             password comes from MLFLOW_AUTH_ADMIN_PASSWORD (MLFLOW_FLASK_SERVER_SECRET_KEY:
#                             random unless set) and `crucible serve` logs in with MLFLOW_TRACKING_USERNAME /
#                             MLFLOW_TRACKING_PASSWORD from its environment (default: the admin account)
#   CRUCIBLE_STOP_GRACE       seconds `down` waits after SIGTERM before SIGKILL (default 10)
#   PYTHONPATH                kept, after the repository root, for every process: Ray workers on both
#                             nodes import `objective.function` paths from it
#
# Every process runs in its own session; its PID (= its process group) is in $DIR/pids. `down` and
# `kill-node2` signal only those process groups, and only when the PID still runs a command that
# names $DIR, so other Ray instances on this machine are never touched (no `ray stop`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${CRUCIBLE_CLUSTER_DIR:-${TMPDIR:-/tmp}/crucible-cluster}"
[[ "$DIR" == /* ]] || DIR="$PWD/$DIR"
PY="${CRUCIBLE_PYTHON:-$ROOT/.venv/bin/python}"
RAY="$(dirname "$PY")/ray"
RAY_PORT="${CRUCIBLE_RAY_PORT:-6380}"
MLFLOW_PORT="${CRUCIBLE_MLFLOW_PORT:-5000}"
PORT="${CRUCIBLE_PORT:-8080}"
HEAD_CPUS="${CRUCIBLE_HEAD_CPUS:-1}"
NODE2_CPUS="${CRUCIBLE_NODE2_CPUS:-1}"
NODES="${CRUCIBLE_NODES:-2}"
OBJECT_STORE="${CRUCIBLE_OBJECT_STORE_BYTES:-200000000}"
GRACE="${CRUCIBLE_STOP_GRACE:-10}"
PARTS=(crucible mlflow ray-node2 ray-head) # stop order: the head last, after node 2 has drained

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" # loopback only: no token banner
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
# MLflow's server-side job runner (GenAI scorers; seven huey worker processes) is not used by
# Crucible; off, the server starts in a third of the time and stops in a second.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"

die() {
  echo "local-cluster: $*" >&2
  exit 1
}

pidfile() { echo "$DIR/pids/$1.pid"; }

# The PID of a part if that process still runs and is ours (its command line names $DIR).
ours() {
  local file pid
  file="$(pidfile "$1")"
  [[ -f "$file" ]] || return 1
  pid="$(<"$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  ps -ww -o args= -p "$pid" 2>/dev/null | grep -qF -- "$DIR" || return 1
  echo "$pid"
}

# Start a part in its own session (its PID is its process group), output to $DIR/logs/<part>.log.
launch() {
  local name="$1"
  shift
  setsid "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

# Wait until a check passes; fail with the part's log when it exits first or time runs out.
await() {
  local name="$1" timeout="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! ours "$name" >/dev/null; then
      tail -n 30 "$DIR/logs/$name.log" >&2 || true
      die "$name exited while starting (log: $DIR/logs/$name.log)"
    fi
    ((SECONDS < deadline)) || die "$name not ready after ${timeout}s (log: $DIR/logs/$name.log)"
    sleep 0.3
  done
  echo "local-cluster: $name ready (${SECONDS}s)"
}

http_ok() { "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1"; }

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# PIDs of every descendant of a process. Ray's workers run in process groups of their own, so
# they are found as children of their raylet, not by the group.
descendants() {
  ps -e -o pid= -o ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      found[root] = 1
      do { more = 0; for (p in parent) if (!(p in found) && (parent[p] in found)) { found[p] = 1; more = 1 } } while (more)
      for (p in found) if (p != root) print p
    }'
}

# SIGTERM each part's leading process (`ray start --block` then stops its node's processes in
# order), wait up to $GRACE s for its whole process group to end, then SIGKILL what is left.
stop_parts() {
  local name pid pids=()
  for name in "$@"; do
    if pid="$(ours "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  local deadline=$((SECONDS + GRACE))
  for pid in ${pids[@]+"${pids[@]}"}; do
    while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if group_alive "$pid"; then
      # shellcheck disable=SC2046 # one PID per word
      kill -KILL $(descendants "$pid") 2>/dev/null || true
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done
  for name in "$@"; do rm -f "$(pidfile "$name")"; done
}

write_server_config() {
  local modules="" store=""
  if [[ -n "${CRUCIBLE_ALLOWED_MODULES:-}" ]]; then
    modules="allowed_modules: [${CRUCIBLE_ALLOWED_MODULES//,/, }]"
  fi
  [[ -n "${CRUCIBLE_STORE_URL:-}" ]] && store="store_url: \"${CRUCIBLE_STORE_URL}\""
  cat >"$DIR/server.yaml" <<EOF
# written by deploy/local-cluster.sh
host: 127.0.0.1
port: $PORT
state_dir: "$DIR/state"
tracking_uri: "http://127.0.0.1:$MLFLOW_PORT"
ray_address: "127.0.0.1:$RAY_PORT"
$store
$modules
EOF
}

up() {
  local name
  for name in "${PARTS[@]}"; do
    ! ours "$name" >/dev/null || die "$name is already running (PID $(ours "$name")); run '$0 down' first"
  done
  [[ -x "$PY" ]] || die "no Python at $PY (run deploy/install.sh, or set CRUCIBLE_PYTHON)"
  mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/state" "$DIR/mlflow-artifacts"
  rm -rf "$DIR/ray-head" "$DIR/ray-node2" # old sessions: a stale address file would pass for ready
  trap 'echo "local-cluster: start failed; stopping what did start" >&2; stop_parts "${PARTS[@]}"' EXIT

  local backend="${CRUCIBLE_PG_URL:-sqlite:///$DIR/mlflow.db}"
  local mlflow_args=(--backend-store-uri "$backend" --artifacts-destination "$DIR/mlflow-artifacts"
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1)
  if [[ "${CRUCIBLE_MLFLOW_AUTH:-0}" == 1 ]]; then
    [[ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]] || die "CRUCIBLE_MLFLOW_AUTH=1 needs MLFLOW_AUTH_ADMIN_PASSWORD"
    cat >"$DIR/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = sqlite:///$DIR/mlflow-auth.db
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
    mlflow_args+=(--app-name basic-auth)
    # The auth app signs its CSRF tokens with this key; one random key per local cluster.
    local key="${MLFLOW_FLASK_SERVER_SECRET_KEY:-$("$PY" -c 'import secrets; print(secrets.token_hex(32))')}"
    MLFLOW_AUTH_CONFIG_PATH="$DIR/basic_auth.ini" MLFLOW_FLASK_SERVER_SECRET_KEY="$key" \
      launch mlflow "$PY" -m mlflow server "${mlflow_args[@]}"
  else
    launch mlflow "$PY" -m mlflow server "${mlflow_args[@]}"
  fi

  # Node death is noticed in about 5 s (Ray's default is about 30 s), so that the service
  # re-runs a lost node's trials promptly; the head's GCS does the health checks.
  RAY_health_check_period_ms="${RAY_health_check_period_ms:-1000}" \
    RAY_health_check_timeout_ms="${RAY_health_check_timeout_ms:-2000}" \
    RAY_health_check_failure_threshold="${RAY_health_check_failure_threshold:-5}" \
    launch ray-head "$RAY" start --head --block --port="$RAY_PORT" --node-ip-address=127.0.0.1 \
    --num-cpus="$HEAD_CPUS" --num-gpus=0 --resources='{"node_a": 1}' --object-store-memory="$OBJECT_STORE" \
    --include-dashboard=false --disable-usage-stats --temp-dir="$DIR/ray-head"
  # `ray start` writes the address file once its raylet has registered with the GCS.
  await ray-head 90 test -s "$DIR/ray-head/ray_current_cluster"
  if ((NODES >= 2)); then
    launch ray-node2 "$RAY" start --block --address="127.0.0.1:$RAY_PORT" --node-ip-address=127.0.0.1 \
      --num-cpus="$NODE2_CPUS" --num-gpus=0 --resources='{"node_b": 1}' --object-store-memory="$OBJECT_STORE" \
      --disable-usage-stats --temp-dir="$DIR/ray-node2"
    await ray-node2 90 test -s "$DIR/ray-node2/ray_current_cluster"
  fi

  # The service needs the tracking server only once a job starts (and waits for it then).
  write_server_config
  if [[ "${CRUCIBLE_MLFLOW_AUTH:-0}" == 1 ]]; then
    # The service's MLflow client reads its credentials from these variables; locally the
    # admin account stands in for the service account a cluster would create.
    MLFLOW_TRACKING_USERNAME="${MLFLOW_TRACKING_USERNAME:-${MLFLOW_AUTH_ADMIN_USERNAME:-admin}}" \
      MLFLOW_TRACKING_PASSWORD="${MLFLOW_TRACKING_PASSWORD:-$MLFLOW_AUTH_ADMIN_PASSWORD}" \
      launch crucible "$PY" -m service.cli serve --config "$DIR/server.yaml"
  else
    launch crucible "$PY" -m service.cli serve --config "$DIR/server.yaml"
  fi
  await mlflow 120 http_ok "http://127.0.0.1:$MLFLOW_PORT/health"
  await crucible 120 http_ok "http://127.0.0.1:$PORT/health"
  trap - EXIT
  echo "local-cluster: up"
  echo "  crucible  http://127.0.0.1:$PORT   (admin token: $DIR/state/token)"
  echo "  mlflow    http://127.0.0.1:$MLFLOW_PORT   (backend: ${backend%%://*})"
  local nodes="1 node: node_a"
  if ((NODES >= 2)); then nodes="2 nodes: node_a, node_b"; fi
  echo "  ray       127.0.0.1:$RAY_PORT   ($nodes)"
  echo "  logs      $DIR/logs"
  echo "  try: CRUCIBLE_URL=http://127.0.0.1:$PORT CRUCIBLE_TOKEN=\$(cat $DIR/state/token) \\"
  echo "       $(dirname "$PY")/crucible submit examples/digits-bayes.yaml --wait"
}

# A Ray node's id, from its raylet's log (the `crucible.node` tag shows its first 8 characters).
node_id() {
  local log
  log="$(ls "$DIR/$1"/session_*/logs/raylet.out 2>/dev/null | tail -n 1)" || true
  [[ -n "$log" ]] && sed -n 's/.*Setting node ID node_id=\([0-9a-f]*\).*/\1/p' "$log" | head -n 1
}

status() {
  local name pid rc=0
  for name in ray-head ray-node2 mlflow crucible; do
    if pid="$(ours "$name")"; then
      if [[ "$name" == ray-* ]]; then
        printf '%-10s running (PID %s, node id %s)\n' "$name" "$pid" "$(node_id "$name")"
      else
        printf '%-10s running (PID %s)\n' "$name" "$pid"
      fi
    else
      printf '%-10s stopped\n' "$name"
      rc=3
    fi
  done
  return "$rc"
}

kill_node2() {
  local pid
  pid="$(ours ray-node2)" || die "ray-node2 is not running"
  # As if the machine died: the raylet and its agents (the process group) and the node's worker
  # processes (children of the raylet, each in a group of its own) all at once. Killing only the
  # raylet leaves its workers finishing the trial they run for a second or two.
  local victims
  victims="$(descendants "$pid")"
  # shellcheck disable=SC2086 # one PID per word
  kill -KILL -- "-$pid" $victims 2>/dev/null || true
  rm -f "$(pidfile ray-node2)"
  echo "local-cluster: killed ray-node2 (process group $pid)"
}

case "${1:-}" in
  up)
    [[ "$NODES" == 1 || "$NODES" == 2 ]] || die "CRUCIBLE_NODES must be 1 or 2, but got '$NODES'"
    up
    ;;
  down)
    stop_parts crucible mlflow ray-node2
    stop_parts ray-head
    echo "local-cluster: down"
    ;;
  status) status ;;
  kill-node2) kill_node2 ;;
  *)
    echo "usage: $0 up|down|status|kill-node2   (settings: see the top of this file)" >&2
    exit 2
    ;;
esac
