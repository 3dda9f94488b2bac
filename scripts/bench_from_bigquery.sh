#!/usr/bin/env bash
# The BigQuery → MySQL benchmark (BENCHMARKS.md, "BigQuery source"); run through
# `scripts/bench.sh --only from-bigquery`, which starts MariaDB and the emulator.
#
# A table of BENCH_ROWS rows (default 1,000,000) in the BigQuery emulator is copied into
# MariaDB (first round), then BENCH_ROUNDS times (default 5) 1 % of its rows change in one
# UPDATE job after the table was idle; each time it measures how long after the job returned
# MySQL shows all of them, next to `interval_secs` (BENCH_INTERVAL, default 5). Then
# BENCH_STEADY times (default 8) 1 % of the rows change every `interval_secs`, the issue's
# target case (a table that changes every round), measured the same way. Prints a Markdown
# table, then the table's whole read by REST paging and by the Storage Read API side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${BENCH_ROWS:-1000000}"
ROUNDS="${BENCH_ROUNDS:-5}"
STEADY="${BENCH_STEADY:-8}"
INTERVAL="${BENCH_INTERVAL:-5}"
BIN="$CARGO_TARGET_DIR/release/binferry"
BQ_URL="http://127.0.0.1:${BINFERRY_BQ_PORT:-19050}/bigquery/v2"
DS="bench_src_$(date +%s)"
DST=bench_from_bigquery
WORK="$(mktemp -d /tmp/binferry-bench-bq.XXXXXX)"
sql() { scripts/mariadb.sh client "$@"; }
. scripts/lib/bq_query.sh
now() { date +%s.%N; }
BF_PID=""
cleanup() {
  [ -n "$BF_PID" ] && kill -INT "$BF_PID" 2>/dev/null && wait "$BF_PID" 2>/dev/null || true
  bq "DROP SCHEMA \`$DS\` CASCADE" >/dev/null 2>&1 || true
  sql -e "DROP DATABASE IF EXISTS $DST" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "creating $ROWS rows in the emulator ($DS.items)" >&2
bq "CREATE SCHEMA \`$DS\`" >/dev/null
bq "CREATE TABLE $DS.items (id INT64, name STRING, price NUMERIC(10, 2), qty INT64, updated TIMESTAMP,
    PRIMARY KEY (id) NOT ENFORCED)" >/dev/null
bq "INSERT INTO $DS.items SELECT n, CONCAT('item ', CAST(n AS STRING)), CAST(MOD(n * 13, 100000) / 100 AS NUMERIC),
    MOD(n, 97), TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL MOD(n, 100000) SECOND)
    FROM UNNEST(GENERATE_ARRAY(1, $ROWS)) AS n" >/dev/null
sql -e "DROP DATABASE IF EXISTS $DST"
# The two ways to read the table whole, side by side, before binferry competes for the
# emulator (examples/bigquery_read_paths.rs); its rows go after binferry's.
paths=$("$CARGO_TARGET_DIR/release/examples/bigquery_read_paths" "$DS" items)
cat > "$WORK/binferry.toml" <<EOF
[pipeline]
name = "bench-from-bigquery"
[source]
kind = "bigquery"
include = ["$DS.*"]
[source.bigquery]
project = "binferry-test"
endpoint = "$BQ_URL"
interval_secs = $INTERVAL
request_timeout_secs = 600
[buffer.embedded]
path = "$WORK/buffer.redb"
[sink.mysql]
port = $BINFERRY_MARIADB_PORT
user = "root"
database = "$DST"
EOF
count() { sql -N -e "SELECT COUNT(*) FROM \`$DST\`.items WHERE $1" 2>/dev/null || echo 0; }
t0=$(now)
"$BIN" run --config "$WORK/binferry.toml" >"$WORK/binferry.log" 2>&1 &
BF_PID=$!
until [ "$(count 1)" = "$ROWS" ]; do
  sleep 1
  kill -0 "$BF_PID" 2>/dev/null || { tail -20 "$WORK/binferry.log" >&2; exit 1; }
done
copy=$(python3 -c "print(f'{$(now) - $t0:.1f}')")
rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$BF_PID/status")
echo "| first copy of $ROWS rows (one round, one MySQL transaction) | $copy s ($(python3 -c "print(f'{$ROWS / $copy:,.0f}')") rows/s) |"
lat=()
for k in $(seq 1 "$ROUNDS"); do
  sleep "$(python3 -c "import random; print(random.uniform(0, $INTERVAL))")"
  bq "UPDATE $DS.items SET name = 'round $k', qty = qty + 1 WHERE MOD(id, 100) = $k" >/dev/null
  t=$(now)
  until [ "$(count "name = 'round $k'")" = "$((ROWS / 100))" ]; do sleep 0.2; done
  lat+=("$(python3 -c "print(f'{$(now) - $t:.1f}')")")
done
# Steady: one UPDATE job every interval, in the background; each is measured from the
# moment its job returned until MySQL shows all its rows (polled every 0.2 s, in order).
(
  for j in $(seq 1 "$STEADY"); do
    k=$((ROUNDS + j))
    start=$(now)
    bq "UPDATE $DS.items SET name = 'round $k', qty = qty + 1 WHERE MOD(id, 100) = $k" >/dev/null
    now >"$WORK/t.tmp" && mv "$WORK/t.tmp" "$WORK/t_$k"
    sleep "$(python3 -c "print(max(0.0, $start + $INTERVAL - $(now)))")"
  done
) &
UPDATER=$!
steady=()
for j in $(seq 1 "$STEADY"); do
  k=$((ROUNDS + j))
  until [ -f "$WORK/t_$k" ]; do sleep 0.1; done
  until [ "$(count "name = 'round $k'")" = "$((ROWS / 100))" ]; do sleep 0.2; done
  steady+=("$(python3 -c "print(f'{$(now) - $(cat "$WORK/t_$k"):.1f}')")")
done
wait "$UPDATER"
rounds=$(grep -o 'changes=[0-9]* copied=0 bytes_scanned=[0-9]* secs="[0-9.]*"' "$WORK/binferry.log" | grep -v 'changes=0 ' | sed -E 's/.*secs="([0-9.]+)"/\1/' | tr '\n' ' ')
echo "| 1 % of the rows changed by one UPDATE job: visible in MySQL after (interval_secs = $INTERVAL) | ${lat[*]} s |"
echo "| 1 % of the rows changed every interval_secs (a table that changes every round): visible in MySQL after | ${steady[*]} s |"
echo "| round duration with changes (summary and diff, or diff first; $((ROWS / 100)) rows or more) | $rounds s |"
echo "| idle round (summary only) | $(grep -o 'changes=0 copied=0 bytes_scanned=[0-9]* secs="[0-9.]*" diffed_first=0' "$WORK/binferry.log" | tail -3 | sed -E 's/.*secs="([0-9.]+)".*/\1/' | tr '\n' ' ') s |"
echo "| peak RSS of binferry | $rss MB |"
echo
echo "The table read whole at one moment, without binferry (examples/bigquery_read_paths.rs):"
echo
echo "$paths"
