"""Finding C libraries and declaring their functions.

:func:`declare` is the one place a foreign function gets its prototype: every function
memguard calls has ``argtypes`` and ``restype`` set, so a 64-bit pointer is never
truncated to a C ``int``.  :func:`require` is the same for a function a library must
have, :func:`load_library` opens a system library by its short name, and :func:`cached`
keeps one loaded, declared library per key for the whole process.

Nothing here opens a library at import time: the per-library modules open theirs on
the first call of their loader (:func:`memguard.native.zlib` …).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Any, Callable, TypeVar

from memguard.errors import LibraryNotFoundError

__all__ = ["declare", "require", "load_library", "is_loaded", "cached"]

_T = TypeVar("_T")

#: ``name -> sonames to try`` when ``ctypes.util.find_library`` finds nothing.
_SONAMES: dict[str, tuple[str, ...]] = {
    "z": ("libz.so.1", "libz.dylib", "zlib1.dll", "zlib.dll"),
    "bz2": ("libbz2.so.1.0", "libbz2.so.1", "libbz2.dylib", "libbz2.dll", "bz2.dll"),
    "lzma": ("liblzma.so.5", "liblzma.dylib", "liblzma.dll", "lzma.dll"),
    "expat": ("libexpat.so.1", "libexpat.dylib", "libexpat.dll", "expat.dll"),
    "sqlite3": ("libsqlite3.so.0", "libsqlite3.dylib", "sqlite3.dll"),
    "zstd": ("libzstd.so.1", "libzstd.dylib", "libzstd.dll", "zstd.dll"),
    "lz4": ("liblz4.so.1", "liblz4.dylib", "liblz4.dll", "lz4.dll"),
    "xml2": ("libxml2.so.2", "libxml2.dylib", "libxml2-2.dll", "libxml2.dll"),
    "crypto": ("libcrypto.so.3", "libcrypto.3.dylib", "libcrypto-3-x64.dll", "libcrypto-3.dll"),
}

_lock = threading.Lock()
_cache: dict[str, Any] = {}


def declare(lib: ctypes.CDLL, name: str, restype: object, *argtypes: object) -> Any | None:
    """Look up ``name`` in ``lib`` and set its prototype; ``None`` when ``lib`` lacks it."""
    fn = getattr(lib, name, None)
    if fn is None:
        return None
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


def require(lib: ctypes.CDLL, libname: str, name: str, restype: object, *argtypes: object) -> Any:
    """:func:`declare` a function ``lib`` must have.

    Raises :class:`memguard.errors.LibraryNotFoundError` naming ``libname`` and the
    function when it is missing (a library too old for memguard).
    """
    fn = declare(lib, name, restype, *argtypes)
    if fn is None:
        raise LibraryNotFoundError(f"{libname} has no function {name!r} (too old a version?)")
    return fn


def load_library(name: str) -> ctypes.CDLL:
    """Open the system library ``name`` (``"z"``, ``"bz2"``, ``"lzma"``, ``"expat"``, ``"sqlite3"``).

    ``ctypes.util.find_library`` is asked first, then the library's usual file names
    (``lib<name>.so`` for a library memguard does not know).  Raises
    :class:`memguard.errors.LibraryNotFoundError` naming the library when it is not
    installed.  (Not cached; the typed loaders such as :func:`memguard.native.zlib` cache.)
    """
    candidates: list[str] = []
    found = ctypes.util.find_library(name)
    if found:
        candidates.append(found)
    candidates.extend(_SONAMES.get(name, (f"lib{name}.so",)))
    errors = []
    for candidate in candidates:
        try:
            return ctypes.CDLL(candidate)
        except OSError as exc:
            errors.append(f"{candidate}: {exc}")
    raise LibraryNotFoundError(f"C library {name!r} is not installed ({'; '.join(errors) or 'not found'})")


def is_loaded(name: str) -> bool:
    """Whether the library ``name`` (as for :func:`load_library`) is mapped into the process.

    Asks the dynamic loader with ``RTLD_NOLOAD``, which never loads anything.  Where
    that flag does not exist (Windows), answers ``False``.
    """
    noload = getattr(os, "RTLD_NOLOAD", None)
    if noload is None:
        return False
    candidates = [found] if (found := ctypes.util.find_library(name)) else []
    candidates.extend(_SONAMES.get(name, (f"lib{name}.so",)))
    for candidate in candidates:
        try:
            ctypes.CDLL(candidate, mode=noload | getattr(os, "RTLD_LAZY", 1))
        except OSError:
            continue
        return True
    return False


def cached(key: str, make: Callable[[], _T]) -> _T:
    """The value stored under ``key``, made by ``make()`` on the first call (thread-safe).

    A ``make`` that raises stores nothing, so a later call tries again.
    """
    with _lock:
        value = _cache.get(key)
        if value is None:
            value = _cache[key] = make()
        return value  # type: ignore[no-any-return]
