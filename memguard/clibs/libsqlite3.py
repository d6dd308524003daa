"""SQLite on the guarded heap: ``sqlite3_mem_methods`` that are the heap, and
:func:`sqlite_configure`, which makes them SQLite's allocator for the process.
"""

from __future__ import annotations

import ctypes
from typing import Any

from memguard.heap.c_allocator import allocator_for
from memguard.clibs.common import CLibraryError
from memguard.native.libsqlite3 import SqliteLib, SqliteMemMethods, sqlite3
from memguard.native import prototypes

__all__ = ["sqlite_mem_methods", "sqlite_configure"]


@prototypes.SQLITE_ROUNDUP_FN
def _sqlite_roundup(n: int) -> int:
    return (n + 7) & ~7 if n > 0 else 0


@prototypes.SQLITE_INIT_FN
def _sqlite_init(app: int | None) -> int:
    return 0


@prototypes.SQLITE_SHUTDOWN_FN
def _sqlite_shutdown(app: int | None) -> None:
    return None


#: Methods and allocators handed to SQLite: it calls them for the rest of the process.
_keepalive: list[object] = []


def sqlite_mem_methods(allocator: Any) -> SqliteMemMethods:
    """A ``sqlite3_mem_methods`` using the guarded heap (``xSize`` is the block's size)."""
    alloc = allocator_for(allocator)
    m = SqliteMemMethods()
    m.xMalloc = alloc.function("malloc", prototypes.SQLITE_MALLOC_FN)
    m.xFree = alloc.free
    m.xRealloc = alloc.function("realloc", prototypes.SQLITE_REALLOC_FN)
    m.xSize = alloc.function("size", prototypes.SQLITE_SIZE_FN)
    m.xRoundup = _sqlite_roundup
    m.xInit = _sqlite_init
    m.xShutdown = _sqlite_shutdown
    m.pAppData = None
    return m


def sqlite_configure(allocator: Any) -> SqliteLib:
    """Make the guarded heap SQLite's allocator for the rest of the process.

    Calls ``sqlite3_config(SQLITE_CONFIG_MALLOC, &methods)`` then ``sqlite3_initialize``.
    SQLite must not be initialised yet, and the setting is process-wide (it also applies
    to Python's :mod:`sqlite3` module when it uses the same library), so do this in a
    process of its own (see ``examples/sqlite_guarded.py``).  The callbacks are kept
    alive for the life of the process.  Returns the loaded library.
    """
    sq = sqlite3()
    methods = sqlite_mem_methods(allocator)
    rc = sq.config_malloc(sq.SQLITE_CONFIG_MALLOC, ctypes.byref(methods))
    if rc != sq.SQLITE_OK:
        hint = " (SQLite is already initialised in this process)" if rc == sq.SQLITE_MISUSE else ""
        raise CLibraryError("sqlite", rc, f"sqlite3_config(SQLITE_CONFIG_MALLOC) failed{hint}")
    _keepalive.append((methods, allocator_for(allocator)))
    rc = sq.sqlite3_initialize()
    if rc != sq.SQLITE_OK:
        raise CLibraryError("sqlite", rc, "sqlite3_initialize failed")
    return sq
