"""libzstd: its ``ZSTD_customMem`` and stream buffers, its functions, its loader."""

from __future__ import annotations

import ctypes

from memguard.native.loader import cached, load_library, require
from memguard.native.prototypes import CTX_FREE_FN, CTX_MALLOC_FN

__all__ = ["ZstdCustomMem", "ZstdInBuffer", "ZstdOutBuffer", "ZstdLib", "zstd"]

_vp = ctypes.c_void_p
_sz = ctypes.c_size_t
_c_int = ctypes.c_int


class ZstdCustomMem(ctypes.Structure):
    """zstd's ``ZSTD_customMem``: ``customAlloc(opaque, size)``, ``customFree(opaque, p)``, ``opaque``."""

    _fields_ = [("customAlloc", CTX_MALLOC_FN), ("customFree", CTX_FREE_FN), ("opaque", _vp)]


class ZstdInBuffer(ctypes.Structure):
    """``ZSTD_inBuffer``: ``src``, ``size``, ``pos``."""

    _fields_ = [("src", _vp), ("size", _sz), ("pos", _sz)]


class ZstdOutBuffer(ctypes.Structure):
    """``ZSTD_outBuffer``: ``dst``, ``size``, ``pos``."""

    _fields_ = [("dst", _vp), ("size", _sz), ("pos", _sz)]


class ZstdLib:
    """libzstd's functions with prototypes set (see :func:`zstd`).

    The ``_advanced`` constructors take ``ZSTD_customMem`` by value; they belong to
    zstd's "experimental" API, which the shared library exports.
    """

    ZSTD_c_compressionLevel = 100
    ZSTD_c_checksumFlag = 201
    ZSTD_c_nbWorkers = 400
    ZSTD_e_continue = 0
    ZSTD_e_flush = 1
    ZSTD_e_end = 2

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: require(lib, "libzstd", name, res, *args)  # noqa: E731
        inp = ctypes.POINTER(ZstdInBuffer)
        outp = ctypes.POINTER(ZstdOutBuffer)
        self.lib = lib
        self.ZSTD_versionString = d("ZSTD_versionString", ctypes.c_char_p)
        self.ZSTD_isError = d("ZSTD_isError", ctypes.c_uint, _sz)
        self.ZSTD_getErrorName = d("ZSTD_getErrorName", ctypes.c_char_p, _sz)
        self.ZSTD_createCCtx = d("ZSTD_createCCtx", _vp)
        self.ZSTD_createDCtx = d("ZSTD_createDCtx", _vp)
        self.ZSTD_createCCtx_advanced = d("ZSTD_createCCtx_advanced", _vp, ZstdCustomMem)
        self.ZSTD_createDCtx_advanced = d("ZSTD_createDCtx_advanced", _vp, ZstdCustomMem)
        self.ZSTD_freeCCtx = d("ZSTD_freeCCtx", _sz, _vp)
        self.ZSTD_freeDCtx = d("ZSTD_freeDCtx", _sz, _vp)
        self.ZSTD_CCtx_setParameter = d("ZSTD_CCtx_setParameter", _sz, _vp, _c_int, _c_int)
        self.ZSTD_compressStream2 = d("ZSTD_compressStream2", _sz, _vp, outp, inp, _c_int)
        self.ZSTD_decompressStream = d("ZSTD_decompressStream", _sz, _vp, outp, inp)
        self.ZSTD_CStreamOutSize = d("ZSTD_CStreamOutSize", _sz)
        self.ZSTD_DStreamOutSize = d("ZSTD_DStreamOutSize", _sz)
        self.version: bytes = self.ZSTD_versionString()

    def error_name(self, code: int) -> str:
        """zstd's name for the error ``code``."""
        return (self.ZSTD_getErrorName(code) or b"error").decode(errors="replace")


def zstd() -> ZstdLib:
    """The system libzstd, loaded once, every function memguard uses declared."""
    return cached("zstd", lambda: ZstdLib(load_library("zstd")))
