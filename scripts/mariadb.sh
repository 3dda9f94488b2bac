#!/usr/bin/env bash
# Project-owned MariaDB instances for tests, the demo and CI.
#
#   scripts/mariadb.sh install            install mariadb-server/-client from Debian when missing
#   scripts/mariadb.sh start  [-- ARGS]   start an instance (idempotent); extra mariadbd ARGS override defaults
#   scripts/mariadb.sh stop               stop it (idempotent)
#   scripts/mariadb.sh status             exit 0 when it answers
#   scripts/mariadb.sh client [ARGS]      mariadb client as root on it
#   scripts/mariadb.sh destroy            stop and delete its data directory
#
# Environment:
#   BINFERRY_MARIADB_PORT  TCP port (default 3407, away from a system server on 3306)
#   BINFERRY_MARIADB_DIR   base directory (default /tmp/binferry-mariadb-$PORT)
#   BINFERRY_MARIADB_TLS   1: serve TLS with certificates generated in $DIR/tls (openssl):
#                          ca.pem (the CA), server-cert.pem (for DNS name `localhost` only,
#                          not 127.0.0.1), client-cert.pem / client-key.pem (signed by the
#                          same CA, for mutual TLS), other-ca.pem (a CA that signed nothing)
#
# The instance writes a ROW / FULL / FULL binlog with GTIDs (MariaDB always has
# them) and binds to 127.0.0.1 only. `root@127.0.0.1` has no password: this is a
# throwaway test server, never a production one.
set -euo pipefail

PORT="${BINFERRY_MARIADB_PORT:-3407}"
BASE="${BINFERRY_MARIADB_DIR:-/tmp/binferry-mariadb-$PORT}"
DATADIR="$BASE/data"
SOCK="$BASE/mariadb.sock"
PIDF="$BASE/mariadb.pid"
LOG="$BASE/mariadb.err"
ME="$(id -un)"

TLS_DIR="$BASE/tls"

log() { echo "[mariadb:$PORT] $*" >&2; }
# shellcheck source=lib/certs.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/certs.sh"

# A test CA and certificates signed by it, made once per instance.
tls_files() {
  [ -f "$TLS_DIR/other-ca.pem" ] || certs_make "$TLS_DIR" full
}

install() {
  if command -v mariadbd >/dev/null 2>&1 && command -v mariadb-install-db >/dev/null 2>&1 \
     && command -v mariadb-admin >/dev/null 2>&1 && command -v mariadb >/dev/null 2>&1; then
    return 0
  fi
  log "installing mariadb-server and mariadb-client from Debian"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # policy-rc.d keeps the package from starting a system server we do not use.
  $sudo apt-get install -y -qq mariadb-server mariadb-client >/dev/null
}

ping_ok() {
  mariadb-admin --no-defaults --protocol=socket --socket="$SOCK" -uroot ping >/dev/null 2>&1
}

start() {
  install
  if ping_ok; then
    log "already running"
    return 0
  fi
  # A temporary directory per instance: instances initialised at the same moment in a
  # shared /tmp have deleted each other's temporary tables.
  mkdir -p "$BASE/tmp"
  if [ ! -d "$DATADIR/mysql" ]; then
    log "initialising $DATADIR"
    rm -rf "$DATADIR"
    TMPDIR="$BASE/tmp" mariadb-install-db --no-defaults --datadir="$DATADIR" --user="$ME" \
      --auth-root-authentication-method=normal --skip-test-db >"$BASE/install.log" 2>&1 \
      || { cat "$BASE/install.log" >&2; exit 1; }
  fi
  rm -f "$SOCK" "$PIDF"
  local tls=()
  if [ "${BINFERRY_MARIADB_TLS:-0}" = 1 ]; then
    tls_files
    tls=(--ssl-ca="$TLS_DIR/ca.pem" --ssl-cert="$TLS_DIR/server-cert.pem" --ssl-key="$TLS_DIR/server-key.pem")
  fi
  # Defaults first, caller's ARGS last: mariadbd honours the last occurrence,
  # which is how tests start servers with wrong settings on purpose.
  nohup mariadbd --no-defaults --datadir="$DATADIR" --user="$ME" \
    --bind-address=127.0.0.1 --port="$PORT" --socket="$SOCK" --pid-file="$PIDF" \
    --log-error="$LOG" --skip-name-resolve --server-id=1 --tmpdir="$BASE/tmp" \
    --log-bin="$DATADIR/binlog" --binlog-format=ROW --binlog-row-image=FULL \
    --binlog-row-metadata=FULL --gtid-strict-mode=ON --expire-logs-days=7 \
    --innodb-buffer-pool-size=256M --innodb-log-file-size=96M \
    --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 \
    --max-connections=500 --max-allowed-packet=256M \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
    "${tls[@]}" "$@" >/dev/null 2>&1 &
  for _ in $(seq 1 300); do
    if ping_ok; then
      mariadb --no-defaults --protocol=socket --socket="$SOCK" -uroot -e "
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
      log "ready (datadir $DATADIR)"
      return 0
    fi
    if [ -f "$LOG" ] && ! pgrep -f -- "--port=$PORT " >/dev/null 2>&1 && [ "$_" -gt 20 ]; then
      break
    fi
    sleep 0.1
  done
  log "did not start; last lines of $LOG:"
  tail -n 30 "$LOG" >&2 || true
  exit 1
}

stop() {
  if ping_ok; then
    mariadb-admin --no-defaults --protocol=socket --socket="$SOCK" -uroot shutdown || true
  fi
  for _ in $(seq 1 100); do
    [ -f "$PIDF" ] || break
    kill -0 "$(cat "$PIDF" 2>/dev/null)" 2>/dev/null || break
    sleep 0.1
  done
  log "stopped"
}

cmd="${1:-}"; shift || true
[ "${1:-}" = "--" ] && shift
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  stop) stop ;;
  status) ping_ok ;;
  client) exec mariadb --no-defaults --default-character-set=utf8mb4 --protocol=socket --socket="$SOCK" -uroot "$@" ;;
  dump) exec mariadb-dump --no-defaults --default-character-set=utf8mb4 --protocol=socket --socket="$SOCK" -uroot "$@" ;;
  destroy) stop; rm -rf "$BASE" ;;
  *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
