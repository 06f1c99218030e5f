#!/usr/bin/env bash
# Install what the test suite needs on a fresh machine, check formatting
# and lints (rustfmt; clippy with warnings as errors), build, and run every
# test: unit tests, and the end-to-end tests that start the real binaries
# (tests/e2e), including the dashboard in a real headless Chromium. Safe to
# run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

need_apt=()
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
[ -x "${AGENTCOM_CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]} (Debian packages)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The official Prometheus parsers, to check /metrics in a test.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  echo "==> installing the prometheus-client Python package"
  python3 -m pip install --quiet --disable-pip-version-check prometheus-client 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages prometheus-client
fi

# rustfmt and clippy, for the checks below (rustup's minimal profile lacks them).
for pair in fmt:rustfmt clippy:clippy; do
  subcommand=${pair%%:*} component=${pair#*:}
  if ! cargo "$subcommand" --version >/dev/null 2>&1; then
    echo "==> installing the $component component (rustup)"
    rustup component add "$component"
  fi
done

echo "==> cargo fmt --check (formatting)"
cargo fmt --all -- --check

echo "==> cargo clippy (every target, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> cargo build (debug binaries for the end-to-end tests)"
cargo build --workspace --bins --quiet

echo "==> cargo test"
start=$(date +%s)
AGENTCOM_SKIP_BUILD=1 cargo test --workspace --quiet -- "$@"
echo "==> all tests passed in $(( $(date +%s) - start ))s"
