#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, built from the official Go modules that
# go.mod beside this script pins: etcd, kube-apiserver and kube-controller-manager. No
# kubelet runs, so no pod ever starts; everything an operator talks to is real (RBAC,
# admission with Pod Security and OwnerReferencesPermissionEnforcement on top of the
# default plugins, CRD validation and CEL, server-side apply, watches, the namespace
# controller and the garbage collector).
#
#   cluster.sh build                 build the binaries once (cached), print their folder
#                                    (kubectl of the same release is built there too)
#   cluster.sh up [DIR] [--owner PID] start a control plane whose files live in DIR
#   cluster.sh down [DIR]            stop it (DIR stays, with its logs)
#   cluster.sh env [DIR]             print `export KUBECONFIG=...` (and PATH for the
#                                    matching kubectl) for a shell: eval "$(cluster.sh env)"
#   cluster.sh stop|start|restart COMPONENT [DIR]
#                                    one component (etcd, apiserver, controller-manager)
#   cluster.sh token-kubeconfig DIR NAMESPACE SERVICEACCOUNT OUT
#                                    a kubeconfig that authenticates as a ServiceAccount
#                                    with a token from the TokenRequest API
#
# DIR defaults to $SHADOWSYNC_CLUSTER_DIR, else ${TMPDIR:-/tmp}/shadowsync-cluster.
# With --owner PID, the control plane stops by itself when process PID exits (tests use
# it, so that a killed test run leaves nothing behind).
#
# The build goes to $SHADOWSYNC_KUBE_CACHE (default ~/.cache/shadowsync/kube), in a
# folder named by the Kubernetes version and a hash of go.mod, go.sum and the Go
# version: a second build, or a second checkout, reuses it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${SHADOWSYNC_KUBE_CACHE:-$HOME/.cache/shadowsync/kube}"
default_dir="${SHADOWSYNC_CLUSTER_DIR:-${TMPDIR:-/tmp}/shadowsync-cluster}"
components=(etcd apiserver controller-manager)

