"""Adapters that put real C libraries on the guarded heap (zlib, bzip2, liblzma, expat, SQLite).

Each library takes a custom allocator in its own shape; the functions below fill that
shape from a :class:`~memguard.callbacks.CAllocator` (or a heap, whose
:func:`~memguard.callbacks.allocator_for` allocator is used)::

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
===========  ===========================================  ===================================

The whole-buffer helpers (:func:`deflate`, :func:`inflate`, :func:`bz2_compress`,
:func:`bz2_decompress`, :func:`lzma_compress`, :func:`lzma_decompress`,
:func:`expat_parse`) drive the real library through ctypes, on the guarded heap when an
allocator is given and on the library's own allocator when it is ``None``; memguard's
tests and benchmarks use them, and they are small enough to read as recipes.

Frames inside memguard are left out of recorded stacks, so a block the library allocates
inside one of these helpers is attributed to the line that called the helper.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable

from memguard import native
from memguard.clibs.callbacks import CAllocator, allocator_for

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
]

_CHUNK = 1 << 20
_MAX_IN = 1 << 30  # fed to 32-bit avail_in fields in pieces no larger than this


class CLibraryError(RuntimeError):
    """A C library returned an error code (bad data, misuse).

    :ivar library: ``"zlib"``, ``"bzip2"``, ``"liblzma"``, ``"expat"`` or ``"sqlite"``.
    :ivar code: the library's return code.
    """

    def __init__(self, library: str, code: int, message: str) -> None:
        super().__init__(f"{library}: {message} (code {code})")
        self.library = library
        self.code = code


def _bytes(data: object, what: str = "data") -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes-like, got {type(data).__name__}")


def _address(data: bytes) -> int:
    """Address of the bytes object's own buffer (valid while ``data`` is alive)."""
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0


def _pump(strm: Any, data: bytes, step: Callable[[bool], int], done: Callable[[int, int, bool], bool]) -> bytes:
    """Drive a zlib/bzip2-shaped stream over ``data`` and return everything it produced.

    Input is fed through ``next_in``/``avail_in`` in pieces that fit a 32-bit count and
    output is collected through a ``_CHUNK`` buffer.  ``step(last)`` runs the library once
    (``last`` is true once all input has been handed over) and returns its status code;
    ``done(rc, produced, exhausted)`` raises on errors and says whether the stream ended.
    """
    out = bytearray()
    buf = ctypes.create_string_buffer(_CHUNK)
    base = _address(data)
    pos = 0
    while True:
        if strm.avail_in == 0 and pos < len(data):
            take = min(_MAX_IN, len(data) - pos)
            strm.next_in = base + pos
            strm.avail_in = take
            pos += take
        strm.next_out = ctypes.addressof(buf)
        strm.avail_out = _CHUNK
        rc = step(pos >= len(data))
        produced = _CHUNK - strm.avail_out
        out += buf.raw[:produced]
        if done(rc, produced, strm.avail_in == 0 and pos >= len(data)):
            return bytes(out)


def _alloc(allocator: CAllocator | Any | None) -> CAllocator | None:
    return None if allocator is None else allocator_for(allocator)


# ---------------------------------------------------------------------------- zlib
def zlib_stream(allocator: Any) -> native.ZStream:
    """A zeroed ``z_stream`` whose ``zalloc``/``zfree``/``opaque`` use the guarded heap.

    ``allocator`` is a :class:`CAllocator` or a :class:`GuardedHeap`.  The stream keeps
    the callbacks alive; pass it (by reference) to ``deflateInit2_``/``inflateInit2_``.
    """
    alloc = allocator_for(allocator)
    strm = native.ZStream()
    strm.zalloc = alloc.opaque_alloc
    strm.zfree = alloc.opaque_free
    strm.opaque = None
    return strm


def deflate(data: bytes, allocator: Any = None, level: int = 6, wbits: int = 15) -> bytes:
    """Compress ``data`` with the system zlib (``wbits`` as for :func:`zlib.compressobj`)."""
    data = _bytes(data)
    if not -1 <= level <= 9:
        raise ValueError(f"level must be between -1 and 9, got {level}")
    z = native.zlib()
    alloc = _alloc(allocator)
    strm = zlib_stream(alloc) if alloc is not None else native.ZStream()
    rc = z.deflateInit2_(ctypes.byref(strm), level, z.Z_DEFLATED, wbits, 8, 0, z.version, ctypes.sizeof(strm))
    _zcheck(rc, strm, "deflateInit2_")
    ref = ctypes.byref(strm)

    def done(rc: int, produced: int, exhausted: bool) -> bool:
        if rc not in (z.Z_OK, z.Z_BUF_ERROR, z.Z_STREAM_END):
            _zcheck(rc, strm, "deflate")
        return rc == z.Z_STREAM_END

    try:
        return _pump(strm, data, lambda last: z.deflate(ref, z.Z_FINISH if last else z.Z_NO_FLUSH), done)
    finally:
        z.deflateEnd(ctypes.byref(strm))


