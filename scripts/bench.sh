#!/usr/bin/env bash
# The end-to-end benchmark (BENCHMARKS.md): installs what is missing, starts the project's
# MariaDB and the tansu broker, builds binferry in release mode and runs examples/e2e.rs,
# which prints a Markdown table of results and ratios to peers.
#
#   scripts/bench.sh                 full sizes (1M changes, 5M-row snapshot, 60 s at 1,000 tx/s)
#   scripts/bench.sh --quick         small sizes, a smoke run of every scenario
#   scripts/bench.sh --only NAME     one scenario: catchup | catchup-bigquery | latency | snapshot | bigtxn
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/binferry-target}"
export BINFERRY_MARIADB_PORT="${BINFERRY_MARIADB_PORT:-3407}"
scripts/bootstrap.sh
started=0
if ! scripts/mariadb.sh status; then scripts/mariadb.sh start; started=1; fi
kafka_started=0
if ! scripts/kafka.sh status; then scripts/kafka.sh start; kafka_started=1; fi
bq_started=0
if ! scripts/bigquery.sh status; then scripts/bigquery.sh start; bq_started=1; fi
cleanup() {
  [ "$started" = 1 ] && scripts/mariadb.sh stop || true
  [ "$kafka_started" = 1 ] && scripts/kafka.sh stop || true
  [ "$bq_started" = 1 ] && scripts/bigquery.sh stop || true
}
trap cleanup EXIT
cargo build --release --quiet --bin binferry
export BINFERRY_BENCH_KAFKA="${BINFERRY_BENCH_KAFKA-127.0.0.1:${BINFERRY_KAFKA_PORT:-19092}}"
export BINFERRY_BENCH_BIGQUERY="${BINFERRY_BENCH_BIGQUERY-http://127.0.0.1:${BINFERRY_BQ_PORT:-19050}/bigquery/v2}"
cargo run --release --quiet --example e2e -- "$@"
