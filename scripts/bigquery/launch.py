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

Four hot paths are made cheaper, each found with py-spy under tests/bigquery.rs and each
keeping the emulator's answers (see below): a table's existence and size, its REQUIRED
columns, the list of temporary tables each query job starts with (all three were scans of
every table of every dataset), and DuckDB's search for pandas. Together they cut the
emulator's busy time under tests/bigquery.rs by 43 % and the tests' time from 402 s to
270-285 s here (4 at a time, fresh emulator, same machine, one run each).
"""
import inspect
import os
import sys
import textwrap
import threading
import time

# DuckDB looks for pandas on every result it converts and every parameter it binds, and
# pandas is not installed: each miss searched sys.path again, under the import lock that all
# the emulator's threads share (a tenth of its busy time under tests/bigquery.rs, py-spy).
# `None` here makes the miss immediate.
sys.modules.setdefault("pandas", None)

import duckdb  # noqa: E402

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
                    # duckdb_columns(), not duckdb_tables(): see TEMPORARY_TABLES below
                    "SELECT DISTINCT table_name FROM duckdb_columns() "
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
from local_bigquery.catalog import tabledata, tables  # noqa: E402
from local_bigquery.cli import main  # noqa: E402
from local_bigquery.engine import database  # noqa: E402
from local_bigquery.jobs import query  # noqa: E402

_list_rows = tabledata.list_rows


def list_rows(project_id, dataset_id, table_id, *args, **kwargs):
    # getQueryResults reads a job's result table through here (dataset "_results").
    if dataset_id == "_results":
        last_read[f"{project_id}:{table_id}"] = time.time()
    return _list_rows(project_id, dataset_id, table_id, *args, **kwargs)


tabledata.list_rows = list_rows

_objects = database.objects


def objects(project_id, dataset_id, table_id=None):
    """One table's (name, kind, rows) without walking the whole catalog.

    The emulator answers "does table X exist" (several times per query job, once for each
    table a query names, and again on every insertAll and result page) with a scan of
    `duckdb_tables()`, which reads every DuckLake table's entry: 70 ms with 160 tables, and
    150 ms right after a commit, so the BigQuery tests' many datasets slowed each other's
    every job down. Here a table is opened by name (`table()` finds tables only) and its rows
    counted, 7 ms; a name that is not a table is looked up in `duckdb_views()`.

    Two differences from the scan, both closer to BigQuery: the row count is exact where
    `estimated_size` counted every row ever written, and a name differing only in case finds
    the table (DuckDB cannot hold two such tables; BigQuery could).
    """
    if table_id is None:
        return _objects(project_id, dataset_id, table_id)
    with database.cursor() as cur:
        try:
            (rows,) = cur.table(database.quote(project_id, dataset_id, table_id)).aggregate("count(*)").fetchone()
            return [(table_id, "TABLE", rows)]
        except duckdb.CatalogException:
            pass  # not a table: a view, or nothing
    return database.fetch(
        "SELECT view_name, 'VIEW', 0 FROM duckdb_views() WHERE database_name = $1 "
        "AND schema_name = $2 AND view_name = $3 AND NOT internal",
        [project_id, dataset_id, table_id],
    )


database.objects = objects


def columns(project_id, dataset_id, table_id):
    """The emulator's `tables.columns`, with NOT NULL read from the one table.

    The emulator finds a table's REQUIRED columns in `duckdb_columns()`, a scan of every
    table's columns; `pragma_table_info` reads only this table's. The rest is the emulator's
    own code (0.3.2), unchanged.
    """
    table = tables.name(project_id, dataset_id, table_id)
    try:
        required = {
            column
            for (column,) in database.fetch("SELECT name FROM pragma_table_info(?) WHERE \"notnull\"", [table])
        }
    except (duckdb.CatalogException, duckdb.BinderException):
        required = set()  # the table is gone: the query below says so, as the emulator would
    with database.cursor() as cur:
        try:
            relation = cur.sql(f"SELECT * FROM {table} LIMIT 0")
        except duckdb.CatalogException:
            raise tables.not_found("Table", tables.names.label(project_id, dataset_id, table_id)) from None
        return [
            tables.types.field(column, t, column in required)
            for column, t in zip(relation.columns, relation.types)
            if column != tables.INGESTION_TIME or dataset_id == tables.RESULTS
        ]


tables.columns = columns
tabledata.columns = columns  # imported by name there

# Every query job starts by listing the session's temporary tables with a scan of
# `duckdb_tables()`: 70 ms with 160 DuckLake tables, 300 ms with the BigQuery tests running,
# and a sixth of the emulator's busy time under tests/bigquery.rs (py-spy). The same names come
# from `duckdb_columns()` (every temporary table has a column) less the temporary views, in
# 4 to 12 ms. The emulator's `execute` is recompiled with that one query replaced; the
# assertion stops the launcher if another emulator version no longer has it.
TEMPORARY_TABLES = '"SELECT table_name FROM duckdb_tables() WHERE temporary"'
_execute_source = textwrap.dedent(inspect.getsource(query.execute))
assert _execute_source.count(TEMPORARY_TABLES) == 1, "local_bigquery.jobs.query.execute changed; update launch.py"
exec(
    compile(
        _execute_source.replace(
            TEMPORARY_TABLES,
            '"SELECT DISTINCT table_name FROM duckdb_columns() WHERE database_name = \'temp\' '
            'AND table_name NOT IN (SELECT view_name FROM duckdb_views() WHERE temporary)"',
        ),
        query.__file__,
        "exec",
    ),
    query.__dict__,
)

threading.Thread(target=drop_old_results, args=(database,), name="drop-old-results", daemon=True).start()

sys.exit(main(sys.argv[1:]))
