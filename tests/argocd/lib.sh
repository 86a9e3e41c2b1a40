# Shared by tests/argocd/{up,down}: where the local ArgoCD keeps its state, and its ports.
# shellcheck shell=bash
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
export GOTOOLCHAIN=local
STATE=${MODELSHIP_ARGOCD_DIR:-${MODELSHIP_CLUSTER_DIR:-$(cd "$here/../.." && pwd)/.cluster}/argocd}
REPO_PORT=${MODELSHIP_ARGOCD_PORT:-18081}
REDIS_PORT=$((REPO_PORT + 1))
REPO_METRICS_PORT=$((REPO_PORT + 2))
CONTROLLER_METRICS_PORT=$((REPO_PORT + 3))
APPSET_METRICS_PORT=$((REPO_PORT + 4))
APPSET_PROBE_PORT=$((REPO_PORT + 5))
# The repository the manifests name, which a fork (and the tests) point elsewhere.
UPSTREAM_REPO=https://github.com/modelship/modelship.git
# The real node's containerd, when tests/cluster/up started one (MODELSHIP_REAL_NODE=1).
REAL_NODE_CONTAINERD=${MODELSHIP_CLUSTER_DIR:+$MODELSHIP_CLUSTER_DIR/node/containerd/containerd.sock}
COMPONENTS=(applicationset-controller application-controller repo-server redis)

log() { echo "[argocd $(date +%H:%M:%S)] $*" >&2; }

# Waits up to $1 seconds for the command in "${@:2}" to succeed.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then return 1; fi
    sleep 0.5
  done
}

# Starts component $1 in the background with the rest as its command line; records its PID.
start() {
  local name=$1; shift
  "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name"
  log "started $name (pid $!)"
}

# Stops component $1 by the PID we recorded, waiting for it to exit.
stop() {
  local pidfile="$STATE/pids/$1" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$pidfile"
}

# Reports that $1 failed, with the last lines of component $2's log (if given), stops everything, exits 1.
fail() {
  if [ -n "${2:-}" ]; then
    log "$1; the last lines of $STATE/logs/$2.log:"
    tail -20 "$STATE/logs/$2.log" >&2 || true
  else
    log "$1"
  fi
  for c in "${COMPONENTS[@]}"; do stop "$c"; done
  exit 1
}
