#!/usr/bin/env bash
# Install what the test suite needs on a fresh machine, build, and run
# every test: unit tests, and the end-to-end tests that start the real
# binaries (tests/e2e). Safe to run again; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v git >/dev/null 2>&1 || need_apt+=(git)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

echo "==> cargo build (debug binaries for the end-to-end tests)"
cargo build --workspace --bins --quiet

echo "==> cargo test"
start=$(date +%s)
AGENTCOM_SKIP_BUILD=1 cargo test --workspace --quiet -- "$@"
echo "==> all tests passed in $(( $(date +%s) - start ))s"
