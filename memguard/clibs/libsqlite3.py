"""SQLite on the guarded heap: ``sqlite3_mem_methods`` that are the heap, and
:func:`sqlite_configure`, which makes them SQLite's allocator for the process.

SQLite calls its allocator on error paths, while the Python exception of a failed user
function (Python's :mod:`sqlite3`) is still pending: every method handed to SQLite goes
through memguard's exception-preserving trampolines, and without them (memguard built
without a C compiler) both functions refuse with
:class:`~memguard.errors.TrampolineUnavailableError`.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from memguard.heap.c_allocator import allocator_for
from memguard.clibs.common import CLibraryError
from memguard.native.libsqlite3 import SqliteLib, SqliteMemMethods, sqlite3
from memguard.errors import TrampolineUnavailableError
from memguard.native import prototypes, trampoline

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
#: ``xRoundup``, ``xInit`` and ``xShutdown`` through trampolines, made once (their slots are never released).
_helpers: list[Any] = []
_helpers_lock = threading.Lock()


def _trampolined_helpers(integration: str) -> list[Any]:
    """``[xRoundup, xInit, xShutdown]`` as trampolines (made on first use)."""
    with _helpers_lock:
        if not _helpers:
            made = []
            for callback in (_sqlite_roundup, _sqlite_init, _sqlite_shutdown):
                wrapped = trampoline.wrap(type(callback), callback)
                if wrapped is None:
                    trampoline.require(integration)
                    raise TrampolineUnavailableError(
                        f"{integration}: no trampoline is free for SQLite's {type(callback).__name__}",
                        integration=integration, reason="no trampoline of this shape is free",
                    )
                made.append(wrapped[0])
            _helpers.extend(made)
        return list(_helpers)


def sqlite_mem_methods(allocator: Any) -> SqliteMemMethods:
    """A ``sqlite3_mem_methods`` using the guarded heap (``xSize`` is the block's size).

    Every method is an exception-preserving trampoline; raises
    :class:`~memguard.errors.TrampolineUnavailableError` when memguard has none.
    """
    name = "memguard.clibs.sqlite_mem_methods"
    trampoline.require(name)
    alloc = allocator_for(allocator)
    roundup, init, shutdown = _trampolined_helpers(name)
    m = SqliteMemMethods()
    m.xMalloc = alloc.function("malloc", prototypes.SQLITE_MALLOC_FN, require_trampoline=name)
    m.xFree = alloc.function("free", prototypes.FREE_FN, require_trampoline=name)
    m.xRealloc = alloc.function("realloc", prototypes.SQLITE_REALLOC_FN, require_trampoline=name)
    m.xSize = alloc.function("size", prototypes.SQLITE_SIZE_FN, require_trampoline=name)
    m.xRoundup = roundup
    m.xInit = init
    m.xShutdown = shutdown
    m.pAppData = None
    return m


def sqlite_configure(allocator: Any) -> SqliteLib:
    """Make the guarded heap SQLite's allocator for the rest of the process.

    Calls ``sqlite3_config(SQLITE_CONFIG_MALLOC, &methods)`` then ``sqlite3_initialize``.
    SQLite must not be initialised yet, and the setting is process-wide (it also applies
    to Python's :mod:`sqlite3` module when it uses the same library), so do this in a
    process of its own (see ``examples/sqlite_guarded.py``).  The callbacks are kept
    alive for the life of the process.  Returns the loaded library.  Raises
    :class:`~memguard.errors.TrampolineUnavailableError`, before touching SQLite, when
    memguard has no exception-preserving trampolines.
    """
    trampoline.require("memguard.clibs.sqlite_configure")
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
