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
  [ -f "$TLS_DIR/server-cert.pem" ] && return 0
  command -v openssl >/dev/null 2>&1 || {
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing openssl"; $sudo apt-get install -y -qq openssl >/dev/null
  }
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR"
    q() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; }
    q openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=binferry smtp test CA" \
      -keyout ca-key.pem -out ca.pem
    q openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server-key.pem -out server.csr
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    q openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile server.ext -out server-cert.pem
    chmod 600 ./*-key.pem
  )
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