def inflate(data: bytes, allocator: Any = None, wbits: int = 15) -> bytes:
    """Decompress ``data`` with the system zlib."""
    data = _bytes(data)
    z = native.zlib()
    alloc = _alloc(allocator)
    strm = zlib_stream(alloc) if alloc is not None else native.ZStream()
    rc = z.inflateInit2_(ctypes.byref(strm), wbits, z.version, ctypes.sizeof(strm))
    _zcheck(rc, strm, "inflateInit2_")
    ref = ctypes.byref(strm)

    def done(rc: int, produced: int, exhausted: bool) -> bool:
        if rc == z.Z_BUF_ERROR and not produced and exhausted:
            raise CLibraryError("zlib", rc, "truncated input")
        if rc not in (z.Z_OK, z.Z_BUF_ERROR, z.Z_STREAM_END):
            _zcheck(rc, strm, "inflate")
        return rc == z.Z_STREAM_END

    try:
        return _pump(strm, data, lambda last: z.inflate(ref, z.Z_NO_FLUSH), done)
    finally:
        z.inflateEnd(ctypes.byref(strm))


def _zcheck(rc: int, strm: native.ZStream, what: str) -> None:
    if rc in (0, 1):
        return
    msg = strm.msg.decode(errors="replace") if strm.msg else "error"
    if rc == -4:  # Z_MEM_ERROR: the allocator returned NULL
        raise MemoryError(f"zlib {what}: out of memory")
    raise CLibraryError("zlib", rc, f"{what}: {msg}")


# ---------------------------------------------------------------------------- bzip2
def bz_stream(allocator: Any) -> native.BzStream:
    """A zeroed ``bz_stream`` whose ``bzalloc``/``bzfree``/``opaque`` use the guarded heap."""
    alloc = allocator_for(allocator)
    strm = native.BzStream()
    strm.bzalloc = alloc.function("opaque_alloc", native.BZALLOC_FN)
    strm.bzfree = alloc.opaque_free
    strm.opaque = None
    return strm


def _bzcheck(rc: int, what: str) -> None:
    if rc >= 0:
        return
    if rc == -3:  # BZ_MEM_ERROR
        raise MemoryError(f"bzip2 {what}: out of memory")
    names = {-1: "sequence error", -2: "bad parameter", -4: "data error", -5: "data error (magic)", -7: "unexpected end of input"}
    raise CLibraryError("bzip2", rc, f"{what}: {names.get(rc, 'error')}")


def bz2_compress(data: bytes, allocator: Any = None, level: int = 9) -> bytes:
    """Compress ``data`` with the system libbz2 (block size ``level`` × 100 kB)."""
    data = _bytes(data)
    if not 1 <= level <= 9:
        raise ValueError(f"level must be between 1 and 9, got {level}")
    bz = native.bz2()
    alloc = _alloc(allocator)
    strm = bz_stream(alloc) if alloc is not None else native.BzStream()
    _bzcheck(bz.BZ2_bzCompressInit(ctypes.byref(strm), level, 0, 0), "BZ2_bzCompressInit")
    ref = ctypes.byref(strm)

    def done(rc: int, produced: int, exhausted: bool) -> bool:
        _bzcheck(rc, "BZ2_bzCompress")
        return rc == bz.BZ_STREAM_END

    try:
        return _pump(strm, data, lambda last: bz.BZ2_bzCompress(ref, bz.BZ_FINISH if last else bz.BZ_RUN), done)
    finally:
        bz.BZ2_bzCompressEnd(ctypes.byref(strm))


def bz2_decompress(data: bytes, allocator: Any = None) -> bytes:
    """Decompress one bzip2 stream with the system libbz2."""
    data = _bytes(data)
    bz = native.bz2()
    alloc = _alloc(allocator)
    strm = bz_stream(alloc) if alloc is not None else native.BzStream()
    _bzcheck(bz.BZ2_bzDecompressInit(ctypes.byref(strm), 0, 0), "BZ2_bzDecompressInit")
    ref = ctypes.byref(strm)

    def done(rc: int, produced: int, exhausted: bool) -> bool:
        _bzcheck(rc, "BZ2_bzDecompress")
        if rc != bz.BZ_STREAM_END and not produced and exhausted:
            raise CLibraryError("bzip2", -7, "BZ2_bzDecompress: unexpected end of input")
        return rc == bz.BZ_STREAM_END

    try:
        return _pump(strm, data, lambda last: bz.BZ2_bzDecompress(ref), done)
    finally:
        bz.BZ2_bzDecompressEnd(ctypes.byref(strm))


