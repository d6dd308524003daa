"""liblzma on the guarded heap: an ``lzma_allocator``/``lzma_stream`` pair whose allocator
is the heap, and whole-buffer :func:`lzma_compress`/:func:`lzma_decompress` (``.xz``).
"""

from __future__ import annotations

import ctypes
from typing import Any

from memguard.heap.c_allocator import allocator_for
from memguard.clibs.common import CHUNK, CLibraryError, as_bytes, buffer_address, optional_allocator
from memguard.native.liblzma import LzmaAllocator, LzmaLib, LzmaStream, lzma
from memguard.native.prototypes import LZMA_ALLOC_FN

__all__ = ["lzma_allocator", "lzma_stream", "lzma_compress", "lzma_decompress"]


def lzma_allocator(allocator: Any) -> LzmaAllocator:
    """An ``lzma_allocator`` using the guarded heap (point ``lzma_stream.allocator`` at it).

    Keep the returned structure alive while the stream uses it; :func:`lzma_stream` does.
    """
    alloc = allocator_for(allocator)
    la = LzmaAllocator()
    la.alloc = alloc.function("opaque_alloc", LZMA_ALLOC_FN)
    la.free = alloc.opaque_free
    la.opaque = None
    return la


def lzma_stream(allocator: Any) -> LzmaStream:
    """A zeroed ``lzma_stream`` (``LZMA_STREAM_INIT``) whose allocator is the guarded heap.

    The stream keeps its ``lzma_allocator`` structure alive.
    """
    la = lzma_allocator(allocator)
    strm = LzmaStream()
    strm.allocator = ctypes.pointer(la)
    return strm


def _lzcheck(rc: int, what: str) -> None:
    if rc in (0, 1):
        return
    if rc == 5:  # LZMA_MEM_ERROR
        raise MemoryError(f"liblzma {what}: out of memory")
    names = {6: "memory limit reached", 7: "format not recognized", 8: "invalid options", 9: "corrupt data", 10: "buffer error", 11: "programming error"}
    raise CLibraryError("liblzma", rc, f"{what}: {names.get(rc, 'error')}")


def _lzma_run(lz: LzmaLib, strm: LzmaStream, data: bytes, what: str) -> bytes:
    out = bytearray()
    buf = ctypes.create_string_buffer(CHUNK)
    strm.next_in = buffer_address(data)
    strm.avail_in = len(data)
    while True:
        strm.next_out = ctypes.addressof(buf)
        strm.avail_out = CHUNK
        rc = lz.lzma_code(ctypes.byref(strm), lz.LZMA_FINISH)
        produced = CHUNK - strm.avail_out
        out += buf.raw[:produced]
        if rc == lz.LZMA_STREAM_END:
            return bytes(out)
        if rc == 10 and not produced:  # LZMA_BUF_ERROR: no progress possible
            raise CLibraryError("liblzma", rc, f"{what}: unexpected end of input")
        _lzcheck(rc, what)


def lzma_compress(data: bytes, allocator: Any = None, preset: int = 1) -> bytes:
    """Compress ``data`` to the ``.xz`` format (CRC64) with the system liblzma."""
    data = as_bytes(data)
    if not 0 <= preset <= 9:
        raise ValueError(f"preset must be between 0 and 9, got {preset}")
    lz = lzma()
    alloc = optional_allocator(allocator)
    strm = lzma_stream(alloc) if alloc is not None else LzmaStream()
    _lzcheck(lz.lzma_easy_encoder(ctypes.byref(strm), preset, lz.LZMA_CHECK_CRC64), "lzma_easy_encoder")
    try:
        return _lzma_run(lz, strm, data, "lzma_code")
    finally:
        lz.lzma_end(ctypes.byref(strm))


def lzma_decompress(data: bytes, allocator: Any = None) -> bytes:
    """Decompress one ``.xz`` stream with the system liblzma."""
    data = as_bytes(data)
    lz = lzma()
    alloc = optional_allocator(allocator)
    strm = lzma_stream(alloc) if alloc is not None else LzmaStream()
    _lzcheck(lz.lzma_stream_decoder(ctypes.byref(strm), (1 << 64) - 1, 0), "lzma_stream_decoder")
    try:
        return _lzma_run(lz, strm, data, "lzma_code")
    finally:
        lz.lzma_end(ctypes.byref(strm))
