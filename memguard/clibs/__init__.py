"""Adapters that put real C libraries on the guarded heap (zlib, bzip2, liblzma, expat,
SQLite, zstd, lz4, libxml2, OpenSSL).

Each library takes a custom allocator in its own shape; the functions below fill that
shape from a :class:`~memguard.heap.c_allocator.CAllocator` (or a heap, whose
:func:`~memguard.heap.c_allocator.allocator_for` allocator is used)::

    heap = memguard.GuardedHeap()
    strm = clibs.zlib_stream(heap)          # z_stream with zalloc/zfree/opaque set
    native.zlib().deflateInit2_(ctypes.byref(strm), ...)

===========  ===========================================  ===================================
library      allocator shape                              adapter
===========  ===========================================  ===================================
zlib         ``z_stream.zalloc/zfree/opaque``             :func:`zlib_stream`
bzip2        ``bz_stream.bzalloc/bzfree/opaque``          :func:`bz_stream`
liblzma      ``lzma_stream.allocator`` → ``lzma_allocator``  :func:`lzma_allocator`, :func:`lzma_stream`
expat        ``XML_ParserCreate_MM(enc, &suite, sep)``    :func:`expat_memory_suite`, :func:`expat_parser`
SQLite       ``sqlite3_config(SQLITE_CONFIG_MALLOC, &m)``  :func:`sqlite_mem_methods`, :func:`sqlite_configure`
zstd         ``ZSTD_create*_advanced(ZSTD_customMem)``    :func:`zstd_custom_mem`, :func:`zstd_cctx`, :func:`zstd_dctx`
lz4 frames   ``LZ4F_create*Context_advanced(LZ4F_CustomMem)``  :func:`lz4_custom_mem`, :func:`lz4_cctx`, :func:`lz4_dctx`
OpenSSL 3    ``CRYPTO_set_mem_functions(m, r, f)`` (file/line)  :func:`openssl_configure` (process-wide)
libxml2      ``xmlMemSetup(free, malloc, realloc, strdup)``  :func:`xml2_configure` (process-wide)
===========  ===========================================  ===================================

The whole-buffer helpers (:func:`deflate`, :func:`inflate`, :func:`bz2_compress`,
:func:`bz2_decompress`, :func:`lzma_compress`, :func:`lzma_decompress`,
:func:`expat_parse`) drive the real library through ctypes, on the guarded heap when an
allocator is given and on the library's own allocator when it is ``None``; memguard's
tests and benchmarks use them, and they are small enough to read as recipes.  A
library's error code raises :class:`CLibraryError` (:mod:`.common`); NULL from the
allocator raises :class:`MemoryError`.

Frames inside memguard are left out of recorded stacks, so a block the library allocates
inside one of these helpers is attributed to the line that called the helper.

Each library's adapters live in a module of their own (:mod:`.libz`, :mod:`.libbz2`,
:mod:`.liblzma`, :mod:`.libexpat`, :mod:`.libsqlite3`, :mod:`.libzstd`, :mod:`.liblz4`,
:mod:`.libxml2`, :mod:`.libcrypto`, named after the library as in
:mod:`memguard.native`), over :mod:`.common`; this package re-exports them.
:mod:`memguard.heap.c_allocator` holds the C-callable allocator itself.
"""

from __future__ import annotations

from memguard.clibs.common import CLibraryError
from memguard.clibs.libbz2 import bz2_compress, bz2_decompress, bz_stream
from memguard.clibs.libexpat import expat_memory_suite, expat_parse, expat_parser
from memguard.clibs.liblzma import lzma_allocator, lzma_compress, lzma_decompress, lzma_stream
from memguard.clibs.libsqlite3 import sqlite_configure, sqlite_mem_methods
from memguard.clibs.libcrypto import OPENSSL_SUPPRESSIONS, openssl_configure, openssl_digest
from memguard.clibs.liblz4 import lz4_cctx, lz4_compress, lz4_custom_mem, lz4_dctx, lz4_decompress
from memguard.clibs.libxml2 import XML2_SUPPRESSIONS, xml2_configure, xml2_parse
from memguard.clibs.libz import deflate, inflate, zlib_stream
from memguard.clibs.libzstd import zstd_cctx, zstd_compress, zstd_custom_mem, zstd_dctx, zstd_decompress

__all__ = [
    "CLibraryError",
    "zlib_stream",
    "bz_stream",
    "lzma_allocator",
    "lzma_stream",
    "expat_memory_suite",
    "expat_parser",
    "sqlite_mem_methods",
    "sqlite_configure",
    "deflate",
    "inflate",
    "bz2_compress",
    "bz2_decompress",
    "lzma_compress",
    "lzma_decompress",
    "expat_parse",
    "zstd_custom_mem",
    "zstd_cctx",
    "zstd_dctx",
    "zstd_compress",
    "zstd_decompress",
    "OPENSSL_SUPPRESSIONS",
    "openssl_configure",
    "openssl_digest",
    "lz4_custom_mem",
    "lz4_cctx",
    "lz4_dctx",
    "lz4_compress",
    "lz4_decompress",
    "XML2_SUPPRESSIONS",
    "xml2_configure",
    "xml2_parse",
]
