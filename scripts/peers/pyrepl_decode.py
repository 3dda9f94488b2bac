"""Decode speed of mysql-replication (the pure-Python binlog reader) on MariaDB.

usage: pyrepl_decode.py PORT FILE POSITION MAX_ROW_EVENTS
Prints row events per second. Against MariaDB it needs blocking=True and
is_mariadb=True (../shared/INFRA.md); it stops after MAX_ROW_EVENTS rows.
"""
import sys
import time

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

port, log_file, log_pos, limit = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
stream = BinLogStreamReader(
    connection_settings={"host": "127.0.0.1", "port": port, "user": "root", "passwd": ""},
    server_id=987654,
    log_file=log_file,
    log_pos=log_pos,
    resume_stream=True,
    blocking=True,
    is_mariadb=True,
    only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
)
rows = 0
start = time.monotonic()
for event in stream:
    rows += len(event.rows)  # decoding happens here
    if rows >= limit:
        break
elapsed = time.monotonic() - start
stream.close()
print(f"{rows / elapsed:.1f}")
