# shellcheck shell=bash
# Common definitions for scripts/stack/k8s/*. Sourced, never executed.
# shellcheck source=../lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"
K8S_SCRIPTS="$STACK_SCRIPTS/k8s"

# One pinned release of each; bump here (a new cache dir is built).
K8S_VERSION=v1.36.3   # k8s.io/kubernetes: kube-apiserver, -controller-manager, -scheduler, kubectl
ETCD_VERSION=v3.6.16  # go.etcd.io/etcd/server/v3
KWOK_VERSION=v0.8.0   # sigs.k8s.io/kwok (cmd/kwok, built with its own go.mod)
# Gateway API CRDs, standard channel: config/crd/standard/*.yaml of the Go
# module (fetched into GOMODCACHE, not built). v1.7.0 needs go >= 1.27.
GATEWAY_API_VERSION=v1.6.3   # sigs.k8s.io/gateway-api
K8S_BINARIES="etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok"

# Built binaries and Go caches live outside the repo, so that reruns (and
# other checkouts) on this machine reuse them.
DA_CACHE="${DA_CACHE:-/var/cache/deploy-action}"
K8S_CACHE="$DA_CACHE/k8s/$K8S_VERSION-etcd${ETCD_VERSION#v}-kwok${KWOK_VERSION#v}"
K8S_BIN="$K8S_CACHE/bin"
GO="${GO:-/usr/local/go/bin/go}"

# Runtime state (certs, etcd data, kubeconfig, pids) under the stack dir.
K8S_DIR="$STACK_DIR/k8s"

# Ports, all on 127.0.0.1 only.
K8S_ETCD_PORT=16379        # etcd client (plain http)
K8S_ETCD_PEER_PORT=16380   # etcd peer (plain http, single member)
K8S_API_PORT=16443         # kube-apiserver (https)
K8S_KCM_PORT=16257         # kube-controller-manager /healthz (https)
K8S_SCHED_PORT=16259       # kube-scheduler /healthz (https)
K8S_KWOK_PORT=16247        # kwok: /healthz, /metrics (http) and, on the same port,
                           # every node's kubelet API (https; daemonEndpoints port)
K8S_EKS_AUTH_PORT=16444    # eks-authenticator.py, the token webhook (https)
K8S_SERVER="https://127.0.0.1:$K8S_API_PORT"
K8S_KUBECONFIG="$K8S_DIR/admin.kubeconfig"
K8S_NODES="kwok-node-1 kwok-node-2 kwok-node-3"
# Every node's InternalIP: where the apiserver reaches its "kubelet" (kwok's
# server) for pods/log (--kubelet-preferred-address-types=InternalIP).
K8S_NODE_IP=127.0.0.1
# Container logs: files kwok serves for pods/log (Logs/ClusterLogs objects
# point at them; see scripts/stack/k8s/pod-logs).
K8S_POD_LOGS_DIR="$K8S_DIR/pod-logs"
# Who a valid EKS token of $EKS_CLUSTER (../lib.sh) signed with the stack's
# AWS credentials is, as aws-iam-authenticator would map an IAM user.
K8S_EKS_ACCOUNT=123456789012   # moto's default account
K8S_EKS_USER="arn:aws:iam::$K8S_EKS_ACCOUNT:user/deployer"
K8S_EKS_USER_ID=AIDADEPLOYACTIONTEST1
K8S_EKS_GROUP=deploy-action:eks-deployers
# The least-privilege Role of docs/kubernetes.md, as a ClusterRole (bound to K8S_EKS_GROUP
# in namespace default; tests bind it where they need it).
K8S_DEPLOY_CLUSTERROLE=deploy-action

k8s_log() { printf '[stack k8s] %s\n' "$*" >&2; }
k8s_die() { printf '[stack k8s] ERROR: %s\n' "$*" >&2; exit 1; }

# k8s_built: every binary of the pinned set is in the cache.
k8s_built() {
    local b
    [ -e "$K8S_CACHE/.complete" ] || return 1
    for b in $K8S_BINARIES; do [ -x "$K8S_BIN/$b" ] || return 1; done
}
