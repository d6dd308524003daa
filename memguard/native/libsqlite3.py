"""libsqlite3: its ``sqlite3_mem_methods`` structure, its functions, its loader."""

from __future__ import annotations

import ctypes

from memguard.native.loader import cached, load_library, require
from memguard.native import prototypes as proto

__all__ = ["SqliteMemMethods", "SqliteLib", "sqlite3"]

_vp = ctypes.c_void_p
_cp = ctypes.c_char_p
_c_int = ctypes.c_int


class SqliteMemMethods(ctypes.Structure):
    """SQLite's ``sqlite3_mem_methods`` (for ``sqlite3_config(SQLITE_CONFIG_MALLOC, …)``)."""

    _fields_ = [
        ("xMalloc", proto.SQLITE_MALLOC_FN),
        ("xFree", proto.FREE_FN),
        ("xRealloc", proto.SQLITE_REALLOC_FN),
        ("xSize", proto.SQLITE_SIZE_FN),
        ("xRoundup", proto.SQLITE_ROUNDUP_FN),
        ("xInit", proto.SQLITE_INIT_FN),
        ("xShutdown", proto.SQLITE_SHUTDOWN_FN),
        ("pAppData", _vp),
    ]


class SqliteLib:
    """libsqlite3's functions with prototypes set (see :func:`sqlite3`).

    ``sqlite3_config`` is variadic; ``config_malloc`` is its ``(int, sqlite3_mem_methods *)``
    form, which is how every ``SQLITE_CONFIG_MALLOC`` call is made.
    """

    SQLITE_OK = 0
    SQLITE_BUSY = 5
    SQLITE_ROW = 100
    SQLITE_DONE = 101
    SQLITE_MISUSE = 21
    SQLITE_CONFIG_MALLOC = 4
    SQLITE_CONFIG_GETMALLOC = 5
    #: ``sqlite3_exec``'s callback: ``int (*)(void *, int, char **, char **)``
    EXEC_CALLBACK = ctypes.CFUNCTYPE(_c_int, _vp, _c_int, ctypes.POINTER(_cp), ctypes.POINTER(_cp))

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: require(lib, "libsqlite3", name, res, *args)  # noqa: E731
        pp = ctypes.POINTER(_vp)
        self.lib = lib
        self.sqlite3_libversion = d("sqlite3_libversion", _cp)
        # A second handle on the same symbol, so the variadic function's two shapes keep
        # their own prototypes.
        self.config_malloc = require(
            ctypes.CDLL(lib._name), "libsqlite3", "sqlite3_config", _c_int, _c_int, ctypes.POINTER(SqliteMemMethods)
        )
        self.sqlite3_initialize = d("sqlite3_initialize", _c_int)
        self.sqlite3_shutdown = d("sqlite3_shutdown", _c_int)
        self.sqlite3_open = d("sqlite3_open", _c_int, _cp, pp)
        self.sqlite3_close = d("sqlite3_close", _c_int, _vp)
        self.sqlite3_exec = d("sqlite3_exec", _c_int, _vp, _cp, self.EXEC_CALLBACK, _vp, pp)
        self.sqlite3_prepare_v2 = d("sqlite3_prepare_v2", _c_int, _vp, _cp, _c_int, pp, pp)
        self.sqlite3_step = d("sqlite3_step", _c_int, _vp)
        self.sqlite3_finalize = d("sqlite3_finalize", _c_int, _vp)
        self.sqlite3_column_int64 = d("sqlite3_column_int64", ctypes.c_int64, _vp, _c_int)
        self.sqlite3_errmsg = d("sqlite3_errmsg", _cp, _vp)
        self.sqlite3_free = d("sqlite3_free", None, _vp)
        self.sqlite3_memory_used = d("sqlite3_memory_used", ctypes.c_int64)
        self.version: bytes = self.sqlite3_libversion()


def sqlite3() -> SqliteLib:
    """The system libsqlite3, loaded once, every function memguard uses declared.

    Configuring SQLite's allocator changes it for the whole process (including Python's
    own :mod:`sqlite3` module when it shares the library): do it in a process of its own.
    """
    return cached("sqlite3", lambda: SqliteLib(load_library("sqlite3")))