# ---------------------------------------------------------------------------- liblzma
def lzma_allocator(allocator: Any) -> native.LzmaAllocator:
    """An ``lzma_allocator`` using the guarded heap (point ``lzma_stream.allocator`` at it).

    Keep the returned structure alive while the stream uses it; :func:`lzma_stream` does.
    """
    alloc = allocator_for(allocator)
    la = native.LzmaAllocator()
    la.alloc = alloc.function("opaque_alloc", native.LZMA_ALLOC_FN)
    la.free = alloc.opaque_free
    la.opaque = None
    return la


def lzma_stream(allocator: Any) -> native.LzmaStream:
    """A zeroed ``lzma_stream`` (``LZMA_STREAM_INIT``) whose allocator is the guarded heap.

    The stream keeps its ``lzma_allocator`` structure alive.
    """
    la = lzma_allocator(allocator)
    strm = native.LzmaStream()
    strm.allocator = ctypes.pointer(la)
    return strm


def _lzcheck(rc: int, what: str) -> None:
    if rc in (0, 1):
        return
    if rc == 5:  # LZMA_MEM_ERROR
        raise MemoryError(f"liblzma {what}: out of memory")
    names = {6: "memory limit reached", 7: "format not recognized", 8: "invalid options", 9: "corrupt data", 10: "buffer error", 11: "programming error"}
    raise CLibraryError("liblzma", rc, f"{what}: {names.get(rc, 'error')}")


def _lzma_run(lz: native.LzmaLib, strm: native.LzmaStream, data: bytes, what: str) -> bytes:
    out = bytearray()
    buf = ctypes.create_string_buffer(_CHUNK)
    strm.next_in = _address(data)
    strm.avail_in = len(data)
    while True:
        strm.next_out = ctypes.addressof(buf)
        strm.avail_out = _CHUNK
        rc = lz.lzma_code(ctypes.byref(strm), lz.LZMA_FINISH)
        produced = _CHUNK - strm.avail_out
        out += buf.raw[:produced]
        if rc == lz.LZMA_STREAM_END:
            return bytes(out)
        if rc == 10 and not produced:  # LZMA_BUF_ERROR: no progress possible
            raise CLibraryError("liblzma", rc, f"{what}: unexpected end of input")
        _lzcheck(rc, what)


def lzma_compress(data: bytes, allocator: Any = None, preset: int = 1) -> bytes:
    """Compress ``data`` to the ``.xz`` format (CRC64) with the system liblzma."""
    data = _bytes(data)
    if not 0 <= preset <= 9:
        raise ValueError(f"preset must be between 0 and 9, got {preset}")
    lz = native.lzma()
    alloc = _alloc(allocator)
    strm = lzma_stream(alloc) if alloc is not None else native.LzmaStream()
    _lzcheck(lz.lzma_easy_encoder(ctypes.byref(strm), preset, lz.LZMA_CHECK_CRC64), "lzma_easy_encoder")
    try:
        return _lzma_run(lz, strm, data, "lzma_code")
    finally:
        lz.lzma_end(ctypes.byref(strm))


def lzma_decompress(data: bytes, allocator: Any = None) -> bytes:
    """Decompress one ``.xz`` stream with the system liblzma."""
    data = _bytes(data)
    lz = native.lzma()
    alloc = _alloc(allocator)
    strm = lzma_stream(alloc) if alloc is not None else native.LzmaStream()
    _lzcheck(lz.lzma_stream_decoder(ctypes.byref(strm), (1 << 64) - 1, 0), "lzma_stream_decoder")
    try:
        return _lzma_run(lz, strm, data, "lzma_code")
    finally:
        lz.lzma_end(ctypes.byref(strm))


# ---------------------------------------------------------------------------- expat
def expat_memory_suite(allocator: Any) -> native.XMLMemoryHandlingSuite:
    """An ``XML_Memory_Handling_Suite`` using the guarded heap, for ``XML_ParserCreate_MM``.

    Expat copies the suite into the parser, but the callbacks themselves must outlive
    the parser: keep the allocator (or this structure) alive until ``XML_ParserFree``.
    """
    alloc = allocator_for(allocator)
    suite = native.XMLMemoryHandlingSuite()
    suite.malloc_fcn = alloc.malloc
    suite.realloc_fcn = alloc.realloc
    suite.free_fcn = alloc.free
    return suite


