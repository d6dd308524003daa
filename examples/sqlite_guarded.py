"""SQLite on the guarded heap, in a process of its own.

Run:  python examples/sqlite_guarded.py [--leak] [--rows N]

``sqlite3_config(SQLITE_CONFIG_MALLOC, &methods)`` must be called before
``sqlite3_initialize`` and changes SQLite's allocator for the whole process (Python's
own :mod:`sqlite3` module included, when it shares the library), which is why this runs
as a separate program and never imports :mod:`sqlite3`.  Every allocation SQLite makes
then lands on a guarded heap.  With ``--leak`` a prepared statement is never finalized,
so ``sqlite3_close`` fails and the connection leaks; the report points at the lines below.

The last line of output is a JSON summary (used by memguard's tests).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys

import memguard
from memguard import clibs


def run(rows: int, leak: bool) -> dict[str, object]:
    """Build and query a table on the guarded heap; return a summary of what memguard saw."""
    heap = memguard.GuardedHeap(on_error="report")
    sq = clibs.sqlite_configure(heap)  # sqlite3_config(SQLITE_CONFIG_MALLOC) + sqlite3_initialize
    db = ctypes.c_void_p()
    assert sq.sqlite3_open(b":memory:", ctypes.byref(db)) == sq.SQLITE_OK
    err = ctypes.c_void_p()
    sql = b"CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, payload BLOB);"
    sql += b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) " % rows
    sql += b"INSERT INTO t SELECT x, 'row ' || x, randomblob(100) FROM c;"
    sql += b"CREATE INDEX t_name ON t(name);"
    rc = sq.sqlite3_exec(db, sql, sq.EXEC_CALLBACK(), None, ctypes.byref(err))
    assert rc == sq.SQLITE_OK, (rc, sq.sqlite3_errmsg(db))
    stmt = ctypes.c_void_p()
    assert sq.sqlite3_prepare_v2(db, b"SELECT count(*), sum(length(payload)) FROM t", -1, ctypes.byref(stmt), None) == 0
    assert sq.sqlite3_step(stmt) == sq.SQLITE_ROW
    count = sq.sqlite3_column_int64(stmt, 0)
    if not leak:
        sq.sqlite3_finalize(stmt)
    close_rc = sq.sqlite3_close(db)  # SQLITE_BUSY while a statement is not finalized
    sq.sqlite3_shutdown()
    leaks = heap.leaks()
    if leaks:
        print(memguard.format_leaks(leaks))
    reports = heap.check()
    stats = heap.stats()
    return {
        "rows": count,
        "close_rc": close_rc,
        "allocations": stats.total_allocs,
        "peak_bytes": stats.peak_bytes,
        "reports": [r.kind for r in heap.reports + reports],
        "leaked_bytes": sum(g.size for g in leaks),
        "leak_lines": sorted({f.lineno for g in leaks for f in g.stack[:1]}),
    }


def main() -> int:
    """Parse the arguments, run, print the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leak", action="store_true", help="never finalize a statement")
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    if "sqlite3" in sys.modules:  # pragma: no cover - defensive
        print("the sqlite3 module is loaded; run this in a fresh process", file=sys.stderr)
        return 2
    summary = run(args.rows, args.leak)
    print(json.dumps(summary))
    return 1 if summary["reports"] or summary["leaked_bytes"] else 0


if __name__ == "__main__":
    sys.exit(main())
