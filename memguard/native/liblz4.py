"""liblz4's frame API: ``LZ4F_CustomMem``, the preferences, its functions, its loader."""

from __future__ import annotations

import ctypes

from memguard.native.loader import cached, load_library, require
from memguard.native.prototypes import CTX_FREE_FN, CTX_MALLOC_FN

__all__ = ["Lz4fCustomMem", "Lz4fFrameInfo", "Lz4fPreferences", "Lz4Lib", "lz4"]

_vp = ctypes.c_void_p
_sz = ctypes.c_size_t
_c_uint = ctypes.c_uint
_c_int = ctypes.c_int


class Lz4fCustomMem(ctypes.Structure):
    """``LZ4F_CustomMem``: ``customAlloc(opaque, size)``, ``customCalloc(opaque, size)`` (may be
    NULL: lz4 then clears what ``customAlloc`` gives), ``customFree(opaque, p)``, ``opaqueState``."""

    _fields_ = [("customAlloc", CTX_MALLOC_FN), ("customCalloc", CTX_MALLOC_FN), ("customFree", CTX_FREE_FN),
                ("opaqueState", _vp)]


class Lz4fFrameInfo(ctypes.Structure):
    """``LZ4F_frameInfo_t``."""

    _fields_ = [("blockSizeID", _c_int), ("blockMode", _c_int), ("contentChecksumFlag", _c_int),
                ("frameType", _c_int), ("contentSize", ctypes.c_ulonglong), ("dictID", _c_uint),
                ("blockChecksumFlag", _c_int)]


class Lz4fPreferences(ctypes.Structure):
    """``LZ4F_preferences_t``."""

    _fields_ = [("frameInfo", Lz4fFrameInfo), ("compressionLevel", _c_int), ("autoFlush", _c_uint),
                ("favorDecSpeed", _c_uint), ("reserved", _c_uint * 3)]


class Lz4Lib:
    """liblz4's frame functions with prototypes set (see :func:`lz4`).

    The ``_advanced`` constructors, which take ``LZ4F_CustomMem`` by value, are part of
    lz4's static-linking-only API; liblz4 exports them since 1.9.3.
    """

    LZ4F_VERSION = 100

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: require(lib, "liblz4", name, res, *args)  # noqa: E731
        prefs = ctypes.POINTER(Lz4fPreferences)
        self.lib = lib
        self.LZ4F_getVersion = d("LZ4F_getVersion", _c_uint)
        self.LZ4_versionString = d("LZ4_versionString", ctypes.c_char_p)
        self.LZ4F_isError = d("LZ4F_isError", _c_uint, _sz)
        self.LZ4F_getErrorName = d("LZ4F_getErrorName", ctypes.c_char_p, _sz)
        self.LZ4F_createCompressionContext = d("LZ4F_createCompressionContext", _sz, ctypes.POINTER(_vp), _c_uint)
        self.LZ4F_createDecompressionContext = d("LZ4F_createDecompressionContext", _sz, ctypes.POINTER(_vp), _c_uint)
        self.LZ4F_createCompressionContext_advanced = d(
            "LZ4F_createCompressionContext_advanced", _vp, Lz4fCustomMem, _c_uint
        )
        self.LZ4F_createDecompressionContext_advanced = d(
            "LZ4F_createDecompressionContext_advanced", _vp, Lz4fCustomMem, _c_uint
        )
        self.LZ4F_freeCompressionContext = d("LZ4F_freeCompressionContext", _sz, _vp)
        self.LZ4F_freeDecompressionContext = d("LZ4F_freeDecompressionContext", _sz, _vp)
        self.LZ4F_compressBound = d("LZ4F_compressBound", _sz, _sz, prefs)
        self.LZ4F_compressFrameBound = d("LZ4F_compressFrameBound", _sz, _sz, prefs)
        self.LZ4F_compressFrame = d("LZ4F_compressFrame", _sz, _vp, _sz, _vp, _sz, prefs)
        self.LZ4F_compressBegin = d("LZ4F_compressBegin", _sz, _vp, _vp, _sz, prefs)
        self.LZ4F_compressUpdate = d("LZ4F_compressUpdate", _sz, _vp, _vp, _sz, _vp, _sz, _vp)
        self.LZ4F_compressEnd = d("LZ4F_compressEnd", _sz, _vp, _vp, _sz, _vp)
        self.LZ4F_decompress = d(
            "LZ4F_decompress", _sz, _vp, _vp, ctypes.POINTER(_sz), _vp, ctypes.POINTER(_sz), _vp
        )
        self.version: bytes = self.LZ4_versionString()

    def error_name(self, code: int) -> str:
        """lz4's name for the error ``code``."""
        return (self.LZ4F_getErrorName(code) or b"error").decode(errors="replace")


def lz4() -> Lz4Lib:
    """The system liblz4, loaded once, every frame function memguard uses declared."""
    return cached("lz4", lambda: Lz4Lib(load_library("lz4")))