log() { echo "cluster.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# The pinned release (go mod tidy lists it among the requirements of the tools).
kube_version() {
  awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"
}

bin_dir() {
  local key
  key="$(cat "$here/go.mod" "$here/go.sum" <(go env GOVERSION) | sha256sum | cut -c1-12)"
  echo "$cache_root/$(kube_version)-$key"
}

# Builds the three binaries unless the cache has them; prints their folder.
build() {
  command -v go >/dev/null || die "Go is needed to build the control plane (go.mod: $here/go.mod)"
  local dir version started
  dir="$(bin_dir)"
  version="$(kube_version)"
  mkdir -p "$cache_root"
  # One build at a time per cache, whoever asks (parallel tests, two checkouts).
  exec 9>"$cache_root/.lock"
  flock 9
  if [ ! -x "$dir/kube-apiserver" ] || [ ! -x "$dir/kube-controller-manager" ] || [ ! -x "$dir/kubectl" ] || [ ! -x "$dir/etcd" ]; then
    started=$(date +%s)
    log "building etcd, kube-apiserver, kube-controller-manager and kubectl $version (once; several minutes on 2 cores)"
    local tmp="$dir.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # -s -w: no symbol tables (smaller, faster to link); the version is stamped as the
    # release's own build would, so that kubectl and discovery report it.
    local pkg=k8s.io/component-base/version
    local ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$(echo "${version#v}" | cut -d. -f1)"
    ldflags="$ldflags -X $pkg.gitMinor=$(echo "$version" | cut -d. -f2) -X $pkg.gitTreeState=clean"
    (
      cd "$here"
      export CGO_ENABLED=0 GOFLAGS=-mod=mod
      go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kubectl
      go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
    )
    rm -rf "$dir"
    mv "$tmp" "$dir"
    log "built in $(( $(date +%s) - started )) s: $dir"
  fi
  flock -u 9
  echo "$dir"
}

# Three free loopback ports.
free_ports() {
  python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# CA, serving and client certificates, the service-account signing key.
make_pki() {
  local dir="$1" pki="$1/pki"
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=shadowsync-test-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    # name, subject, extensions
    issue() {
      openssl req -new -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    issue apiserver "/CN=kube-apiserver" \
      "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth"
    issue admin "/O=system:masters/CN=shadowsync-admin" "extendedKeyUsage=clientAuth"
    issue controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

# write_kubeconfig DIR OUT USER NAMESPACE CREDENTIALS: a kubeconfig for the apiserver of
# DIR; CREDENTIALS are the `user:` lines (client certificate or token).
write_kubeconfig() {
  local dir="$1" out="$2" user="$3" namespace="$4" credentials="$5"
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: shadowsync-test
  cluster:
    server: https://127.0.0.1:$(cat "$dir/apiserver.port")
    certificate-authority: $dir/pki/ca.crt
users:
- name: $user
  user:
$credentials
contexts:
- name: $user
  context: {cluster: shadowsync-test, user: $user, namespace: $namespace}
current-context: $user
EOF
}

# cert_kubeconfig DIR NAME CERT-NAME: DIR/NAME.kubeconfig with a client certificate.
cert_kubeconfig() {
  local cert="$1/pki/$3"
  write_kubeconfig "$1" "$1/$2.kubeconfig" "$2" default \
    "    client-certificate: $cert.crt
    client-key: $cert.key"
}

write_audit_policy() {
  # Every request at Metadata level (who, what, verb, code; no bodies), once when the
  # response is complete and once when a watch starts: tests and the benchmark count
  # the operator's requests here, by its ServiceAccount's name.
  cat >"$1/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
EOF
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start_component DIR NAME: starts one component in its own session, logs to DIR/NAME.log.
start_component() {
  local dir="$1" name="$2" bin
  bin="$(cat "$dir/bin")"
  pid_alive "$dir/$name.pid" && die "$name already runs in $dir"
  local -a cmd
  case "$name" in
    etcd)
      cmd=("$bin/etcd" --name shadowsync --data-dir "$dir/etcd"
        --listen-client-urls "http://127.0.0.1:$(cat "$dir/etcd.port")"
        --advertise-client-urls "http://127.0.0.1:$(cat "$dir/etcd.port")"
        --listen-peer-urls "http://127.0.0.1:$(cat "$dir/etcd-peer.port")"
        --initial-advertise-peer-urls "http://127.0.0.1:$(cat "$dir/etcd-peer.port")"
        --initial-cluster "shadowsync=http://127.0.0.1:$(cat "$dir/etcd-peer.port")"
        # A test cluster's data is thrown away: no fsync per write.
        --unsafe-no-fsync --log-level warn)
      ;;
    apiserver)
      cmd=("$bin/kube-apiserver"
        --etcd-servers "http://127.0.0.1:$(cat "$dir/etcd.port")"
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1
        --secure-port "$(cat "$dir/apiserver.port")" --cert-dir "$dir/pki"
        --tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key"
        --client-ca-file "$dir/pki/ca.crt"
        --authorization-mode Node,RBAC
        # The defaults, plus what a production cluster (EKS, GKE, OpenShift) adds: an
        # ownerReference with blockOwnerDeletion needs update on the owner's finalizers.
        --enable-admission-plugins OwnerReferencesPermissionEnforcement
        --service-account-issuer https://kubernetes.default.svc.cluster.local
        --service-account-key-file "$dir/pki/sa.pub"
        --service-account-signing-key-file "$dir/pki/sa.key"
        --service-cluster-ip-range 10.0.0.0/24
        # No Service "kubernetes" endpoints: the apiserver serves loopback only.
        --endpoint-reconciler-type none
        --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/audit.log"
        --audit-log-format json --audit-log-mode blocking
        # One file, never rotated: the benchmark reads it as it grows, and a fleet run
        # writes more than the 100 MB at which kube-apiserver rotates by default.
        --audit-log-maxsize 1000000
        --profiling=false
        ${SHADOWSYNC_APISERVER_ARGS:-})
      ;;
    controller-manager)
      cmd=("$bin/kube-controller-manager"
        --kubeconfig "$dir/controller-manager.kubeconfig"
        --authentication-kubeconfig "$dir/controller-manager.kubeconfig"
        --authorization-kubeconfig "$dir/controller-manager.kubeconfig"
        --bind-address 127.0.0.1 --secure-port 0
        --leader-elect=false
        --use-service-account-credentials
        --service-account-private-key-file "$dir/pki/sa.key"
        --root-ca-file "$dir/pki/ca.crt"
        --cluster-signing-cert-file "$dir/pki/ca.crt" --cluster-signing-key-file "$dir/pki/ca.key"
        --controllers "namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller"
        ${SHADOWSYNC_CONTROLLER_MANAGER_ARGS:-})
      ;;
    *) die "unknown component $name (one of: ${components[*]})" ;;
  esac
  setsid "${cmd[@]}" >>"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

stop_component() {
  local dir="$1" name="$2" pidfile="$1/$2.pid" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# wait_ready DIR NAME: polls the component's health with a deadline.
wait_ready() {
  local dir="$1" name="$2" deadline=$((SECONDS + 120)) url
  case "$name" in
    etcd) url="http://127.0.0.1:$(cat "$dir/etcd.port")/health" ;;
    apiserver) url="https://127.0.0.1:$(cat "$dir/apiserver.port")/readyz" ;;
    controller-manager) url="" ;;
  esac
  while :; do
    pid_alive "$dir/$name.pid" || die "$name exited; last lines of $dir/$name.log:
$(tail -n 30 "$dir/$name.log")"
    if [ -z "$url" ]; then
      # No serving port: ready once it has made its first request (namespaces sync).
      grep -q "Caches are synced\|Started controller\|Starting controller" "$dir/$name.log" 2>/dev/null && return 0
    elif curl -fsS --max-time 2 --cacert "$dir/pki/ca.crt" \
      --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" "$url" >/dev/null 2>&1; then
      return 0
    fi
    [ $SECONDS -lt $deadline ] || die "$name not ready within 120 s; see $dir/$name.log"
    sleep 0.2
  done
}

