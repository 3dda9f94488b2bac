#!/usr/bin/env bash
# A real local SMTP server (aiosmtpd from PyPI) for the alert tests: it accepts every
# message on BINFERRY_SMTP_PORT (default 19025), and on the next port with STARTTLS
# required (a certificate for `localhost` signed by a CA generated in
# /tmp/binferry-smtp-<port>/tls/ca.pem), and keeps each as a file in BINFERRY_SMTP_DIR
# (default /tmp/binferry-smtp-<port>/mail).
#
#   scripts/smtp.sh install    a venv with aiosmtpd
#   scripts/smtp.sh start      start it (idempotent)
#   scripts/smtp.sh stop       stop it
#   scripts/smtp.sh status     exit 0 when it answers
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${BINFERRY_SMTP_PORT:-19025}"
BASE="/tmp/binferry-smtp-$PORT"
MAIL="${BINFERRY_SMTP_DIR:-$BASE/mail}"
TLS_DIR="$BASE/tls"
VENV="$HOME/.cache/binferry-smtp/venv"
log() { echo "[smtp:$PORT] $*" >&2; }
# shellcheck source=lib/daemon.sh
. scripts/lib/daemon.sh
# shellcheck source=lib/certs.sh
. scripts/lib/certs.sh

install() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
    return 0
  fi
  log "installing aiosmtpd"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check aiosmtpd==1.4.6
}

answers() { # both listeners
  python3 - "$PORT" <<'PY' 2>/dev/null
import smtplib, sys
for port in (int(sys.argv[1]), int(sys.argv[1]) + 1):
    s = smtplib.SMTP("127.0.0.1", port, timeout=2)
    s.noop()
    s.quit()
PY
}

tls_files() {
  [ -f "$TLS_DIR/server-cert.pem" ] || certs_make "$TLS_DIR"
}

start() {
  install
  tls_files
  if answers; then
    log "already running"
    return 0
  fi
  stop  # an older one listening on one port only
  daemon_spawn "$BASE/smtp.log" "$BASE/smtp.pid" "$VENV/bin/python" scripts/smtp/sink.py --port "$PORT" --dir "$MAIL" \
    --starttls-port "$((PORT + 1))" --cert "$TLS_DIR/server-cert.pem" --key "$TLS_DIR/server-key.pem"
  daemon_wait 100 "$BASE/smtp.log" answers
}

stop() { daemon_stop "$BASE/smtp.pid"; }

cmd="${1:-}"; shift || true
case "$cmd" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) answers ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
