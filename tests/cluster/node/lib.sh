# Shared by tests/cluster/node/{up,down,build}: the real node's names, addresses and paths.
# shellcheck shell=bash
NODE_NAME=real-node-1
NODE_DIR="$STATE/node"
# Pods of the real node live on this bridge; the rest of 10.245.0.0/16 is blackholed.
POD_CIDR=10.245.0.0/24
POD_GATEWAY=10.245.0.1
POD_RANGE=10.245.0.0/16
# kwok's fake pod IPs: never a real address, blackholed too so nothing sent to one leaves the machine.
KWOK_POD_RANGE=10.244.0.0/16
SERVICE_RANGE=10.96.0.0/16
BRIDGE=ms-br0
# A bridge with no ports that routes the service range: a ClusterIP that kube-proxy has not (yet)
# programmed is dropped here, never sent to the default gateway.
SERVICE_DEV=ms-svc0
NFT_TABLE=modelship_node
CONTAINERD_SOCK="$NODE_DIR/containerd/containerd.sock"
# The API server as pods see it (in-cluster clients connect to the `kubernetes` Service's
# ClusterIP; its endpoint is this address on the bridge, forwarded to 127.0.0.1).
APISERVER_POD_PORT=${MODELSHIP_APISERVER_POD_PORT:-16444}
# metrics-server, on the bridge address too (the APIService's endpoint).
METRICS_SERVER_PORT=${MODELSHIP_METRICS_SERVER_PORT:-16445}

ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
