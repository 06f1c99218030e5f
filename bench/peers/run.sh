#!/usr/bin/env bash
# BullMQ on Redis with appendfsync always, measured like agentcom-loadgen.
#
#   bench/peers/run.sh [--seconds N] [--port P] [other bullmq-bench.mjs options]
#
# Installs what is missing (Debian's redis-server, node/npm, bullmq from the
# npm registry into bench/peers/node_modules), starts a private redis-server
# (own port and temp dir, appendonly yes, appendfsync always, no RDB), runs
# bullmq-bench.mjs, prints its Markdown tables and stops the server again.
# See README.md beside this file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port=""
bench_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --port=*) port="${1#--port=}"; shift ;;
    -h|--help)
      sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
      echo "options for bullmq-bench.mjs (defaults): --seconds 10 --warmup 1 --producers 64"
      echo "  --workers 8 --concurrency 25 --worker-procs 1 --probes 200 --body-bytes 500"
      exit 0 ;;
    *) bench_args+=("$1"); shift ;;
  esac
done

say() { echo "run.sh: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# --- what is missing -----------------------------------------------------------
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  say "installing Debian's redis-server (and redis-tools): the server BullMQ runs on, and redis-cli to check it"
  apt_install redis-server redis-tools
  # On a machine whose init starts services, the package starts its own
  # redis-server on 6379. This benchmark does not use it.
  if [ -e /run/redis/redis-server.pid ]; then
    say "note: the package started Debian's own redis-server service (port 6379); it is not used here. 'systemctl disable --now redis-server' stops it."
  fi
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "installing Debian's nodejs and npm: bullmq is a Node.js library"
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  say "node $(node --version) is older than 18, which bullmq 5 and this script need"; exit 1
fi
want_bullmq="$(node -p "require('$here/package.json').dependencies.bullmq")"
have_bullmq="$(node -p "try{require('$here/node_modules/bullmq/package.json').version}catch{''}")"
if [ "$have_bullmq" != "$want_bullmq" ]; then
  say "installing bullmq $want_bullmq from the npm registry into $here/node_modules (pinned in package.json / package-lock.json)"
  if [ -f "$here/package-lock.json" ]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$here" && npm install --no-audit --no-fund --loglevel=error)
  fi
fi

# --- a private redis-server ----------------------------------------------------
free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
[ -n "$port" ] || port="$(free_port)"
dir="$(mktemp -d -t bench-peers-redis.XXXXXX)"
redis_pid=""
bench_pid=""
cleanup() {
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    kill "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$redis_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
  --appendonly yes --appendfsync always --save '' \
  --daemonize no --logfile "$dir/redis.log" &
redis_pid=$!
for _ in $(seq 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  kill -0 "$redis_pid" 2>/dev/null || { say "redis-server did not start:"; cat "$dir/redis.log" >&2; exit 1; }
  sleep 0.1
done
fsync="$(redis-cli -p "$port" config get appendfsync | tail -1)"
aof="$(redis-cli -p "$port" info persistence | tr -d '\r' | grep '^aof_enabled:')"
say "private $(redis-server --version | grep -o 'v=[^ ]*' | sed 's/v=/redis-server /') on 127.0.0.1:$port in $dir: appendfsync $fsync, $aof"
if [ "$fsync" != always ] || [ "$aof" != "aof_enabled:1" ]; then
  say "redis is not fsyncing every write; stopping"; exit 1
fi

# --- the benchmark ---------------------------------------------------------------
node "$here/bullmq-bench.mjs" --port "$port" ${bench_args[@]+"${bench_args[@]}"} &
bench_pid=$!
wait "$bench_pid"
