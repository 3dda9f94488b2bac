#!/usr/bin/env bash
# README command 1: a local replication demo on the embedded defaults.
#
# Installs what is missing, builds binferry, starts the project's MariaDB,
# creates an example `recipes` / `ingredients` / `recipe_ingredients` schema
# with data, replicates it into `recipes_demo_replica` on the same server while
# a generator inserts, updates and deletes for DEMO_SECONDS (default 30),
# shows progress and lag, then `binferry status`, then compares source and target table by table and
# stops what it started. DEMO_KEEP=1 keeps its work directory (the config and
# binferry's full log) for a look afterwards.
#
#   scripts/demo.sh            embedded buffer (one redb file)
#   scripts/demo.sh --kafka    through a local Kafka-protocol broker (tansu, scripts/kafka.sh)
#   scripts/demo.sh --bigquery into the local BigQuery emulator (scripts/bigquery.sh)
#   scripts/demo.sh --from-bigquery   the other direction: tables in the BigQuery emulator,
#                              changed by a generator, mirrored into MariaDB
#                              (scripts/demo_from_bigquery.sh)
set -euo pipefail
if [ "${1:-}" = "--from-bigquery" ]; then
  exec "$(dirname "$0")/demo_from_bigquery.sh"
fi
KAFKA=0
BIGQUERY=0
for arg in "$@"; do
  case "$arg" in
    --kafka) KAFKA=1 ;;
    --bigquery) BIGQUERY=1 ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/binferry-target}"
export BINFERRY_MARIADB_PORT="${BINFERRY_MARIADB_PORT:-3407}"
SECONDS_TO_RUN="${DEMO_SECONDS:-30}"
SRC=recipes_demo
DST=recipes_demo_replica
WORK="$(mktemp -d /tmp/binferry-demo.XXXXXX)"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

scripts/bootstrap.sh
say "building binferry (release)"
cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/binferry"