up() {
  local dir="$1" owner="${2:-}" bin started=$SECONDS
  if pid_alive "$dir/apiserver.pid"; then
    die "a control plane already runs in $dir (cluster.sh down $dir)"
  fi
  bin="$(build)"
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "$bin" >"$dir/bin"
  read -r etcd_port peer_port api_port < <(free_ports)
  echo "$etcd_port" >"$dir/etcd.port"
  echo "$peer_port" >"$dir/etcd-peer.port"
  echo "$api_port" >"$dir/apiserver.port"
  make_pki "$dir"
  write_audit_policy "$dir"
  cert_kubeconfig "$dir" admin admin
  cert_kubeconfig "$dir" controller-manager controller-manager
  for name in "${components[@]}"; do
    start_component "$dir" "$name"
    wait_ready "$dir" "$name"
  done
  if [ -n "$owner" ]; then
    # Stops the control plane when the owner exits, however it exits.
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" down "$3"' \
      _ "$owner" "$here/cluster.sh" "$dir" >/dev/null 2>&1 </dev/null &
  fi
  log "up in $((SECONDS - started)) s: kube-apiserver https://127.0.0.1:$api_port ($dir)"
  log "use it with: eval \"\$(bash $here/cluster.sh env $dir)\"; kubectl get namespaces"
  echo "export KUBECONFIG=$dir/admin.kubeconfig"
}

down() {
  local dir="$1"
  for name in controller-manager apiserver etcd; do
    stop_component "$dir" "$name"
  done
}

token_kubeconfig() {
  local dir="$1" namespace="$2" sa="$3" out="$4" token
  token="$(KUBECONFIG="$dir/admin.kubeconfig" "$(cat "$dir/bin")/kubectl" create token "$sa" -n "$namespace" --duration 24h)"
  umask 077
  write_kubeconfig "$dir" "$out" "$namespace-$sa" "$namespace" "    token: $token"
}

command="${1:-}"
shift || true
case "$command" in
  build) build ;;
  up)
    dir="$default_dir"
    owner=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --owner) owner="$2"; shift 2 ;;
        *) dir="$1"; shift ;;
      esac
    done
    up "$dir" "$owner"
    ;;
  down) down "${1:-$default_dir}" ;;
  env)
    dir="${1:-$default_dir}"
    echo "export KUBECONFIG=$dir/admin.kubeconfig"
    echo "export PATH=$(cat "$dir/bin"):\$PATH  # kubectl of the same release"
    ;;
  stop | start | restart)
    name="${1:?component: ${components[*]}}"
    dir="${2:-$default_dir}"
    case "$command" in
      stop) stop_component "$dir" "$name" ;;
      start) start_component "$dir" "$name"; wait_ready "$dir" "$name" ;;
      restart) stop_component "$dir" "$name"; start_component "$dir" "$name"; wait_ready "$dir" "$name" ;;
    esac
    ;;
  token-kubeconfig)
    [ $# -eq 4 ] || die "usage: cluster.sh token-kubeconfig DIR NAMESPACE SERVICEACCOUNT OUT"
    token_kubeconfig "$@"
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    [ -z "$command" ] || exit 2
    ;;
esac
