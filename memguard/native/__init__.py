"""The ctypes layer: the one package that declares foreign functions.

Everything memguard does to native memory, and every C function it calls, goes through
the names re-exported here.  Every foreign function has ``argtypes`` and ``restype``
set, so a 64-bit pointer is never truncated to a C ``int``.

==========================  ==========================================================
module                      concept
==========================  ==========================================================
:mod:`.allocator`           the platform allocator (``malloc``, ``free``,
                            :func:`owned_buffer`, :func:`address_space` …)
:mod:`.prototypes`          the C function-pointer prototypes of allocator hooks
:mod:`.loader`              finding a C library and declaring its functions
:mod:`.libz`                zlib: ``z_stream``, :class:`ZlibLib`, :func:`zlib`
:mod:`.libbz2`              libbz2: ``bz_stream``, :class:`Bz2Lib`, :func:`bz2`
:mod:`.liblzma`             liblzma: ``lzma_allocator``, ``lzma_stream``, :func:`lzma`
:mod:`.libexpat`            libexpat: its memory suite, :class:`ExpatLib`, :func:`expat`
:mod:`.libsqlite3`          libsqlite3: ``sqlite3_mem_methods``, :func:`sqlite3`
==========================  ==========================================================

The C libraries are opened lazily, on the first call of their loader (:func:`zlib` …),
which caches the declared library for the process; a missing library raises
:class:`memguard.errors.LibraryNotFoundError`.  Importing this package opens none.
"""

from __future__ import annotations

from memguard.native.allocator import (
    PLATFORM,
    POINTER_SIZE,
    SIZE_MAX,
    address_space,
    aligned_alloc,
    aligned_free,
    calloc,
    free,
    malloc,
    memcmp,
    memmove,
    memset,
    owned_buffer,
    raw_aligned_alloc,
    raw_calloc,
    raw_free,
    raw_malloc,
    raw_realloc,
    realloc,
    string_at,
    usable_size,
)
from memguard.native.libbz2 import Bz2Lib, BzStream, bz2
from memguard.native.libexpat import ExpatLib, XMLMemoryHandlingSuite, expat
from memguard.native.liblzma import LzmaAllocator, LzmaLib, LzmaStream, lzma
from memguard.native.libsqlite3 import SqliteLib, SqliteMemMethods, sqlite3
from memguard.native.libz import ZlibLib, ZStream, zlib
from memguard.native.loader import load_library
from memguard.native.prototypes import (
    BZALLOC_FN,
    CALLOC_FN,
    FREE_FN,
    LZMA_ALLOC_FN,
    MALLOC_FN,
    OPAQUE_FREE_FN,
    REALLOC_FN,
    SIZE_FN,
    SQLITE_INIT_FN,
    SQLITE_MALLOC_FN,
    SQLITE_REALLOC_FN,
    SQLITE_ROUNDUP_FN,
    SQLITE_SHUTDOWN_FN,
    SQLITE_SIZE_FN,
    ZALLOC_FN,
)

__all__ = [
    # the platform allocator
    "PLATFORM",
    "POINTER_SIZE",
    "SIZE_MAX",
    "malloc",
    "calloc",
    "realloc",
    "free",
    "aligned_alloc",
    "aligned_free",
    "usable_size",
    "memset",
    "memmove",
    "memcmp",
    "owned_buffer",
    "address_space",
    "string_at",
    "raw_malloc",
    "raw_calloc",
    "raw_realloc",
    "raw_free",
    "raw_aligned_alloc",
    # allocator-hook prototypes
    "MALLOC_FN",
    "CALLOC_FN",
    "REALLOC_FN",
    "FREE_FN",
    "SIZE_FN",
    "ZALLOC_FN",
    "OPAQUE_FREE_FN",
    "BZALLOC_FN",
    "LZMA_ALLOC_FN",
    "SQLITE_MALLOC_FN",
    "SQLITE_REALLOC_FN",
    "SQLITE_SIZE_FN",
    "SQLITE_ROUNDUP_FN",
    "SQLITE_INIT_FN",
    "SQLITE_SHUTDOWN_FN",
    # C-library structures
    "ZStream",
    "BzStream",
    "LzmaAllocator",
    "LzmaStream",
    "XMLMemoryHandlingSuite",
    "SqliteMemMethods",
    # C libraries and their loaders
    "ZlibLib",
    "Bz2Lib",
    "LzmaLib",
    "ExpatLib",
    "SqliteLib",
    "load_library",
    "zlib",
    "bz2",
    "lzma",
    "expat",
    "sqlite3",
]