. scripts/lib/servers.sh
servers=(mariadb)
[ "$KAFKA" = 1 ] && servers+=(kafka)
[ "$BIGQUERY" = 1 ] && servers+=(bigquery)
trap stop_started_servers EXIT
start_servers "${servers[@]}"
BQ_URL="http://127.0.0.1:${BINFERRY_BQ_PORT:-19050}/bigquery/v2"
sql() { scripts/mariadb.sh client "$@"; }
BF_PID=""; TAIL_PID=""; GEN_PID=""
cleanup() {
  [ -n "$GEN_PID" ] && kill "$GEN_PID" 2>/dev/null || true
  [ -n "$BF_PID" ] && kill -INT "$BF_PID" 2>/dev/null && wait "$BF_PID" 2>/dev/null || true
  [ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null || true
  stop_started_servers
  [ -n "${DEMO_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

say "creating $SRC with example data"
sql -e "DROP DATABASE IF EXISTS $SRC; DROP DATABASE IF EXISTS $DST; CREATE DATABASE $SRC CHARACTER SET utf8mb4;"
sql "$SRC" <<'SQL'
CREATE TABLE ingredients (
  id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, unit ENUM('g','ml','piece') NOT NULL,
  kcal_per_unit DECIMAL(10,4) NOT NULL, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
CREATE TABLE recipes (
  id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) NOT NULL, servings SMALLINT UNSIGNED NOT NULL,
  price DECIMAL(8,2), prep_time TIME(0), notes JSON, created_at DATETIME(6) NOT NULL);
CREATE TABLE recipe_ingredients (
  recipe_id INT NOT NULL, ingredient_id INT NOT NULL, qty DECIMAL(10,3) NOT NULL,
  PRIMARY KEY (recipe_id, ingredient_id));
INSERT INTO ingredients (id, name, unit, kcal_per_unit)
  SELECT seq, CONCAT(ELT(1 + seq % 8, 'tomato','basil','crème fraîche','olive oil','garlic 🧄','flour','ñora pepper','miso'), ' #', seq),
         ELT(1 + seq % 3, 'g','ml','piece'), (seq * 37 % 900) / 100
  FROM seq_1_to_100;
INSERT INTO recipes (name, servings, price, prep_time, notes, created_at)
  SELECT CONCAT('Recipe ', seq), 1 + seq % 8, (seq * 13 % 5000) / 100, SEC_TO_TIME(seq * 60 % 7200),
         JSON_OBJECT('tags', JSON_ARRAY('demo', seq % 5)), NOW(6) - INTERVAL seq MINUTE
  FROM seq_1_to_2000;
INSERT INTO recipe_ingredients SELECT r.seq, 1 + (r.seq * 7 + i.seq * 31) % 100, i.seq * 1.5
  FROM seq_1_to_2000 r JOIN seq_1_to_3 i;
SQL
sql -N -e "SELECT CONCAT(table_name, ': ', table_rows, ' rows (approx)') FROM information_schema.tables WHERE table_schema='$SRC'"

cat > "$WORK/binferry.toml" <<EOF
[pipeline]
name = "demo"
[source]
port = $BINFERRY_MARIADB_PORT
user = "root"
include = ["$SRC.*"]
[buffer.embedded]
path = "$WORK/buffer.redb"
[log]
progress_interval_secs = 3
[http]
# A fixed port, so that `binferry status` finds the running process.
listen = "127.0.0.1:${BINFERRY_DEMO_HTTP_PORT:-9187}"
EOF
if [ "$BIGQUERY" = 1 ]; then
  # A fresh dataset per run: the emulator keeps earlier demos' tables.
  DST="demo_$(date +%s)"
  cat >> "$WORK/binferry.toml" <<EOF
[sink]
kind = "bigquery"
[sink.bigquery]
project = "binferry-test"
dataset = "$DST"
endpoint = "$BQ_URL"
merge_interval_secs = 2
EOF
  say "target: BigQuery emulator at $BQ_URL, dataset $DST (tables ${SRC}_*)"
else
  cat >> "$WORK/binferry.toml" <<EOF
[sink.mysql]
port = $BINFERRY_MARIADB_PORT
user = "root"
database = "$DST"
EOF
fi
if [ "$KAFKA" = 1 ]; then
  # A fresh topic prefix: the in-memory broker may still hold an earlier demo's topics.
  cat >> "$WORK/binferry.toml" <<EOF
[buffer]
kind = "kafka"
[buffer.kafka]
brokers = "127.0.0.1:${BINFERRY_KAFKA_PORT:-19092}"
topic_prefix = "demo-$(date +%s)"
layout = "database"
EOF
  say "buffer: Kafka at 127.0.0.1:${BINFERRY_KAFKA_PORT:-19092} (topics demo-*)"
fi

say "binferry check"
"$BIN" check --config "$WORK/binferry.toml"

say "binferry run (initial snapshot, then streaming); progress every 3 s"
# The log exists before `tail` opens it: the redirection of a background command happens in
# its own subshell, possibly after `tail` has started (and failed to open the file).
: >"$WORK/binferry.log"
"$BIN" run --config "$WORK/binferry.toml" >>"$WORK/binferry.log" 2>&1 &
BF_PID=$!
# Progress lines condensed to what matters here: events read, rows written, backlog, lag.
tail -n +1 -F "$WORK/binferry.log" 2>/dev/null | grep --line-buffered -E "snapshot|table copied|streaming|progress|ERROR|WARN" \
  | sed -u -E 's/^[^ ]+ +//; s/binferry::[a-z_:]+: //;
      s/^INFO progress .*source_events=([0-9]+).*source_events_per_s="([0-9]+)".*target_rows_written=([0-9]+).*target_rows_per_s="([0-9]+)".*buffer_pending=([0-9-]+).*lag_seconds=([0-9.]+).*/progress: \1 changes read (\2\/s), \3 rows written (\4\/s), \5 waiting, lag \6 s/' &
TAIL_PID=$!

say "generating inserts, updates and deletes for ${SECONDS_TO_RUN}s"
(
  end=$((SECONDS + SECONDS_TO_RUN)); i=0
  while [ $SECONDS -lt $end ]; do
    i=$((i + 1)); r=$((RANDOM % 2000 + 1))
    echo "START TRANSACTION;
INSERT INTO recipes (name, servings, price, prep_time, notes, created_at)
  VALUES ('New recipe $i', $((RANDOM % 8 + 1)), $((RANDOM % 90)).$((RANDOM % 100)), '00:$((RANDOM % 60)):00', JSON_OBJECT('batch', $i), NOW(6));
SET @r = LAST_INSERT_ID();
INSERT INTO recipe_ingredients VALUES (@r, $((RANDOM % 50 + 1)), 2.5), (@r, $((RANDOM % 50 + 51)), 0.125);
UPDATE recipes SET servings = servings % 12 + 1, price = price + 0.01 WHERE id = $r;
COMMIT;"
    if [ $((i % 4)) = 0 ]; then
      echo "START TRANSACTION; DELETE FROM recipe_ingredients WHERE recipe_id = $r; DELETE FROM recipes WHERE id = $r; COMMIT;"
    fi
    if [ $((i % 6)) = 0 ]; then
      echo "UPDATE ingredients SET kcal_per_unit = kcal_per_unit + 0.0001 WHERE id = $((RANDOM % 100 + 1));"
      echo "UPDATE IGNORE recipe_ingredients SET ingredient_id = 100 + $i WHERE recipe_id = $((RANDOM % 2000 + 1)) LIMIT 1;"
    fi
    echo "DO SLEEP(0.01);"
  done
) | sql "$SRC" &
GEN_PID=$!
wait "$GEN_PID" || true
GEN_PID=""

checksum() { # db table -> "rows checksum"
  local cols
  cols=$(sql -N -e "SELECT GROUP_CONCAT(CONCAT('COALESCE(\`', column_name, '\`, ''<null>'')') ORDER BY ordinal_position)
                   FROM information_schema.columns WHERE table_schema='$SRC' AND table_name='$2'")
  sql -N -e "SELECT COUNT(*), COALESCE(BIT_XOR(CRC32(CONCAT_WS('#', $cols))), 0) FROM \`$1\`.\`$2\`" 2>/dev/null || echo "missing"
}
# Per-table aggregates both SQL dialects compute alike (the BigQuery demo compares these).
aggregates() { # table -> "count sums..."
  case "$1" in
    ingredients) echo "COUNT(*), SUM(id), SUM(kcal_per_unit)" ;;
    recipes) echo "COUNT(*), SUM(id), SUM(servings), SUM(price)" ;;
    recipe_ingredients) echo "COUNT(*), SUM(recipe_id), SUM(ingredient_id), SUM(qty)" ;;
  esac
}
trim_zeros() { sed -E 's/\.([0-9]*[1-9])0+( |$)/.\1\2/g; s/\.0+( |$)/\1/g'; }
bq_row() { # sql -> the first row's cells, space separated
  curl -fsS -X POST "$BQ_URL/projects/binferry-test/queries" -H 'content-type: application/json' \
    -d "$(python3 -c 'import json,sys; print(json.dumps({"query": sys.argv[1], "useLegacySql": False}))' "$1")" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin).get("rows") or [{"f":[]}]; print(" ".join(str(c["v"]) for c in r[0]["f"]) or "missing")' \
    2>/dev/null || echo "missing"
}
if [ "$BIGQUERY" = 1 ]; then
  checksum() { # db table -> aggregates of the source table, or of its BigQuery table
    if [ "$1" = "$SRC" ]; then
      sql -N -e "SELECT $(aggregates "$2") FROM \`$SRC\`.\`$2\`" | tr '\t' ' ' | trim_zeros
    else
      bq_row "SELECT $(aggregates "$2") FROM \`binferry-test.$DST.${SRC}_$2\`" | trim_zeros
    fi
  }
