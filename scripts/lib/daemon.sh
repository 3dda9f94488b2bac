# Background servers of the project's scripts (the Kafka broker, the BigQuery emulator):
# start one, wait until it answers, stop it by its pid file. Sourced; the caller defines
# `log MESSAGE`.
#
#   daemon_spawn LOG PIDFILE CMD...   run CMD in the background, its output in LOG
#   daemon_wait TRIES LOG CHECK...    run CHECK every 0.1 s, at most TRIES times, until it
#                                     succeeds; otherwise print LOG's last lines and exit 1
#   daemon_stop PIDFILE               SIGTERM the process and wait up to 10 s for it to go,
#                                     so that a start right after finds the port free

daemon_spawn() {
  local out="$1" pidfile="$2"
  shift 2
  mkdir -p "$(dirname "$out")" "$(dirname "$pidfile")"
  nohup "$@" >"$out" 2>&1 &
  echo $! >"$pidfile"
}

daemon_wait() {
  local tries="$1" out="$2"
  shift 2
  for _ in $(seq 1 "$tries"); do
    if "$@"; then
      log "ready"
      return 0
    fi
    sleep 0.1
  done
  log "did not start; last lines of $out:"
  tail -n 30 "$out" >&2 || true
  exit 1
}

daemon_stop() {
  local pidfile="$1" pid
  if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
    fi
    rm -f "$pidfile"
  fi
  log "stopped"
}
