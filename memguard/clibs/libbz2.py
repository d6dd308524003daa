"""bzip2 on the guarded heap: a ``bz_stream`` whose allocator is the heap, and whole-buffer
:func:`bz2_compress`/:func:`bz2_decompress`.
"""

from __future__ import annotations

import ctypes
from typing import Any

from memguard.heap.c_allocator import allocator_for
from memguard.clibs.common import CLibraryError, as_bytes, optional_allocator, pump
from memguard.native.libbz2 import BzStream, bz2
from memguard.native.prototypes import BZALLOC_FN

__all__ = ["bz_stream", "bz2_compress", "bz2_decompress"]


def bz_stream(allocator: Any) -> BzStream:
    """A zeroed ``bz_stream`` whose ``bzalloc``/``bzfree``/``opaque`` use the guarded heap."""
    alloc = allocator_for(allocator)
    strm = BzStream()
    strm.bzalloc = alloc.function("opaque_alloc", BZALLOC_FN)
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
    data = as_bytes(data)
    if not 1 <= level <= 9:
        raise ValueError(f"level must be between 1 and 9, got {level}")
    bz = bz2()
    alloc = optional_allocator(allocator)
    strm = bz_stream(alloc) if alloc is not None else BzStream()
    _bzcheck(bz.BZ2_bzCompressInit(ctypes.byref(strm), level, 0, 0), "BZ2_bzCompressInit")
    ref = ctypes.byref(strm)

    def done(rc: int, produced: int, exhausted: bool) -> bool:
        _bzcheck(rc, "BZ2_bzCompress")
        return rc == bz.BZ_STREAM_END

    try:
        return pump(strm, data, lambda last: bz.BZ2_bzCompress(ref, bz.BZ_FINISH if last else bz.BZ_RUN), done)
    finally:
        bz.BZ2_bzCompressEnd(ctypes.byref(strm))


def bz2_decompress(data: bytes, allocator: Any = None) -> bytes:
    """Decompress one bzip2 stream with the system libbz2."""
    data = as_bytes(data)
    bz = bz2()
    alloc = optional_allocator(allocator)
    strm = bz_stream(alloc) if alloc is not None else BzStream()
    _bzcheck(bz.BZ2_bzDecompressInit(ctypes.byref(strm), 0, 0), "BZ2_bzDecompressInit")
    ref = ctypes.byref(strm)

    def done(rc: int, produced: int, exhausted: bool) -> bool:
        _bzcheck(rc, "BZ2_bzDecompress")
        if rc != bz.BZ_STREAM_END and not produced and exhausted:
            raise CLibraryError("bzip2", -7, "BZ2_bzDecompress: unexpected end of input")
        return rc == bz.BZ_STREAM_END

    try:
        return pump(strm, data, lambda last: bz.BZ2_bzDecompress(ref), done)
    finally:
        bz.BZ2_bzDecompressEnd(ctypes.byref(strm))
