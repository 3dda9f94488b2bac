#!/usr/bin/env bash
# A local BigQuery emulator (local-bigquery 0.3.2, DuckDB-backed, offline) for tests and
# the BigQuery demo. REST on BINFERRY_BQ_PORT (default 19050), Storage Write gRPC on
# BINFERRY_BQ_GRPC_PORT (default 19051), project "binferry-test".
#
#   scripts/bigquery.sh install    a Python 3.13 venv with the emulator and DuckDB extensions
#   scripts/bigquery.sh start      start it (idempotent)
#   scripts/bigquery.sh fresh      stop a running one, then start one with no data
#   scripts/bigquery.sh stop       stop it
#   scripts/bigquery.sh status     exit 0 when it answers and runs this checkout's launcher
#
# Why a launcher (scripts/bigquery/launch.py): offline, DuckDB must load its extensions
# from a local directory, and the emulator's `TimeZone` connect option fails without ICU
# autoloading; see ../shared/INFRA.md.
#
# An emulator's data does not outlive it: every start begins empty. Its DuckLake catalog
# keeps every snapshot (one per commit) and its job table every job, and both slow every
# later query: after a day of test suites, a one-row INSERT took 130 ms and a COUNT(*)
# 165-190 ms, against 75 and 95-105 ms on an empty emulator, idle, same machine; a
# CI run that reused such an emulator ran its BigQuery tests that much slower. Tests,
# demos and benchmarks make datasets of their own, so nothing needs the old data.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${BINFERRY_BQ_PORT:-19050}"
GRPC_PORT="${BINFERRY_BQ_GRPC_PORT:-19051}"
PROJECT="${BINFERRY_BQ_PROJECT:-binferry-test}"
BASE="${BINFERRY_BQ_DIR:-/tmp/binferry-bigquery-$PORT}"
HOME_DIR="${BINFERRY_BQ_HOME:-$HOME/.cache/binferry-bigquery}"
VENV="$HOME_DIR/venv"
EXTDIR="$HOME_DIR/extensions"
log() { echo "[bigquery:$PORT] $*" >&2; }
# shellcheck source=lib/daemon.sh
. scripts/lib/daemon.sh

python313() {
  if command -v pyenv >/dev/null 2>&1 && [ -x "$(pyenv root)/versions/3.13.0/bin/python" ]; then
    echo "$(pyenv root)/versions/3.13.0/bin/python"
  elif command -v python3.13 >/dev/null 2>&1; then
    command -v python3.13
  else
    return 1
  fi
}

install() {
  if [ -x "$VENV/bin/python" ] && [ -f "$EXTDIR/v1.5.5/linux_amd64/spatial.duckdb_extension" ]; then
    return 0
  fi
  local py
  py=$(python313) || { log "Python 3.13 is needed (pyenv 3.13.0 or python3.13)"; exit 1; }
  log "installing local-bigquery 0.3.2 with $py"
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    local-bigquery==0.3.2 duckdb==1.5.5 duckdb-extension-ducklake==1.5.5 duckdb-extension-spatial==1.5.5
  mkdir -p "$EXTDIR/v1.5.5/linux_amd64"
  find "$VENV" -name '*.duckdb_extension' -exec cp {} "$EXTDIR/v1.5.5/linux_amd64/" \;
}

answers() {
  curl -fsS "http://127.0.0.1:$PORT/bigquery/v2/projects/$PROJECT/datasets" >/dev/null 2>&1
}

# The launcher patches the emulator (see scripts/bigquery/launch.py); an emulator started by
# another version of it is restarted, so a checkout never tests against stale patches.
launcher_sum() { sha256sum scripts/bigquery/launch.py | cut -d' ' -f1; }

current() { [ "$(cat "$BASE/launcher.sum" 2>/dev/null)" = "$(launcher_sum)" ]; }

start() {
  install
  if answers; then
    if current; then
      log "already running"
      return 0
    fi
    log "running with another launcher; restarting it"
    stop
  fi
  rm -rf "$BASE/data"
  mkdir -p "$BASE"
  launcher_sum > "$BASE/launcher.sum"
  daemon_spawn "$BASE/emulator.log" "$BASE/emulator.pid" env BINFERRY_BQ_EXTDIR="$EXTDIR" \
    "$VENV/bin/python" scripts/bigquery/launch.py serve --host 127.0.0.1 --port "$PORT" \
    --grpc-port "$GRPC_PORT" --project "$PROJECT" --dataset default --data-dir "$BASE/data"
  daemon_wait 300 "$BASE/emulator.log" answers
}

stop() { daemon_stop "$BASE/emulator.pid"; }

cmd="${1:-}"; shift || true
case "$cmd" in
  install) install ;;
  start) start ;;
  fresh) stop; start ;;
  stop) stop ;;
  status) answers && current ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
