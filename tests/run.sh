#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs every
# suite. Works on a fresh machine with the Rust toolchain and Python 3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test dependencies (moto, boto3, pytest)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

# The moto contract tests must run here, not skip.
export SHADOWSYNC_REQUIRE_MOTO=1

echo "== formatting"
cargo fmt --all -- --check

echo "== Rust tests (unit, property, contract, CLI end to end)"
cargo test --workspace --no-fail-fast

# cargo test built target/debug/shadowsync for the integration tests; reuse it.
echo "== Python tests (boto3 against shadowsync dataplane serve and apply)"
SHADOWSYNC_BIN="$PWD/target/debug/shadowsync" python3 -m pytest -q -rs tests/python
