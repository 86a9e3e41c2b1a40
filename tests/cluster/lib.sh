# Shared by tests/cluster/{up,down,restart}: where the local control plane keeps its state.
# shellcheck shell=bash
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
export GOTOOLCHAIN=local
STATE=${MODELSHIP_CLUSTER_DIR:-$(cd "$here/../.." && pwd)/.cluster}
ETCD_PORT=${MODELSHIP_ETCD_PORT:-23790}
ETCD_PEER_PORT=$((ETCD_PORT + 10))
APISERVER_PORT=${MODELSHIP_APISERVER_PORT:-16443}
KUBECONFIG_FILE="$STATE/kubeconfig"

log() { echo "[cluster $(date +%H:%M:%S)] $*" >&2; }

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

# The audit policy: who changed what (Metadata level, no bodies) for the clients under test, and
# reads of Leases; the control plane's own components are left out. Tests read
# $STATE/logs/audit.log to see which client's writes reached the API server, and when.
write_audit_policy() {
  cat >"$STATE/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  users: [kwok, "system:kube-controller-manager", "system:kube-scheduler", "system:apiserver", "system:node:real-node-1"]
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: Metadata
  resources: [{group: coordination.k8s.io, resources: [leases]}]
- level: None
POLICY
}

start_apiserver() {
  local p="$STATE/pki"
  write_audit_policy
  start kube-apiserver "$BIN/kube-apiserver" \
    --audit-policy-file="$STATE/audit-policy.yaml" --audit-log-path="$STATE/logs/audit.log" \
    --audit-log-maxsize=200 --audit-log-maxbackup=1 \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" \
    --kubelet-client-certificate="$p/admin.crt" --kubelet-client-key="$p/admin.key" \
    --authorization-mode=RBAC \
    --enable-admission-plugins=PodNodeSelector,PodTolerationRestriction \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.96.0.0/16 \
    --allow-privileged=true --profiling=false \
    --endpoint-reconciler-type=none \
    --requestheader-client-ca-file="$p/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$p/front-proxy-client.crt" --proxy-client-key-file="$p/front-proxy-client.key" \
    --enable-aggregator-routing=true
}

apiserver_healthy() {
  kubectl --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz
}
