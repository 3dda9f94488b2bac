"""Start the local-bigquery 0.3.2 emulator offline.

Two DuckDB points are patched before the emulator's own `main` runs
(../shared/INFRA.md): extensions come from the directory the install step filled
from the ducklake and spatial wheels (never downloaded), and the session time
zone is set after connecting, since passing `TimeZone` in `connect(config=...)`
fails offline ("icu could not be autoloaded").

One retention is added: the emulator keeps every query job's result table
(`emulator._results`) until the job is deleted, and real clients never delete
jobs. Each table lookup the emulator makes while translating a query lists
`duckdb_tables()`, which walks all of them, so every query grew slower with the
number run before it: one run of tests/bigquery.rs left ~1,600 result tables,
and a session of suites and benchmarks made the suite's BigQuery tests two and
a half times slower. A janitor thread drops the result tables of jobs that
ended, and whose results were last read, more than BINFERRY_BQ_RESULT_TTL_SECS
ago (default 30; real BigQuery keeps them 24 hours; every client here reads a
job's results as it ends, and a client paging through a large result keeps it
alive with each page). Under tests/bigquery.rs, 30 s keeps about 40 result
tables where 120 s kept 300 to 600 (in DuckDB alone, a lookup takes 2.5 ms with
none and 10 ms with 300). The lookup stays a quarter to a third of the
emulator's busy time either way (py-spy): the rest of its cost is the DuckLake
catalog, which grows with every commit, so every start of the emulator begins
with no data (scripts/bigquery.sh).
"""
import os
import sys
import threading
import time

import duckdb

EXTDIR = os.environ["BINFERRY_BQ_EXTDIR"]
_connect = duckdb.connect


def connect(*args, **kwargs):
    config = dict(kwargs.pop("config", None) or {})
    tz = config.pop("TimeZone", None)
    config["extension_directory"] = EXTDIR
    config["autoinstall_known_extensions"] = False
    con = _connect(*args, config=config, **kwargs)
    if tz:
        con.execute(f"SET TimeZone = '{tz}'")
    return con


duckdb.connect = connect

RESULT_TTL_SECS = int(os.environ.get("BINFERRY_BQ_RESULT_TTL_SECS", "30"))
# When each result table was last read: "project:job" -> time.time().
last_read = {}


def drop_old_results(database):
    while True:
        time.sleep(min(60, max(1, RESULT_TTL_SECS // 4)))
        if not database._connect.cache_info().currsize:
            continue  # the emulator has not opened its data yet (its settings come from main)
        try:
            cutoff_ms = int((time.time() - RESULT_TTL_SECS) * 1000)
            present = {
                name
                for (name,) in database.fetch(
                    "SELECT table_name FROM duckdb_tables() "
                    "WHERE database_name = 'emulator' AND schema_name = '_results'"
                )
            }
            # By the job's end, not its creation: a long job's results are read after it ends.
            old = database.fetch(
                "SELECT project_id || ':' || job_id FROM emulator.jobs WHERE state = 'DONE' "
                "AND TRY_CAST(resource->>'$.statistics.endTime' AS BIGINT) < ?",
                [cutoff_ms],
            )
            dropped = 0
            for (name,) in old:
                if name in present and last_read.get(name, 0) < time.time() - RESULT_TTL_SECS:
                    last_read.pop(name, None)
                    database.execute(f"DROP TABLE IF EXISTS {database.quote('emulator', '_results', name)}")
                    dropped += 1
            if dropped:
                print(
                    f"binferry launcher: dropped {dropped} query result tables of jobs that ended over {RESULT_TTL_SECS} s ago "
                    f"({len(present) - dropped} kept)",
                    file=sys.stderr,
                    flush=True,
                )
        except Exception as error:  # the next round retries; the emulator keeps serving
            print(f"binferry launcher: dropping old query results failed: {error}", file=sys.stderr, flush=True)


# Both imports after the patch, on purpose, and both on this thread before the janitor starts:
# the emulator's modules import each other in a cycle that only resolves in one order, and a
# thread importing `local_bigquery.engine` while this one imports `local_bigquery.cli` sees a
# partially initialised module ("cannot import name 'Context' ... most likely due to a circular
# import"), which failed a CI run at start-up.
from local_bigquery.catalog import tabledata  # noqa: E402
from local_bigquery.cli import main  # noqa: E402
from local_bigquery.engine import database  # noqa: E402

_list_rows = tabledata.list_rows


def list_rows(project_id, dataset_id, table_id, *args, **kwargs):
    # getQueryResults reads a job's result table through here (dataset "_results").
    if dataset_id == "_results":
        last_read[f"{project_id}:{table_id}"] = time.time()
    return _list_rows(project_id, dataset_id, table_id, *args, **kwargs)


tabledata.list_rows = list_rows

threading.Thread(target=drop_old_results, args=(database,), name="drop-old-results", daemon=True).start()

sys.exit(main(sys.argv[1:]))
