"""Reads every rows event of a MySQL / MariaDB server's binary log with python-mysql-replication
and prints one JSON line per row, for tests/mysql_crosscheck.rs to compare with logtide's.

    pymyrepl.py --host 127.0.0.1 --port P --user U --password PW --server-id N [--mariadb]

The dump is non-blocking from the start of the first binlog file: the server ends it with EOF
after the last event, and the script exits 0. Each line:

    {"schema": s, "table": t, "op": "c"|"u"|"d", "before": {...}|null, "after": {...}|null,
     "none_before": {col: why}, "none_after": {col: why}, "types": {col: type code}}

where a column's value is JSON as-is for ints, floats and text, and tagged otherwise (the
library's Python types, so the comparing test sees exactly what it decoded):
    {"$bytes": hex} bytes, {"$decimal": str} Decimal, {"$datetime": iso} datetime,
    {"$date": iso} date, {"$time_us": n} timedelta, {"$set": [sorted]} set,
    {"$bits": "0101"} a BIT column's bit string, {"$json": value} a JSON column's document,
    {"$json_diff": {"op", "path", "value"}} a partial JSON update's diff.
"none_*" says why a value is None (the library's NONE_SOURCE: "null", "cols bitmap",
"empty set", ...).
"""

import argparse
import datetime
import decimal
import json
import sys

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.json_binary import JsonDiff
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    PartialUpdateRowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)


def plain(v):
    """A JSON document as the library parsed it (bytes keys and strings) as plain JSON."""
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, dict):
        return {plain(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, decimal.Decimal):
        return {"$decimal": str(v)}
    return v


def tagged(v, col_type):
    if v is None:
        return None
    if isinstance(v, JsonDiff):
        return {
            "$json_diff": {
                "op": v.op.name,
                "path": v.path.decode("utf-8"),
                "value": plain(v.value),
            }
        }
    if col_type == FIELD_TYPE.JSON:
        return {"$json": plain(v)}
    if col_type == FIELD_TYPE.BIT:
        return {"$bits": v}
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float, str)):
        return v
    if isinstance(v, bytes):
        return {"$bytes": v.hex()}
    if isinstance(v, decimal.Decimal):
        return {"$decimal": str(v)}
    if isinstance(v, datetime.datetime):
        return {"$datetime": v.isoformat()}
    if isinstance(v, datetime.date):
        return {"$date": v.isoformat()}
    if isinstance(v, datetime.timedelta):
        return {"$time_us": (v.days * 86400 + v.seconds) * 1_000_000 + v.microseconds}
    if isinstance(v, (set, frozenset)):
        return {"$set": sorted(v)}
    raise TypeError(f"pymyrepl.py: no JSON form for {type(v).__name__} {v!r}")


def image(event, values):
    if values is None:
        return None
    types = {c.name: c.type for c in event.columns}
    return {k: tagged(v, types.get(k)) for k, v in values.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--server-id", type=int, required=True)
    ap.add_argument("--mariadb", action="store_true")
    a = ap.parse_args()
    stream = BinLogStreamReader(
        connection_settings={
            "host": a.host,
            "port": a.port,
            "user": a.user,
            "passwd": a.password,
        },
        server_id=a.server_id,
        blocking=False,
        only_events=[
            WriteRowsEvent,
            UpdateRowsEvent,
            PartialUpdateRowsEvent,
            DeleteRowsEvent,
        ],
        is_mariadb=a.mariadb,
        # Table maps without column names (binlog_row_metadata=MINIMAL): names from
        # information_schema.columns, as logtide takes them.
        use_column_name_cache=True,
        enable_logging=False,
    )
    try:
        for ev in stream:
            for row in ev.rows:
                if isinstance(ev, WriteRowsEvent):
                    op, before, after = "c", None, row["values"]
                    nb, na = {}, row["none_sources"]
                elif isinstance(ev, DeleteRowsEvent):
                    op, before, after = "d", row["values"], None
                    nb, na = row["none_sources"], {}
                else:
                    op, before, after = "u", row["before_values"], row["after_values"]
                    nb, na = row["before_none_sources"], row["after_none_sources"]
                line = {
                    "types": {c.name: c.type for c in ev.columns},
                    "schema": ev.schema,
                    "table": ev.table,
                    "op": op,
                    "before": image(ev, before),
                    "after": image(ev, after),
                    "none_before": nb,
                    "none_after": na,
                }
                print(json.dumps(line, sort_keys=True), flush=True)
    finally:
        stream.close()


if __name__ == "__main__":
    sys.exit(main())
