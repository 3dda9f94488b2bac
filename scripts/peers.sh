#!/usr/bin/env bash
# Peers for the end-to-end benchmark, installed on demand under ~/.cache:
#   scripts/peers.sh python SCRIPT ARGS...   run SCRIPT with mysql-replication importable
set -euo pipefail
DIR="${BINFERRY_PEERS_DIR:-$HOME/.cache/binferry-peers}"
install_pyrepl() {
  if [ ! -d "$DIR/pymysqlreplication" ]; then
    echo "[peers] installing mysql-replication from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$DIR" mysql-replication >&2
  fi
}
cmd="${1:-}"; shift || true
case "$cmd" in
  python) install_pyrepl; PYTHONPATH="$DIR" exec python3 "$@" ;;
  *) sed -n '2,3p' "$0" >&2; exit 2 ;;
esac
