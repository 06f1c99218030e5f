#!/usr/bin/env bash
# A private PostgreSQL for the tests: its own cluster under target/test-pg
# (made afresh by every start), its own free port on 127.0.0.1, its own
# socket directory, trust authentication for the superuser role
# `agentcom`, fsync on (the durability tests kill -9 the hub and count on
# every acknowledged write being on disk). Nothing system-wide is touched:
# the Debian cluster, if any, is neither started nor read.
#
#   scripts/test-postgres.sh start   start it; prints the admin URL,
#                                    postgres://agentcom@127.0.0.1:PORT/postgres
#   scripts/test-postgres.sh stop    stop it (a no-op if it is not running)
#   scripts/test-postgres.sh url     the admin URL of the running cluster
#
# The tests read the admin URL from AGENTCOM_TEST_PG_URL, and with
# AGENTCOM_TEST_STORE=postgres give each hub a database of its own:
#
#   export AGENTCOM_TEST_PG_URL=$(scripts/test-postgres.sh start)
#   AGENTCOM_TEST_STORE=postgres cargo test -p agentcom-tests --test durability
#   scripts/test-postgres.sh stop
#
# PostgreSQL refuses to run as root: as root the cluster belongs to, and
# runs as, the `postgres` system user that Debian's package creates.
# Progress goes to stderr, the URL alone to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

ROLE=agentcom
# Where the cluster lives. As root, the postgres user must be able to reach
# it; if the checkout is somewhere it cannot (under /root, say), the
# cluster goes to a private directory under /tmp, named in target/test-pg/base.
HOME_DIR="$PWD/target/test-pg"

say() { echo "test-postgres: $*" >&2; }

pg_bin() {
  local initdb
  initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$initdb" ]; then
    say "no initdb under /usr/lib/postgresql/*/bin: install Debian's postgresql (scripts/test.sh does)"
    exit 1
  fi
  dirname "$initdb"
}

# Run a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

base_dir() {
  if [ -f "$HOME_DIR/base" ]; then cat "$HOME_DIR/base"; else echo "$HOME_DIR"; fi
}

running() {
  local base=$1
  [ -f "$base/data/postmaster.pid" ] && as_owner "$(pg_bin)/pg_ctl" -D "$base/data" status >/dev/null 2>&1
}

stop() {
  local base
  base=$(base_dir)
  [ -d "$base/data" ] || return 0
  if running "$base"; then
    local t0=$SECONDS
    # fast: disconnect the clients, roll back what is open, shut down cleanly.
    if ! as_owner "$(pg_bin)/pg_ctl" -D "$base/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
      say "a fast stop did not finish in 30 s: stopping at once (immediate)"
      as_owner "$(pg_bin)/pg_ctl" -D "$base/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    say "stopped the cluster in $base ($((SECONDS - t0)) s)"
  fi
  if running "$base"; then
    say "the cluster in $base is still running"
    return 1
  fi
}

# A port nothing listens on, outside the kernel's range of ephemeral ports
# (the tests' own servers take theirs from that range, by binding port 0).
pick_port() {
  local port tries=0
  while [ $tries -lt 100 ]; do
    tries=$((tries + 1))
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  say "no free port found"
  return 1
}

start() {
  local bin base t0=$SECONDS
  bin=$(pg_bin)
  # Fresh every time: stop whatever an earlier run left, remove it, initdb
  # again (about two seconds). Nothing from an earlier run (databases,
  # settings, a half-written cluster after a crash) can leak into this one.
  stop
  base=$(base_dir)
  [ "$base" = "$HOME_DIR" ] || rm -rf "$base"
  rm -rf "$HOME_DIR"
  mkdir -p "$HOME_DIR"
  base=$HOME_DIR
  if [ "$(id -u)" -eq 0 ]; then
    if ! runuser -u postgres -- test -x "$HOME_DIR"; then
      base=$(mktemp -d "${TMPDIR:-/tmp}/agentcom-test-pg.XXXXXX")
      chmod 0755 "$base"
      echo "$base" >"$HOME_DIR/base"
      say "the postgres user cannot reach $HOME_DIR: the cluster goes to $base"
    fi
    chown postgres: "$base"
  fi
  # A Unix socket path must fit in 107 bytes: if the checkout's path is too
  # long for it, the socket goes to a short directory of its own.
  local sockets="$base/run"
  if [ ${#sockets} -gt 80 ]; then
    sockets=$(mktemp -d "${TMPDIR:-/tmp}/agentcom-test-pg-run.XXXXXX")
    chmod 0755 "$sockets"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$sockets"
  fi
  as_owner mkdir -p "$sockets"
  as_owner "$bin/initdb" --pgdata="$base/data" --username="$ROLE" --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8 >"$base/initdb.log" 2>&1 || {
    say "initdb failed:"
    cat "$base/initdb.log" >&2
    exit 1
  }
  local port attempt
  for attempt in 1 2 3 4 5; do
    port=$(pick_port)
    # Durability is real: fsync, synchronous commits and full page writes
    # are PostgreSQL's defaults, set here so that no one turns them off.
    # Room for many hubs at once (each has a pool of connections).
    cat >"$base/data/postgresql.auto.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sockets'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 300
EOF
    [ "$(id -u)" -ne 0 ] || chown postgres: "$base/data/postgresql.auto.conf"
    if as_owner "$bin/pg_ctl" -D "$base/data" -l "$base/postgres.log" -w -t 60 start >/dev/null 2>&1; then
      echo "$port" >"$HOME_DIR/port"
      say "started PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $base/data, log in $base/postgres.log ($((SECONDS - t0)) s)"
      echo "postgres://$ROLE@127.0.0.1:$port/postgres"
      return 0
    fi
    say "start on port $port failed (attempt $attempt); its log:"
    tail -n 5 "$base/postgres.log" >&2 || true
  done
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url)
    base=$(base_dir)
    running "$base" || { say "not running"; exit 1; }
    echo "postgres://$ROLE@127.0.0.1:$(cat "$HOME_DIR/port")/postgres"
    ;;
  *)
    echo "usage: $0 start|stop|url" >&2
    exit 2
    ;;
esac
