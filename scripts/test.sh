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
. scripts/lib/servers.sh
trap stop_started_servers EXIT
# The BigQuery and Kafka tests' speed depends on how much the emulator and the broker
# have stored before (scripts/bigquery.sh; tansu keeps every topic in memory, and after
# a few suites the Kafka kill tests no longer converged in time): they always start on
# empty ones.
start_fresh_servers bigquery kafka
start_servers mariadb smtp

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Benchmarks run once each in test mode, so they cannot rot.
cargo test --locked --benches
# Documentation examples, including the ones that must not compile (a `Secret` has no Display).
cargo test --locked --doc
cargo test --locked --lib --bins --tests -- --test-threads="${BINFERRY_TEST_THREADS:-4}"
