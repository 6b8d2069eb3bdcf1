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
# webhooks). Prints pgbench's report, turns/s = batches/s x BATCH and (runs of 8 s or
# more) PostgreSQL's CPU per turn, read from /proc: run it on the server's host. The database
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
  >/tmp/wabot-floor.out &
bench=$!
# As the daemon does (store/planner.rs), the tables the turns grow are analyzed while
# they grow, so that the generic plans are made for them as they are (this server
# may run without autovacuum); here every 3 s, to give the floor its best plans.
( while kill -0 $bench 2>/dev/null; do
    sleep 3
    psql "$url" -qc "ANALYZE users, wabot_customer_ids, conversations, conversation_keys, conversation_participants, conversation_contexts, messages, message_statuses, turn_jobs, send_jobs, wabot_turn_log" >/dev/null 2>&1 || true
  done ) &
analyzer=$!
# PostgreSQL's CPU per turn: the pgbench backends' user + system time (/proc, this
# host) over the run's middle, from its 3rd second to 2 s before its end, against the
# turns logged meanwhile (runs of 8 s or more). On a box shared with builds it moves
# as turns/s does (contention inflates CPU time too): run it on a quiet box.
cpu() { for p in $pids; do cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null; done | awk '{s += $1 + $2} END {print s + 0}'; }
turns() { psql "$url" -Atc "SELECT count(*) FROM wabot_turn_log"; }
pids=
if [ "$secs" -ge 8 ]; then
  sleep 2
  pids=$(psql "$url" -Atc "SELECT pid FROM pg_stat_activity WHERE datname = '$db' AND application_name = 'wabot'")
  t0=$(turns); c0=$(cpu); s0=$(date +%s.%N)
  sleep $((secs - 4))
  c1=$(cpu); t1=$(turns); s1=$(date +%s.%N)
fi
wait $bench
kill $analyzer 2>/dev/null || true
cat /tmp/wabot-floor.out
tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' /tmp/wabot-floor.out)
echo "floor: $(echo "$tps * $batch" | bc) turns/s ($batch turns a batch, $clients batches in flight, statuses $statuses)"
if [ -n "$pids" ]; then
  hz=$(getconf CLK_TCK)
  echo "$c0 $c1 $t0 $t1 $s0 $s1 $hz" | awk '{printf "floor: PostgreSQL CPU per turn %.3f ms (backends %.0f%% of one core, %d turns measured)\n", ($2 - $1) / $7 * 1000 / ($4 - $3), ($2 - $1) / $7 / ($6 - $5) * 100, $4 - $3}'
fi
[ "${KEEP:-0}" = 1 ] || psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null
