"""Start the local-bigquery 0.3.2 emulator offline.

Two DuckDB points are patched before the emulator's own `main` runs
(../shared/INFRA.md): extensions come from the directory the install step filled
from the ducklake and spatial wheels (never downloaded), and the session time
zone is set after connecting, since passing `TimeZone` in `connect(config=...)`
fails offline ("icu could not be autoloaded").
"""
import os
import sys

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

from local_bigquery.cli import main  # noqa: E402  (after the patch, on purpose)

sys.exit(main(sys.argv[1:]))
