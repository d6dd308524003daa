"""zlib on the guarded heap: a ``z_stream`` whose allocator is the heap, and whole-buffer
:func:`deflate`/:func:`inflate`.
"""

from __future__ import annotations

import ctypes
from typing import Any

from memguard.heap.c_allocator import allocator_for
from memguard.clibs.common import CLibraryError, as_bytes, optional_allocator, pump
from memguard.native.libz import ZStream, zlib

__all__ = ["zlib_stream", "deflate", "inflate"]


def zlib_stream(allocator: Any) -> ZStream:
    """A zeroed ``z_stream`` whose ``zalloc``/``zfree``/``opaque`` use the guarded heap.

    ``allocator`` is a :class:`CAllocator` or a :class:`GuardedHeap`.  The stream keeps
    the callbacks alive; pass it (by reference) to ``deflateInit2_``/``inflateInit2_``.
    """
    alloc = allocator_for(allocator)
    strm = ZStream()
    strm.zalloc = alloc.opaque_alloc
    strm.zfree = alloc.opaque_free
    strm.opaque = None
    return strm


def deflate(data: bytes, allocator: Any = None, level: int = 6, wbits: int = 15) -> bytes:
    """Compress ``data`` with the system zlib (``wbits`` as for :func:`zlib.compressobj`)."""
    data = as_bytes(data)
    if not -1 <= level <= 9:
        raise ValueError(f"level must be between -1 and 9, got {level}")
    z = zlib()
    alloc = optional_allocator(allocator)
    strm = zlib_stream(alloc) if alloc is not None else ZStream()
    rc = z.deflateInit2_(ctypes.byref(strm), level, z.Z_DEFLATED, wbits, 8, 0, z.version, ctypes.sizeof(strm))
    _zcheck(rc, strm, "deflateInit2_")
    ref = ctypes.byref(strm)

    def done(rc: int, produced: int, exhausted: bool) -> bool:
        if rc not in (z.Z_OK, z.Z_BUF_ERROR, z.Z_STREAM_END):
            _zcheck(rc, strm, "deflate")
        return rc == z.Z_STREAM_END

    try:
        return pump(strm, data, lambda last: z.deflate(ref, z.Z_FINISH if last else z.Z_NO_FLUSH), done)
    finally:
        z.deflateEnd(ctypes.byref(strm))


def inflate(data: bytes, allocator: Any = None, wbits: int = 15) -> bytes:
    """Decompress ``data`` with the system zlib."""
    data = as_bytes(data)
    z = zlib()
    alloc = optional_allocator(allocator)
    strm = zlib_stream(alloc) if alloc is not None else ZStream()
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
        return pump(strm, data, lambda last: z.inflate(ref, z.Z_NO_FLUSH), done)
    finally:
        z.inflateEnd(ctypes.byref(strm))


def _zcheck(rc: int, strm: ZStream, what: str) -> None:
    if rc in (0, 1):
        return
    msg = strm.msg.decode(errors="replace") if strm.msg else "error"
    if rc == -4:  # Z_MEM_ERROR: the allocator returned NULL
        raise MemoryError(f"zlib {what}: out of memory")
    raise CLibraryError("zlib", rc, f"{what}: {msg}")
