#!/bin/sh
# The floor (issue 21): PostgreSQL alone doing the database work of wabot's turns,
# as fast as it can, on a fresh database migrated by `wabot migrate run`.
#
#   benches/floor/run.sh [secs]      # under the bench lock:
#   flock /tmp/wabot-bench.lock benches/floor/run.sh 30
#
# Environment: PGSERVER (the server, no database: postgres://postgres@127.0.0.1:5432),
# WABOT (default target/release/wabot), BATCH (turns per batch, 64), CLIENTS
# (batches in flight, 4), NCONV (customers, 4096), STATUSES (1; 0: no status
# webhooks). Prints pgbench's report and turns/s = batches/s x BATCH. The database
# (wabot_floor) is dropped at the end unless KEEP=1.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-30}
server=${PGSERVER:-postgres://postgres@127.0.0.1:5432}
db=wabot_floor
url="$server/$db"
wabot=${WABOT:-target/release/wabot}
batch=${BATCH:-64}
clients=${CLIENTS:-4}
nconv=${NCONV:-4096}
statuses=${STATUSES:-1}

psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null
DATABASE_URL=$url WABOT_LOG_FILTER=warn "$wabot" migrate run >/dev/null
psql "$url" -q -v nconv="$nconv" -f "$here/setup.sql" 2>&1 | grep -v 'does not exist, skipping' || true
# As wabot's connections (store::connect_options): batch statements planned once, no
# JIT, and application_name 'wabot' (a messages row from any other connection is an
# agent's: trigger wabot_agent_message hands the conversation over).
PGAPPNAME=wabot PGOPTIONS='-c plan_cache_mode=force_generic_plan -c jit=off' \
  pgbench "$url" -n -M prepared ${PGBENCH_ARGS:-} -f "$here/turn.sql" -c "$clients" -j "$clients" -T "$secs" \
    -D batch="$batch" -D nconv="$nconv" -D clients="$clients" -D statuses="$statuses" \
  | tee /tmp/wabot-floor.out
tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' /tmp/wabot-floor.out)
echo "floor: $(echo "$tps * $batch" | bc) turns/s ($batch turns a batch, $clients batches in flight, statuses $statuses)"
[ "${KEEP:-0}" = 1 ] || psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null
