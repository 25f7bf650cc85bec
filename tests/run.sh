#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs every
# suite. Works on a fresh machine with the Rust toolchain and Python 3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test dependencies (moto, boto3, pytest, the Helm library, Lua)"
python3 -m pip install --quiet --disable-pip-version-check \
  -r tests/python/requirements.txt -r tests/chart/requirements.txt
if ! command -v kubectl >/dev/null 2>&1; then
  echo "== installing kubectl (Debian kubernetes-client)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq kubernetes-client
fi

# The moto contract tests and the kubectl checks must run here, not skip.
export SHADOWSYNC_REQUIRE_MOTO=1
export SHADOWSYNC_REQUIRE_KUBECTL=1

echo "== formatting"
cargo fmt --all -- --check

echo "== Rust tests (unit, property, contract, CLI, test apiserver, operator end to end)"
cargo test --workspace --no-fail-fast

# cargo test built target/debug/shadowsync for the integration tests; reuse it.
echo "== Python tests (boto3 against shadowsync dataplane serve, apply and import)"
SHADOWSYNC_BIN="$PWD/target/debug/shadowsync" python3 -m pytest -q -rs tests/python

echo "== chart tests (real Helm library)"
python3 -m pytest -q -rs tests/chart
