# bq SQL: run one query on the local BigQuery emulator (BQ_URL, default port
# BINFERRY_BQ_PORT or 19050) and print the first row's cells, space separated;
# exits with BigQuery's message on an error. Sourced by the demo and benchmark
# scripts of the BigQuery source. BQ_TIMEOUT_MS bounds the job (default 300000).
BQ_URL="${BQ_URL:-http://127.0.0.1:${BINFERRY_BQ_PORT:-19050}/bigquery/v2}"
bq() {
  curl -fsS -X POST "$BQ_URL/projects/binferry-test/queries" -H 'content-type: application/json' \
    -d "$(python3 -c 'import json,sys; print(json.dumps({"query": sys.argv[1], "useLegacySql": False, "timeoutMs": int(sys.argv[2])}))' "$1" "${BQ_TIMEOUT_MS:-300000}")" \
    | python3 -c 'import json,sys
r = json.load(sys.stdin)
if "error" in r: sys.exit("BigQuery: " + r["error"]["message"])
rows = r.get("rows") or [{"f": []}]
print(" ".join(str(c["v"]) for c in rows[0]["f"]))'
}
