#!/usr/bin/env bash
# `scripts/demo.sh --from-bigquery`: the warehouse → MySQL direction (docs/bigquery-source.md).
#
# Starts the project's MariaDB and the local BigQuery emulator, creates `recipes`,
# `ingredients` and `recipe_ingredients` in a fresh emulator dataset, mirrors them into the
# MariaDB database `recipes_from_bigquery` while a generator changes them in BigQuery (one
# multi-statement transaction per change, a MERGE now and then) for DEMO_SECONDS (default
# 30), shows each round and the lag, then `binferry status`, compares BigQuery and MySQL table
# by table and stops what it started. DEMO_KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/binferry-target}"
export BINFERRY_MARIADB_PORT="${BINFERRY_MARIADB_PORT:-3407}"
SECONDS_TO_RUN="${DEMO_SECONDS:-30}"
DST=recipes_from_bigquery
DS="demo_src_$(date +%s)"
WORK="$(mktemp -d /tmp/binferry-demo.XXXXXX)"
BQ_URL="http://127.0.0.1:${BINFERRY_BQ_PORT:-19050}/bigquery/v2"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

scripts/bootstrap.sh
say "building binferry (release)"
cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/binferry"

. scripts/lib/servers.sh
trap stop_started_servers EXIT
start_servers mariadb bigquery
sql() { scripts/mariadb.sh client "$@"; }
. scripts/lib/bq_query.sh
BF_PID=""; TAIL_PID=""; GEN_PID=""
cleanup() {
  [ -n "$GEN_PID" ] && kill "$GEN_PID" 2>/dev/null || true
  [ -n "$BF_PID" ] && kill -INT "$BF_PID" 2>/dev/null && wait "$BF_PID" 2>/dev/null || true
  [ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null || true
  bq "DROP SCHEMA \`$DS\` CASCADE" >/dev/null 2>&1 || true
  stop_started_servers
  [ -n "${DEMO_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

say "creating dataset $DS in the BigQuery emulator with example data"
bq "CREATE SCHEMA \`$DS\`" >/dev/null
bq "CREATE TABLE $DS.ingredients (id INT64, name STRING, kcal_per_unit NUMERIC(10, 4), PRIMARY KEY (id) NOT ENFORCED);
    CREATE TABLE $DS.recipes (id INT64, name STRING, servings INT64, price NUMERIC(8, 2), tags ARRAY<STRING>,
      created_at TIMESTAMP, PRIMARY KEY (id) NOT ENFORCED);
    CREATE TABLE $DS.recipe_ingredients (recipe_id INT64, ingredient_id INT64, qty NUMERIC(10, 3),
      PRIMARY KEY (recipe_id, ingredient_id) NOT ENFORCED);" >/dev/null
bq "INSERT INTO $DS.ingredients SELECT n, CONCAT('ingredient #', CAST(n AS STRING)), CAST(MOD(n * 37, 900) / 100 AS NUMERIC)
    FROM UNNEST(GENERATE_ARRAY(1, 100)) AS n" >/dev/null
bq "INSERT INTO $DS.recipes SELECT n, CONCAT('Recipe ', CAST(n AS STRING)), 3, CAST(MOD(n * 13, 5000) / 100 AS NUMERIC),
    ['demo'], TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL n MINUTE) FROM UNNEST(GENERATE_ARRAY(1, 2000)) AS n" >/dev/null
bq "INSERT INTO $DS.recipe_ingredients SELECT r, 1 + MOD(r * 7 + i * 31, 100), CAST(i * 1.5 AS NUMERIC)
    FROM UNNEST(GENERATE_ARRAY(1, 2000)) AS r, UNNEST(GENERATE_ARRAY(1, 3)) AS i" >/dev/null
for t in ingredients recipes recipe_ingredients; do echo "$t: $(bq "SELECT COUNT(*) FROM $DS.$t") rows"; done
sql -e "DROP DATABASE IF EXISTS $DST"

cat > "$WORK/binferry.toml" <<EOF
[pipeline]
name = "demo-from-bigquery"
[source]
kind = "bigquery"
include = ["$DS.*"]
[source.bigquery]
project = "binferry-test"
endpoint = "$BQ_URL"
interval_secs = 2
[buffer.embedded]
path = "$WORK/buffer.redb"
[sink.mysql]
port = $BINFERRY_MARIADB_PORT
user = "root"
database = "$DST"
[log]
progress_interval_secs = 3
[http]
# A fixed port, so that `binferry status` finds the running process.
listen = "127.0.0.1:${BINFERRY_DEMO_HTTP_PORT:-9187}"
EOF

say "binferry check"
"$BIN" check --config "$WORK/binferry.toml"

say "binferry run: a round every 2 s (each table read at one BigQuery timestamp; its changes applied as one MySQL transaction)"
: >"$WORK/binferry.log"
"$BIN" run --config "$WORK/binferry.toml" >>"$WORK/binferry.log" 2>&1 &
BF_PID=$!
tail -n +1 -F "$WORK/binferry.log" 2>/dev/null | grep --line-buffered -E "round done|table copied|progress|ERROR|WARN" \
  | grep --line-buffered -v "TLS" \
  | sed -u -E 's/^[^ ]+ +//; s/binferry::[a-z_:]+: //;
      s/^INFO BigQuery round done round=([0-9]+) changes=([0-9]+) copied=([0-9]+).*secs="([0-9.]+)".*/round \1: \2 changed rows, \3 copied, in \4 s/;
      s/^INFO progress .*target_rows_written=([0-9]+).*lag_seconds=([0-9.]+).*/progress: \1 rows written to MySQL, lag \2 s/' &
TAIL_PID=$!

say "changing the tables in BigQuery for ${SECONDS_TO_RUN}s"
(
  end=$((SECONDS + SECONDS_TO_RUN)); i=0
  while [ $SECONDS -lt $end ]; do
    i=$((i + 1)); id=$((100000 + i)); r=$((RANDOM % 2000 + 1))
    # A new recipe with its ingredients, and another recipe gone with its links: one transaction.
    bq "BEGIN TRANSACTION;
        INSERT INTO $DS.recipes VALUES ($id, 'New recipe $i', 2, $((RANDOM % 90)).$((RANDOM % 100)), ['new'], CURRENT_TIMESTAMP());
        INSERT INTO $DS.recipe_ingredients VALUES ($id, $((RANDOM % 50 + 1)), 2.5), ($id, $((RANDOM % 50 + 51)), 0.125);
        DELETE FROM $DS.recipe_ingredients WHERE recipe_id = $r;
        DELETE FROM $DS.recipes WHERE id = $r;
        COMMIT TRANSACTION;" >/dev/null || true
    if [ $((i % 3)) = 0 ]; then
      bq "MERGE $DS.ingredients T USING (SELECT $((RANDOM % 100 + 1)) AS id) S ON T.id = S.id
          WHEN MATCHED THEN UPDATE SET kcal_per_unit = kcal_per_unit + 0.0001" >/dev/null || true
    fi
  done
) &
GEN_PID=$!
wait "$GEN_PID" || true
GEN_PID=""

aggregates() { # table -> aggregates both SQL dialects compute alike
  case "$1" in
    ingredients) echo "COUNT(*), SUM(id), SUM(kcal_per_unit)" ;;
    recipes) echo "COUNT(*), SUM(id), SUM(servings), SUM(price)" ;;
    recipe_ingredients) echo "COUNT(*), SUM(recipe_id), SUM(ingredient_id), SUM(qty)" ;;
  esac
}
trim_zeros() { sed -E 's/\.([0-9]*[1-9])0+( |$)/.\1\2/g; s/\.0+( |$)/\1/g'; }
in_bigquery() { bq "SELECT $(aggregates "$1") FROM $DS.$1" | trim_zeros; }
in_mysql() { sql -N -e "SELECT $(aggregates "$1") FROM \`$DST\`.\`$1\`" 2>/dev/null | tr '\t' ' ' | trim_zeros || echo missing; }
tables="ingredients recipes recipe_ingredients"
say "generator stopped; waiting for MySQL to catch up"
caught=0
start=$SECONDS
while [ $((SECONDS - start)) -lt 120 ]; do
  same=1
  for t in $tables; do
    [ "$(in_bigquery "$t")" = "$(in_mysql "$t")" ] || same=0
  done
  if [ "$same" = 1 ]; then caught=1; break; fi
  sleep 0.5
done
echo "caught up $((SECONDS - start)) s after the generator stopped"
sleep 3.5  # one more progress line with the final lag

say "binferry status"
"$BIN" status --config "$WORK/binferry.toml" || true

say "BigQuery vs MySQL"
status=0
printf '%-20s %-40s %-40s %s\n' table "BigQuery (rows, sums)" "MySQL (rows, sums)" result
for t in $tables; do
  b=$(in_bigquery "$t"); m=$(in_mysql "$t")
  res=equal; [ "$b" = "$m" ] || { res=DIFFERENT; status=1; }
  printf '%-20s %-40s %-40s %s\n' "$t" "$b" "$m" "$res"
done

say "stopping binferry (SIGINT: finish, commit, exit 0)"
kill -INT "$BF_PID"; wait "$BF_PID"; echo "binferry exited with $?"; BF_PID=""
[ "$caught" = 1 ] || { echo "MySQL did not catch up" >&2; exit 1; }
exit $status
