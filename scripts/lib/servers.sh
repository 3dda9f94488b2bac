# start_servers NAME...: start each of the project's servers (scripts/NAME.sh: mariadb,
# kafka, bigquery, smtp) that is not already running, and remember which;
# stop_started_servers stops those, and only those, so a script leaves a server
# someone else started running. Sourced by the test, demo and benchmark scripts.
# start_fresh_servers NAME... restarts each with no data (scripts/NAME.sh fresh) and stops
# it at exit only if it was not running before.
STARTED_SERVERS=()
start_fresh_servers() {
  local s
  for s in "$@"; do
    "scripts/$s.sh" status || STARTED_SERVERS+=("$s")
    "scripts/$s.sh" fresh
  done
}
start_servers() {
  local s
  for s in "$@"; do
    if ! "scripts/$s.sh" status; then
      "scripts/$s.sh" start
      STARTED_SERVERS+=("$s")
    fi
  done
}
stop_started_servers() {
  local s
  for s in "${STARTED_SERVERS[@]}"; do
    "scripts/$s.sh" stop || true
  done
}