def expat_parser(allocator: Any = None, encoding: str | None = None) -> int:
    """``XML_ParserCreate_MM(encoding, &suite, NULL)`` on the guarded heap; the parser's address.

    With ``allocator=None`` the parser uses expat's own allocator.  Free it with
    ``native.expat().XML_ParserFree(parser)``; keep the allocator alive until then.
    """
    ex = native.expat()
    enc = encoding.encode() if encoding is not None else None
    if allocator is None:
        parser = ex.XML_ParserCreate(enc)
    else:
        suite = expat_memory_suite(allocator)
        parser = ex.XML_ParserCreate_MM(enc, ctypes.byref(suite), None)
    if not parser:
        raise MemoryError("XML_ParserCreate_MM returned NULL")
    return int(parser)


def expat_parse(
    data: bytes, allocator: Any = None, chunk_size: int = _CHUNK, start: Callable[[bytes], None] | None = None
) -> int:
    """Parse a whole XML document with the system expat; return the number of start tags.

    Start tags are counted only when ``start`` is given (it is called with each element
    name); otherwise 0 is returned and no Python runs per element.  Malformed XML raises
    :class:`CLibraryError` with expat's message and line.
    """
    data = _bytes(data)
    if chunk_size <= 0 or chunk_size > _MAX_IN:
        raise ValueError(f"chunk_size must be between 1 and {_MAX_IN}, got {chunk_size}")
    ex = native.expat()
    alloc = _alloc(allocator)
    parser = expat_parser(alloc)
    count = 0
    handler = end = None
    try:
        if start is not None:

            def on_start(user: int | None, name: bytes, atts: Any) -> None:
                nonlocal count
                count += 1
                start(name)

            handler = ex.START_HANDLER(on_start)
            end = ex.END_HANDLER(lambda user, name: None)
            ex.XML_SetElementHandler(parser, handler, end)
        n = len(data)
        for pos in range(0, max(n, 1), chunk_size):
            piece = data[pos : pos + chunk_size]
            final = int(pos + chunk_size >= n)
            if ex.XML_Parse(parser, piece, len(piece), final) != ex.XML_STATUS_OK:
                code = ex.XML_GetErrorCode(parser)
                msg = (ex.XML_ErrorString(code) or b"error").decode(errors="replace")
                line = ex.XML_GetCurrentLineNumber(parser)
                if code == 1:  # XML_ERROR_NO_MEMORY
                    raise MemoryError(f"expat: out of memory at line {line}")
                raise CLibraryError("expat", code, f"{msg} at line {line}")
    finally:
        ex.XML_ParserFree(parser)
    del handler, end
    return count


# ---------------------------------------------------------------------------- SQLite
@native.SQLITE_ROUNDUP_FN
def _sqlite_roundup(n: int) -> int:
    return (n + 7) & ~7 if n > 0 else 0


@native.SQLITE_INIT_FN
def _sqlite_init(app: int | None) -> int:
    return 0


@native.SQLITE_SHUTDOWN_FN
def _sqlite_shutdown(app: int | None) -> None:
    return None


_sqlite_keepalive: list[object] = []


def sqlite_mem_methods(allocator: Any) -> native.SqliteMemMethods:
    """A ``sqlite3_mem_methods`` using the guarded heap (``xSize`` is the block's size)."""
    alloc = allocator_for(allocator)
    m = native.SqliteMemMethods()
    m.xMalloc = alloc.function("malloc", native.SQLITE_MALLOC_FN)
    m.xFree = alloc.free
    m.xRealloc = alloc.function("realloc", native.SQLITE_REALLOC_FN)
    m.xSize = alloc.function("size", native.SQLITE_SIZE_FN)
    m.xRoundup = _sqlite_roundup
    m.xInit = _sqlite_init
    m.xShutdown = _sqlite_shutdown
    m.pAppData = None
    return m


def sqlite_configure(allocator: Any) -> native.SqliteLib:
    """Make the guarded heap SQLite's allocator for the rest of the process.

    Calls ``sqlite3_config(SQLITE_CONFIG_MALLOC, &methods)`` then ``sqlite3_initialize``.
    SQLite must not be initialised yet, and the setting is process-wide (it also applies
    to Python's :mod:`sqlite3` module when it uses the same library), so do this in a
    process of its own (see ``examples/sqlite_guarded.py``).  The callbacks are kept
    alive for the life of the process.  Returns the loaded library.
    """
    sq = native.sqlite3()
    methods = sqlite_mem_methods(allocator)
    rc = sq.config_malloc(sq.SQLITE_CONFIG_MALLOC, ctypes.byref(methods))
    if rc != sq.SQLITE_OK:
        hint = " (SQLite is already initialised in this process)" if rc == sq.SQLITE_MISUSE else ""
        raise CLibraryError("sqlite", rc, f"sqlite3_config(SQLITE_CONFIG_MALLOC) failed{hint}")
    _sqlite_keepalive.append((methods, allocator_for(allocator)))
    rc = sq.sqlite3_initialize()
    if rc != sq.SQLITE_OK:
        raise CLibraryError("sqlite", rc, "sqlite3_initialize failed")
    return sq
