#!/usr/bin/env bash
# The BigQuery source over several tables (BENCHMARKS.md, "BigQuery source: rounds over
# several tables"); run through `scripts/bench.sh --only from-bigquery-tables`, which starts
# MariaDB and the emulator.
#
# BENCH_TABLES tables (default 6) of BENCH_TABLE_ROWS rows each (default 100,000) in the
# emulator are mirrored into MariaDB twice in the same run, side by side: once with
# `parallel_queries = 1` (a round's shape and summary queries one after the other, as before
# the setting) and once with the default 8, one after the other. For each it reports the
# idle rounds' duration, then, BENCH_ROUNDS times (default 3), the time from an UPDATE of
# 1 % of every table until MySQL shows all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
TABLES="${BENCH_TABLES:-6}"
ROWS="${BENCH_TABLE_ROWS:-100000}"
ROUNDS="${BENCH_ROUNDS:-3}"
INTERVAL="${BENCH_INTERVAL:-5}"
BIN="$CARGO_TARGET_DIR/release/binferry"
BQ_URL="http://127.0.0.1:${BINFERRY_BQ_PORT:-19050}/bigquery/v2"
DS="bench_tables_$(date +%s)"
WORK="$(mktemp -d /tmp/binferry-bench-bqt.XXXXXX)"
sql() { scripts/mariadb.sh client "$@"; }
. scripts/lib/bq_query.sh
now() { date +%s.%N; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  bq "DROP SCHEMA \`$DS\` CASCADE" >/dev/null 2>&1 || true
  for q in 1 8; do sql -e "DROP DATABASE IF EXISTS bench_bqt_$q" || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "creating $TABLES tables of $ROWS rows in the emulator ($DS)" >&2
bq "CREATE SCHEMA \`$DS\`" >/dev/null
for i in $(seq 1 "$TABLES"); do
  bq "CREATE TABLE $DS.t$i (id INT64, name STRING, qty INT64, PRIMARY KEY (id) NOT ENFORCED)" >/dev/null
  bq "INSERT INTO $DS.t$i SELECT n, CONCAT('item ', CAST(n AS STRING)), MOD(n, 97)
      FROM UNNEST(GENERATE_ARRAY(1, $ROWS)) AS n" >/dev/null
done
start() { # start Q: a pipeline with parallel_queries = Q into database bench_bqt_Q
  local q=$1
  sql -e "DROP DATABASE IF EXISTS bench_bqt_$q"
  cat > "$WORK/q$q.toml" <<EOF
[pipeline]
name = "bench-bqt-$q"
[source]
kind = "bigquery"
include = ["$DS.*"]
[source.bigquery]
project = "binferry-test"
endpoint = "$BQ_URL"
interval_secs = $INTERVAL
request_timeout_secs = 600
parallel_queries = $q
[buffer.embedded]
path = "$WORK/q$q.redb"
[sink.mysql]
port = $BINFERRY_MARIADB_PORT
user = "root"
database = "bench_bqt_$q"
EOF
  "$BIN" run --config "$WORK/q$q.toml" >"$WORK/q$q.log" 2>&1 &
  PIDS+=($!)
}
count() { # count Q WHERE: rows of every table of database bench_bqt_Q matching WHERE
  local q=$1 total=0 n
  for i in $(seq 1 "$TABLES"); do
    n=$(sql -N -e "SELECT COUNT(*) FROM bench_bqt_$q.t$i WHERE $2" 2>/dev/null || echo 0)
    total=$((total + n))
  done
  echo "$total"
}
declare -A lat idle changed
measure() { # measure Q: copy, idle rounds, then ROUNDS changes of 1 % of every table
  local q=$1 pid k t
  start "$q"
  pid=${PIDS[-1]}
  until [ "$(count "$q" 1)" = "$((TABLES * ROWS))" ]; do
    sleep 2
    kill -0 "$pid" 2>/dev/null || { tail -20 "$WORK/q$q.log" >&2; exit 1; }
  done
  sleep $((INTERVAL * 4))
  for k in $(seq 1 "$ROUNDS"); do
    sleep "$(python3 -c "import random; print(random.uniform(0, $INTERVAL))")"
    for i in $(seq 1 "$TABLES"); do
      bq "UPDATE $DS.t$i SET name = 'q$q round $k', qty = qty + 1 WHERE MOD(id, 100) = $k" >/dev/null
    done
    t=$(now)
    until [ "$(count "$q" "name = 'q$q round $k'")" = "$((TABLES * ROWS / 100))" ]; do sleep 0.2; done
    lat[$q]="${lat[$q]:-}$(python3 -c "print(f'{$(now) - $t:.1f}')") "
  done
  kill -INT "$pid" && wait "$pid" || true
  idle[$q]=$(grep -o 'changes=0 copied=0 bytes_scanned=[0-9]* secs="[0-9.]*"' "$WORK/q$q.log" | tail -4 | sed -E 's/.*secs="([0-9.]+)".*/\1/' | tr '\n' ' ')
  changed[$q]=$(grep -o 'changes=[0-9]* copied=0 bytes_scanned=[0-9]* secs="[0-9.]*"' "$WORK/q$q.log" | grep -v 'changes=0 ' | sed -E 's/.*secs="([0-9.]+)".*/\1/' | tr '\n' ' ')
}
measure 1
measure 8
echo "| $TABLES tables of $ROWS rows | parallel_queries = 1 (one query at a time) | parallel_queries = 8 (default) |"
echo "|---|---|---|"
echo "| idle round (a summary of each table) | ${idle[1]}s | ${idle[8]}s |"
echo "| round with changes (1 % of every table) | ${changed[1]}s | ${changed[8]}s |"
echo "| 1 % of every table changed (one UPDATE job per table; from the last job's return until MySQL shows every row; interval_secs = $INTERVAL) | ${lat[1]}s | ${lat[8]}s |"
