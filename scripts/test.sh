#!/usr/bin/env bash
# Install what the test suite needs on a fresh machine, check formatting
# and lints (rustfmt; clippy with warnings as errors), build, and run every
# test: unit tests, and the end-to-end tests that start the real binaries
# (tests/e2e), including the dashboard in a real headless Chromium.
#
# It says what it installs and why, installs only what is missing (safe to
# run again), and never touches the system's Python: the one Python package
# the tests need goes into a private virtual environment under target/.
# The test run prints one line per test binary and a total; the full
# output is kept in target/test-output.log. Then the behaviour suites
# (durability, failures, chaos, API, ...) run again with the hub's store in
# PostgreSQL, on a private cluster that scripts/test-postgres.sh starts
# under target/test-pg and stops at the end (lines labelled "(postgres)",
# output in target/test-output-postgres.log; AGENTCOM_TEST_POSTGRES=0
# skips that pass).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# Debian packages, each for a reason.
need_apt=() why=()
want() { need_apt+=("$1"); why+=("  $1: $2"); }
command -v git >/dev/null 2>&1 || want git "the sidecar's branches and the hub's merge queue run real git"
command -v python3 >/dev/null 2>&1 || want python3 "the metrics test parses /metrics with Prometheus' official Python parsers"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || want python3-venv "a private environment for that parser (the system's Python is left alone)"
[ -x "${AGENTCOM_CHROMIUM:-/usr/bin/chromium}" ] || want chromium "the dashboard tests drive a real headless browser"
command -v systemd-analyze >/dev/null 2>&1 || want systemd "'agentcom-sidecar join' writes systemd units; the tests check them with systemd-analyze verify"
command -v npm >/dev/null 2>&1 || want npm "pm2 (from the npm registry) restarts a joined sidecar for real in a test"
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || want postgresql "the behaviour suites run again against the PostgreSQL store, on a private cluster (scripts/test-postgres.sh)"
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing Debian packages:"
  printf '%s\n' "${why[@]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The official Prometheus parsers, in a private virtual environment.
VENV=target/test-venv
if ! "$VENV/bin/python3" -c 'import prometheus_client' >/dev/null 2>&1; then
  echo "==> installing prometheus-client (PyPI) into $VENV: the metrics test parses /metrics with it"
  python3 -m venv "$VENV"
  "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check prometheus-client
fi
export PATH="$PWD/$VENV/bin:$PATH"

# pm2, the process manager 'agentcom-sidecar join --install pm2' uses, in a
# private folder (not installed globally).
TOOLS=target/test-tools
if [ ! -x "$TOOLS/node_modules/.bin/pm2" ]; then
  echo "==> installing pm2 (npm registry) into $TOOLS: a test has it restart a joined sidecar"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" pm2@7 >/dev/null
fi
export PATH="$PWD/$TOOLS/node_modules/.bin:$PATH"

# rustfmt and clippy, for the checks below (rustup's minimal profile lacks them).
for pair in fmt:rustfmt clippy:clippy; do
  subcommand=${pair%%:*} component=${pair#*:}
  if ! cargo "$subcommand" --version >/dev/null 2>&1; then
    echo "==> installing the $component component (rustup): the formatting and lint checks"
    rustup component add "$component"
  fi
done

echo "==> cargo fmt --check (formatting)"
cargo fmt --all -- --check

echo "==> cargo clippy (every target, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> cargo build (debug binaries for the end-to-end tests)"
cargo build --workspace --bins --quiet

# A private PostgreSQL (its own data directory and port under target/test-pg),
# stopped when this script ends, however it ends. The harness's own test
# of it runs in the first pass; the second pass runs the behaviour suites
# with every hub's store in a database of its own there.
trap 'scripts/test-postgres.sh stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo "==> starting a private PostgreSQL (scripts/test-postgres.sh)"
AGENTCOM_TEST_PG_URL=$(scripts/test-postgres.sh start)
export AGENTCOM_TEST_PG_URL

# One line per test binary (labelled with $1, if any), a total, failures
# in full; the whole output goes to the log file $2.
summarize() {
  tee "$2" | awk -v label="$1" '
  /^     Running / {
    path = $2; deps = $NF
    gsub(/[()]/, "", deps); sub(/^.*\//, "", deps); sub(/-[0-9a-f]+$/, "", deps)
    name = path; sub(/^.*\//, "", name); sub(/\.rs$/, "", name)
    if (path ~ /^unittests/) { name = deps " (unit)" }
    else if (path ~ /^e2e\//) { name = "e2e " name }
    else { name = name " (integration)" }
    if (label != "") { name = name " (" label ")" }
    next
  }
  /^test .* FAILED$/ { print "    FAILED: " $2; fflush(); next }
  /^failures:$/ { infail = 1 }
  infail { print "    " $0 }
  /^test result:/ {
    infail = 0
    passed = $4; failed = $6; ignored = $8
    t = $NF
    total += passed; bad += failed
    printf "  %-34s %4d passed%s%s  (%s)\n", name, passed, (failed > 0 ? ", " failed " FAILED" : ""), (ignored > 0 ? ", " ignored " ignored" : ""), t; fflush()
    name = ""
    next
  }
  /^error(\[|:)/ { print }
  END { printf "  %-34s %4d passed, %d failed\n", (label != "" ? "total (" label ")" : "total"), total, bad }
'
}

echo "==> cargo test (one line per test binary; full output in target/test-output.log)"
start=$(date +%s)
log=target/test-output.log
set +e
AGENTCOM_SKIP_BUILD=1 cargo test --workspace --no-fail-fast -- "$@" 2>&1 | summarize "" "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "==> tests FAILED after $(( $(date +%s) - start ))s (exit $status); the full output is in $log"
else
  echo "==> all tests passed in $(( $(date +%s) - start ))s"
fi

# The behaviour suites again, every hub with its store in PostgreSQL.
pg_suites=(durability failures chaos api batch retention scheduling controls pipeline_recovery)
pg_status=0
if [ "${AGENTCOM_TEST_POSTGRES:-1}" = 0 ]; then
  echo "==> the PostgreSQL pass is skipped (AGENTCOM_TEST_POSTGRES=0)"
else
  echo "==> cargo test, store in PostgreSQL: ${pg_suites[*]} (full output in target/test-output-postgres.log)"
  pg_start=$(date +%s)
  pg_log=target/test-output-postgres.log
  set +e
  AGENTCOM_SKIP_BUILD=1 AGENTCOM_TEST_STORE=postgres \
    cargo test -p agentcom-tests --no-fail-fast "${pg_suites[@]/#/--test=}" -- "$@" 2>&1 |
    summarize postgres "$pg_log"
  pg_status=${PIPESTATUS[0]}
  set -e
  if [ "$pg_status" -ne 0 ]; then
    echo "==> tests on PostgreSQL FAILED after $(( $(date +%s) - pg_start ))s (exit $pg_status); the full output is in $pg_log"
  else
    echo "==> all tests on PostgreSQL passed in $(( $(date +%s) - pg_start ))s"
  fi
fi
[ "$status" -eq 0 ] || exit "$status"
exit "$pg_status"
