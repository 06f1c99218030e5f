#!/bin/bash
# Fail-over with the defaults: two release hubs on one PostgreSQL
# (ha.takeover_s = 5), the leader kill -9ed five times, each time from the
# kill until the other hub answers /healthz as the leader; the killed one
# comes back as the standby. Needs curl, psql and python3.
#
#   cargo build --release -p agentcom-hub
#   export AGENTCOM_TEST_PG_URL=$(scripts/test-postgres.sh start)
#   bench/failover.sh
#   scripts/test-postgres.sh stop
set -u
cd "$(dirname "$0")/.."
ADMIN=${AGENTCOM_TEST_PG_URL:?set AGENTCOM_TEST_PG_URL to an admin URL (scripts/test-postgres.sh start prints one)}
DB=failover_$$
psql "$ADMIN" -qc "CREATE DATABASE $DB"
URL="${ADMIN%/*}/$DB"
BIN=$PWD/target/release/agentcom-hub
D=$(mktemp -d)
start() { # name port
  AGENTCOM_STORE__BACKEND=postgres AGENTCOM_STORE__URL=$URL RUST_LOG=warn \
    $BIN serve --listen 127.0.0.1:$2 --data-dir $D/$1 >>$D/$1.log 2>&1 &
  echo $! > $D/$1.pid
}
role() { curl -s -m 1 http://127.0.0.1:$1/healthz | python3 -c 'import json,sys; print(json.load(sys.stdin).get("role"))' 2>/dev/null; }
now_ms() { date +%s%3N; }
start a 4701; until [ "$(role 4701)" = leader ]; do sleep 0.05; done
mkdir -p $D/b; cp $D/a/admin.token $D/b/; chmod 700 $D/b
start b 4702; until [ "$(role 4702)" = standby ]; do sleep 0.05; done
ports=(4701 4702); names=(a b); l=0
for i in 1 2 3 4 5; do
  o=$((1-l))
  t0=$(now_ms); kill -9 $(cat $D/${names[$l]}.pid)
  until [ "$(role ${ports[$o]})" = leader ]; do sleep 0.02; done
  echo "fail-over $i: $(( $(now_ms) - t0 )) ms"
  start ${names[$l]} ${ports[$l]}; until [ "$(role ${ports[$l]})" = standby ]; do sleep 0.05; done
  l=$o
done
kill -9 $(cat $D/a.pid) $(cat $D/b.pid) 2>/dev/null
wait 2>/dev/null
sleep 0.5; psql "$ADMIN" -qc "DROP DATABASE $DB WITH (FORCE)"; rm -rf $D