fi
tables="ingredients recipes recipe_ingredients"
say "generator stopped; waiting for the target to catch up"
caught=0
start=$SECONDS
while [ $((SECONDS - start)) -lt 120 ]; do
  same=1
  for t in $tables; do
    [ "$(checksum "$SRC" "$t")" = "$(checksum "$DST" "$t")" ] || same=0
  done
  if [ "$same" = 1 ]; then caught=1; break; fi
  sleep 0.5
done
echo "caught up $((SECONDS - start)) s after the generator stopped"
sleep 3.5  # one more progress line with the final lag

say "binferry status (what an operator sees: state, lag, positions, retention, stopped tables, runs)"
"$BIN" status --config "$WORK/binferry.toml" || true

say "source vs target"
status=0
if [ "$BIGQUERY" = 1 ]; then
  printf '%-20s %-45s %-45s %s\n' table "source (rows, sums)" "BigQuery (rows, sums)" result
  for t in $tables; do
    s_=$(checksum "$SRC" "$t"); d_=$(checksum "$DST" "$t")
    res=equal; [ "$s_" = "$d_" ] || { res=DIFFERENT; status=1; }
    printf '%-20s %-45s %-45s %s\n' "$t" "$s_" "$d_" "$res"
  done
  echo "MERGE progress: $(bq_row "SELECT stream, merged_offset, position FROM \`binferry-test.$DST._binferry_state\`")"
else
  printf '%-20s %12s %12s %12s %12s  %s\n' table src_rows src_crc dst_rows dst_crc result
  for t in $tables; do
    read -r sr sc <<<"$(checksum "$SRC" "$t")"
    read -r dr dc <<<"$(checksum "$DST" "$t")"
    res=equal; [ "$sr $sc" = "$dr $dc" ] || { res=DIFFERENT; status=1; }
    printf '%-20s %12s %12s %12s %12s  %s\n' "$t" "$sr" "$sc" "$dr" "$dc" "$res"
  done
  sql -e "SELECT pipeline, applied_offset, source_file, source_offset, updated_at FROM $DST._binferry_state"
fi

say "stopping binferry (SIGINT: drain, commit, exit 0)"
kill -INT "$BF_PID"; wait "$BF_PID"; echo "binferry exited with $?"; BF_PID=""
[ "$caught" = 1 ] || { echo "the target did not catch up" >&2; exit 1; }
exit $status
