"""libbz2: its ``bz_stream`` structure, its functions with prototypes set, and its loader."""

from __future__ import annotations

import ctypes

from memguard.native.loader import cached, load_library, require
from memguard.native.prototypes import BZALLOC_FN, OPAQUE_FREE_FN

__all__ = ["BzStream", "Bz2Lib", "bz2"]

_vp = ctypes.c_void_p
_cp = ctypes.c_char_p
_c_uint = ctypes.c_uint
_c_int = ctypes.c_int


class BzStream(ctypes.Structure):
    """bzip2's ``bz_stream`` (``bzalloc``/``bzfree``/``opaque`` select the allocator)."""

    _fields_ = [
        ("next_in", _vp),
        ("avail_in", _c_uint),
        ("total_in_lo32", _c_uint),
        ("total_in_hi32", _c_uint),
        ("next_out", _vp),
        ("avail_out", _c_uint),
        ("total_out_lo32", _c_uint),
        ("total_out_hi32", _c_uint),
        ("state", _vp),
        ("bzalloc", BZALLOC_FN),
        ("bzfree", OPAQUE_FREE_FN),
        ("opaque", _vp),
    ]


_pbz = ctypes.POINTER(BzStream)


class Bz2Lib:
    """libbz2's functions with prototypes set (see :func:`bz2`)."""

    BZ_RUN = 0
    BZ_FINISH = 2
    BZ_OK = 0
    BZ_RUN_OK = 1
    BZ_FINISH_OK = 3
    BZ_STREAM_END = 4
    BZ_MEM_ERROR = -3

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: require(lib, "libbz2", name, res, *args)  # noqa: E731
        self.lib = lib
        self.BZ2_bzlibVersion = d("BZ2_bzlibVersion", _cp)
        self.BZ2_bzCompressInit = d("BZ2_bzCompressInit", _c_int, _pbz, _c_int, _c_int, _c_int)
        self.BZ2_bzCompress = d("BZ2_bzCompress", _c_int, _pbz, _c_int)
        self.BZ2_bzCompressEnd = d("BZ2_bzCompressEnd", _c_int, _pbz)
        self.BZ2_bzDecompressInit = d("BZ2_bzDecompressInit", _c_int, _pbz, _c_int, _c_int)
        self.BZ2_bzDecompress = d("BZ2_bzDecompress", _c_int, _pbz)
        self.BZ2_bzDecompressEnd = d("BZ2_bzDecompressEnd", _c_int, _pbz)
        self.version: bytes = self.BZ2_bzlibVersion()


def bz2() -> Bz2Lib:
    """The system libbz2, loaded once, every function memguard uses declared."""
    return cached("bz2", lambda: Bz2Lib(load_library("bz2")))
