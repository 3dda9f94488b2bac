#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, starts
# the project's MariaDB (port 3407, see scripts/mariadb.sh) and a Kafka-protocol
# broker (tansu, port 19092, see scripts/kafka.sh) and the BigQuery emulator
# (local-bigquery, port 19050, see scripts/bigquery.sh) and an SMTP server (aiosmtpd, port
# 19025, see scripts/smtp.sh), checks formatting
# and lints, and runs every test. This is README command 2 and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/binferry-target}"
export BINFERRY_MARIADB_PORT="${BINFERRY_MARIADB_PORT:-3407}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

scripts/bootstrap.sh
started=0
if ! scripts/mariadb.sh status; then
  scripts/mariadb.sh start
  started=1
fi
kafka_started=0
if ! scripts/kafka.sh status; then
  scripts/kafka.sh start
  kafka_started=1
fi
bq_started=0
if ! scripts/bigquery.sh status; then
  scripts/bigquery.sh start
  bq_started=1
fi
smtp_started=0
if ! scripts/smtp.sh status; then
  scripts/smtp.sh start
  smtp_started=1
fi
cleanup() {
  [ "$started" = 1 ] && scripts/mariadb.sh stop || true
  [ "$smtp_started" = 1 ] && scripts/smtp.sh stop || true
  [ "$kafka_started" = 1 ] && scripts/kafka.sh stop || true
  [ "$bq_started" = 1 ] && scripts/bigquery.sh stop || true
}
trap cleanup EXIT

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Benchmarks run once each in test mode, so they cannot rot.
cargo test --locked --benches
# Documentation examples, including the ones that must not compile (a `Secret` has no Display).
cargo test --locked --doc
cargo test --locked --lib --bins --tests -- --test-threads="${BINFERRY_TEST_THREADS:-4}"
