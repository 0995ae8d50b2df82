#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs the real components the tests start
# (Debian's `prometheus`, for the Prometheus server and promtool) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo ".ci/test.sh: installing Debian's prometheus package (needed by the integration tests)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The Debian package starts a system Prometheus on :9090; the tests start their own on
# free ports, so stop it where a service manager runs.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo test --workspace --all-features
