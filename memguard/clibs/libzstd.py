"""zstd on the guarded heap: a ``ZSTD_customMem`` that is the heap, compression and
decompression contexts made with it, and whole-buffer :func:`zstd_compress` (also
multithreaded, ``ZSTD_c_nbWorkers``) and :func:`zstd_decompress`.
"""

from __future__ import annotations

import ctypes
from typing import Any

from memguard.arguments import int_arg
from memguard.heap.c_allocator import allocator_for
from memguard.clibs.common import MAX_IN, CLibraryError, as_bytes, buffer_address, optional_allocator
from memguard.native import prototypes
from memguard.native.libzstd import ZstdCustomMem, ZstdInBuffer, ZstdLib, ZstdOutBuffer, zstd

__all__ = ["zstd_custom_mem", "zstd_cctx", "zstd_dctx", "zstd_compress", "zstd_decompress"]


def zstd_custom_mem(allocator: Any) -> ZstdCustomMem:
    """A ``ZSTD_customMem`` using the guarded heap, for ``ZSTD_create*_advanced``.

    zstd copies the structure into each context and calls the callbacks for the
    context's life (from its worker threads too, with ``ZSTD_c_nbWorkers``): keep the
    allocator alive until the context is freed.
    """
    alloc = allocator_for(allocator)
    mem = ZstdCustomMem()
    mem.customAlloc = alloc.function("ctx_malloc", prototypes.CTX_MALLOC_FN)
    mem.customFree = alloc.function("ctx_free", prototypes.CTX_FREE_FN)
    mem.opaque = None
    return mem


def _check(zs: ZstdLib, rc: int, what: str) -> int:
    if zs.ZSTD_isError(rc):
        name = zs.error_name(rc)
        if "allocation" in name.lower():
            raise MemoryError(f"zstd: {what}: {name}")
        raise CLibraryError("zstd", (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - rc, f"{what}: {name}")
    return rc


def zstd_cctx(allocator: Any = None, level: int = 3, workers: int = 0) -> int:
    """A compression context (``ZSTD_createCCtx_advanced``) on the guarded heap; its address.

    With ``allocator=None`` the context uses zstd's own allocator.  ``workers`` > 0 sets
    ``ZSTD_c_nbWorkers`` (multithreaded compression; a library built without threads
    raises :class:`~memguard.clibs.CLibraryError`).  Free it with
    ``native.zstd().ZSTD_freeCCtx(cctx)``.
    """
    zs = zstd()
    workers = int_arg(workers, "workers")
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"level must be an int, got {type(level).__name__}")
    cctx = zs.ZSTD_createCCtx() if allocator is None else zs.ZSTD_createCCtx_advanced(zstd_custom_mem(allocator))
    if not cctx:
        raise MemoryError("ZSTD_createCCtx_advanced returned NULL")
    try:
        _check(zs, zs.ZSTD_CCtx_setParameter(cctx, zs.ZSTD_c_compressionLevel, level), "compression level")
        if workers:
            _check(zs, zs.ZSTD_CCtx_setParameter(cctx, zs.ZSTD_c_nbWorkers, workers), "ZSTD_c_nbWorkers")
    except BaseException:
        zs.ZSTD_freeCCtx(cctx)
        raise
    return int(cctx)


def zstd_dctx(allocator: Any = None) -> int:
    """A decompression context (``ZSTD_createDCtx_advanced``) on the guarded heap; its address."""
    zs = zstd()
    dctx = zs.ZSTD_createDCtx() if allocator is None else zs.ZSTD_createDCtx_advanced(zstd_custom_mem(allocator))
    if not dctx:
        raise MemoryError("ZSTD_createDCtx_advanced returned NULL")
    return int(dctx)


def zstd_compress(data: bytes, allocator: Any = None, level: int = 3, workers: int = 0) -> bytes:
    """Compress ``data`` into one zstd frame with a content checksum (the zstd command's default)."""
    data = as_bytes(data)
    zs = zstd()
    alloc = optional_allocator(allocator)
    cctx = zstd_cctx(alloc, level, workers)
    zs.ZSTD_CCtx_setParameter(cctx, zs.ZSTD_c_checksumFlag, 1)
    out = bytearray()
    size = zs.ZSTD_CStreamOutSize()
    buf = ctypes.create_string_buffer(size)
    base = buffer_address(data)
    try:
        pos = 0
        while True:
            take = min(MAX_IN, len(data) - pos)
            last = pos + take >= len(data)
            inb = ZstdInBuffer(base + pos, take, 0)
            while True:
                outb = ZstdOutBuffer(ctypes.addressof(buf), size, 0)
                mode = zs.ZSTD_e_end if last else zs.ZSTD_e_continue
                remaining = _check(zs, zs.ZSTD_compressStream2(cctx, ctypes.byref(outb), ctypes.byref(inb), mode),
                                   "ZSTD_compressStream2")
                out += ctypes.string_at(buf, outb.pos)
                if (last and remaining == 0) or (not last and inb.pos == inb.size):
                    break
            pos += take
            if last:
                return bytes(out)
    finally:
        zs.ZSTD_freeCCtx(cctx)


def zstd_decompress(data: bytes, allocator: Any = None) -> bytes:
    """Decompress every zstd frame of ``data``; bad or truncated data raises :class:`~memguard.clibs.CLibraryError`."""
    data = as_bytes(data)
    zs = zstd()
    alloc = optional_allocator(allocator)
    dctx = zstd_dctx(alloc)
    out = bytearray()
    size = zs.ZSTD_DStreamOutSize()
    buf = ctypes.create_string_buffer(size)
    base = buffer_address(data)
    try:
        pos = 0
        hint = 1
        while pos < len(data):
            take = min(MAX_IN, len(data) - pos)
            inb = ZstdInBuffer(base + pos, take, 0)
            while inb.pos < inb.size:
                outb = ZstdOutBuffer(ctypes.addressof(buf), size, 0)
                hint = _check(zs, zs.ZSTD_decompressStream(dctx, ctypes.byref(outb), ctypes.byref(inb)),
                              "ZSTD_decompressStream")
                out += ctypes.string_at(buf, outb.pos)
            pos += take
        while hint:  # flush what the decoder still holds, or find the frame truncated
            outb = ZstdOutBuffer(ctypes.addressof(buf), size, 0)
            inb = ZstdInBuffer(None, 0, 0)
            hint = _check(zs, zs.ZSTD_decompressStream(dctx, ctypes.byref(outb), ctypes.byref(inb)),
                          "ZSTD_decompressStream")
            out += ctypes.string_at(buf, outb.pos)
            if outb.pos == 0 and hint:
                raise CLibraryError("zstd", 0, "truncated input: the frame is incomplete")
        return bytes(out)
    finally:
        zs.ZSTD_freeDCtx(dctx)
