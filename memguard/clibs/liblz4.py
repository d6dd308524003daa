"""lz4 frames on the guarded heap: an ``LZ4F_CustomMem`` that is the heap, compression and
decompression contexts made with it, and whole-buffer :func:`lz4_compress` and
:func:`lz4_decompress`.
"""

from __future__ import annotations

import ctypes
from typing import Any

from memguard.clibs.common import CHUNK, CLibraryError, as_bytes, buffer_address, optional_allocator
from memguard.heap.c_allocator import allocator_for
from memguard.native import prototypes
from memguard.native.liblz4 import Lz4fCustomMem, Lz4fPreferences, Lz4Lib, lz4

__all__ = ["lz4_custom_mem", "lz4_cctx", "lz4_dctx", "lz4_compress", "lz4_decompress"]

#: Input handed to ``LZ4F_compressUpdate`` per call.
_IN = 1 << 20


def lz4_custom_mem(allocator: Any) -> Lz4fCustomMem:
    """An ``LZ4F_CustomMem`` using the guarded heap, for ``LZ4F_create*Context_advanced``.

    ``customCalloc`` is left NULL (lz4 then clears what ``customAlloc`` returns).  lz4
    keeps the structure in the context: keep the allocator alive until the context is freed.
    """
    alloc = allocator_for(allocator)
    mem = Lz4fCustomMem()
    mem.customAlloc = alloc.function("ctx_malloc", prototypes.CTX_MALLOC_FN)
    mem.customFree = alloc.function("ctx_free", prototypes.CTX_FREE_FN)
    mem.opaqueState = None
    return mem


def _check(lz: Lz4Lib, rc: int, what: str) -> int:
    if lz.LZ4F_isError(rc):
        name = lz.error_name(rc)
        if "allocation" in name.lower():
            raise MemoryError(f"lz4: {what}: {name}")
        raise CLibraryError("lz4", (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - rc, f"{what}: {name}")
    return rc


def lz4_cctx(allocator: Any = None) -> int:
    """A frame compression context on the guarded heap (lz4's allocator for ``None``); its address.

    Free it with ``native.lz4().LZ4F_freeCompressionContext(cctx)``.
    """
    return _context("Compression", allocator)


def lz4_dctx(allocator: Any = None) -> int:
    """A frame decompression context on the guarded heap (lz4's allocator for ``None``); its address."""
    return _context("Decompression", allocator)


def _context(kind: str, allocator: Any) -> int:
    """``LZ4F_create<kind>Context``, or its ``_advanced`` form over ``allocator``; the address."""
    lz = lz4()
    if allocator is None:
        ptr = ctypes.c_void_p()
        _check(lz, getattr(lz, f"LZ4F_create{kind}Context")(ctypes.byref(ptr), lz.LZ4F_VERSION), "create context")
        return int(ptr.value or 0)
    ctx = getattr(lz, f"LZ4F_create{kind}Context_advanced")(lz4_custom_mem(allocator), lz.LZ4F_VERSION)
    if not ctx:
        raise MemoryError(f"LZ4F_create{kind}Context_advanced returned NULL")
    return int(ctx)


def lz4_compress(data: bytes, allocator: Any = None, level: int = 0) -> bytes:
    """Compress ``data`` into one lz4 frame with a content checksum (streaming frame API)."""
    data = as_bytes(data)
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"level must be an int, got {type(level).__name__}")
    lz = lz4()
    prefs = Lz4fPreferences()
    prefs.compressionLevel = level
    prefs.frameInfo.contentChecksumFlag = 1
    cctx = lz4_cctx(optional_allocator(allocator))
    cap = lz.LZ4F_compressBound(_IN, ctypes.byref(prefs)) + 64
    buf = ctypes.create_string_buffer(cap)
    out = bytearray()
    base = buffer_address(data)
    try:
        n = _check(lz, lz.LZ4F_compressBegin(cctx, buf, cap, ctypes.byref(prefs)), "LZ4F_compressBegin")
        out += ctypes.string_at(buf, n)
        for pos in range(0, len(data), _IN):
            take = min(_IN, len(data) - pos)
            n = _check(lz, lz.LZ4F_compressUpdate(cctx, buf, cap, base + pos, take, None), "LZ4F_compressUpdate")
            out += ctypes.string_at(buf, n)
        n = _check(lz, lz.LZ4F_compressEnd(cctx, buf, cap, None), "LZ4F_compressEnd")
        out += ctypes.string_at(buf, n)
        return bytes(out)
    finally:
        lz.LZ4F_freeCompressionContext(cctx)


def lz4_decompress(data: bytes, allocator: Any = None) -> bytes:
    """Decompress every lz4 frame of ``data``; bad or truncated data raises :class:`~memguard.clibs.CLibraryError`."""
    data = as_bytes(data)
    lz = lz4()
    dctx = lz4_dctx(optional_allocator(allocator))
    buf = ctypes.create_string_buffer(CHUNK)
    out = bytearray()
    base = buffer_address(data)
    pos = 0
    hint = 1
    try:
        while pos < len(data):
            dst_size = ctypes.c_size_t(CHUNK)
            src_size = ctypes.c_size_t(len(data) - pos)
            hint = _check(lz, lz.LZ4F_decompress(dctx, buf, ctypes.byref(dst_size), base + pos,
                                                 ctypes.byref(src_size), None), "LZ4F_decompress")
            pos += src_size.value
            out += ctypes.string_at(buf, dst_size.value)
        while hint:  # output the decoder still holds, or the frame is truncated
            dst_size = ctypes.c_size_t(CHUNK)
            src_size = ctypes.c_size_t(0)
            hint = _check(lz, lz.LZ4F_decompress(dctx, buf, ctypes.byref(dst_size), None,
                                                 ctypes.byref(src_size), None), "LZ4F_decompress")
            out += ctypes.string_at(buf, dst_size.value)
            if hint and not dst_size.value:
                raise CLibraryError("lz4", 0, "truncated input: the frame is incomplete")
        return bytes(out)
    finally:
        lz.LZ4F_freeDecompressionContext(dctx)
