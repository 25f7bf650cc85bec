#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs every
# suite. Works on a fresh machine with the Rust toolchain, Go and Python 3 with pip
# (make and a C compiler are installed from Debian if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# jemalloc, the binary's allocator, is built from its source with make and a C compiler.
if ! command -v make >/dev/null || ! command -v cc >/dev/null; then
  echo "== installing make and a C compiler (Debian packages)"
  apt-get update -qq && apt-get install -y -qq make gcc >/dev/null
fi

echo "== installing test dependencies (moto, boto3, pytest, the Helm library, Lua)"
python3 -m pip install --quiet --disable-pip-version-check \
  -r tests/python/requirements.txt -r tests/chart/requirements.txt

# etcd, kube-apiserver, kube-controller-manager and kubectl from the official Go modules
# that tests/kube/go.mod pins; cached by version outside target/ (a fresh machine spends
# about 12 minutes here once). It builds while cargo builds the tests: both are long
# the first time, and each leaves gaps (downloads, links) the other fills.
echo "== building the Kubernetes control plane (cached) and the Rust tests"
kube_log="$(mktemp)"
bash tests/kube/cluster.sh build >"$kube_log" 2>&1 &
kube_build=$!

# The moto contract tests must run here, not skip.
export SHADOWSYNC_REQUIRE_MOTO=1

echo "== formatting"
cargo fmt --all -- --check

cargo test --workspace --no-run
if ! wait "$kube_build"; then
  cat "$kube_log"
  echo "building the Kubernetes control plane failed" >&2
  exit 1
fi
cat "$kube_log"
export SHADOWSYNC_KUBECTL="$(tail -n 1 "$kube_log")/kubectl"

echo "== Rust tests (unit, property, contract, CLI, admission, operator end to end on a real control plane)"
cargo test --workspace --no-fail-fast

# cargo test built target/debug/shadowsync for the integration tests; reuse it.
echo "== Python tests (boto3 against shadowsync dataplane serve, apply and import)"
SHADOWSYNC_BIN="$PWD/target/debug/shadowsync" python3 -m pytest -q -rs tests/python

echo "== chart tests (real Helm library)"
python3 -m pytest -q -rs tests/chart
