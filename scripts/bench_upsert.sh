#!/usr/bin/env bash
# Does the guarded upsert binferry writes cost MariaDB more than a plain INSERT, for rows
# that are not in the table yet (a first copy)? BENCHMARKS.md, "Chunked snapshot": it does
# not, so plain inserts would not speed a copy up.
#
#   scripts/bench_upsert.sh [ROWS]     default 200,000 `items` rows, 1,000 per statement
#
# Writes the same rows through the `mariadb` client twice each way, alternating, into a
# scratch database of the project's MariaDB (scripts/mariadb.sh, BINFERRY_MARIADB_PORT),
# and prints the time of each run. The upsert is `statements.rs`'s `upsert` with literals.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-200000}"
PORT="${BINFERRY_MARIADB_PORT:-3407}"
DB="bench_upsert_$$"
WORK="$(mktemp -d)"
M=(mariadb -uroot -h127.0.0.1 -P"$PORT")
trap '"${M[@]}" -e "DROP DATABASE IF EXISTS $DB" || true; rm -rf "$WORK"' EXIT

python3 - "$ROWS" "$WORK" <<'PY'
import sys
rows, work = int(sys.argv[1]), sys.argv[2]
cols = "id,cat,qty,price,name,note,updated_at,_binferry_pos,_binferry_hash"
newer = "VALUES(_binferry_pos) > _binferry_pos"
update = ", ".join(
    f"{c} = IF({newer}, VALUES({c}), {c})"
    for c in ["cat", "qty", "price", "name", "note", "updated_at", "_binferry_hash", "_binferry_pos"]
)
def row(i):
    return (f"({i},{i % 100},{i % 1000},{(i % 100000) / 100:.2f},'item-{i}','{chr(97 + i % 26) * 110}',"
            f"'2026-11-29 10:00:00.000000',UNHEX('{i:032x}'),UNHEX('{i * 7919 % 2**128:032x}'))")
for kind in ("plain", "upsert"):
    with open(f"{work}/{kind}.sql", "w") as f:
        f.write("SET autocommit = 0;\n")
        for start in range(0, rows, 1000):
            values = ",".join(row(i) for i in range(start, min(start + 1000, rows)))
            tail = f" ON DUPLICATE KEY UPDATE {update}" if kind == "upsert" else ""
            f.write(f"INSERT INTO t_{kind} ({cols}) VALUES {values}{tail};\nCOMMIT;\n")
PY

"${M[@]}" -e "CREATE DATABASE $DB"
for kind in plain upsert; do
  "${M[@]}" "$DB" -e "CREATE TABLE t_$kind (id BIGINT PRIMARY KEY, cat INT NOT NULL, qty INT NOT NULL, \
    price DECIMAL(10,2) NOT NULL, name VARCHAR(64) NOT NULL, note VARCHAR(120) NOT NULL, \
    updated_at TIMESTAMP(6) NOT NULL, _binferry_pos BINARY(16) NOT NULL, _binferry_hash BINARY(16) NOT NULL)"
done
for kind in plain upsert plain upsert; do
  "${M[@]}" "$DB" -e "TRUNCATE t_$kind"
  start=$EPOCHREALTIME
  "${M[@]}" "$DB" < "$WORK/$kind.sql"
  awk -v k="$kind" -v n="$ROWS" -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%s: %d rows in %.2f s\n", k, n, b - a }'
done
