"""zlib: its ``z_stream`` structure, its functions with prototypes set, and its loader."""

from __future__ import annotations

import ctypes

from memguard.native.loader import cached, load_library, require
from memguard.native.prototypes import OPAQUE_FREE_FN, ZALLOC_FN

__all__ = ["ZStream", "ZlibLib", "zlib"]

_vp = ctypes.c_void_p
_cp = ctypes.c_char_p
_c_uint = ctypes.c_uint
_c_int = ctypes.c_int


class ZStream(ctypes.Structure):
    """zlib's ``z_stream`` (``zalloc``/``zfree``/``opaque`` select the allocator)."""

    _fields_ = [
        ("next_in", _vp),
        ("avail_in", _c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", _vp),
        ("avail_out", _c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", _vp),
        ("zalloc", ZALLOC_FN),
        ("zfree", OPAQUE_FREE_FN),
        ("opaque", _vp),
        ("data_type", _c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


_pz = ctypes.POINTER(ZStream)


class ZlibLib:
    """zlib's functions with prototypes set (see :func:`zlib`)."""

    Z_OK = 0
    Z_STREAM_END = 1
    Z_BUF_ERROR = -5
    Z_NO_FLUSH = 0
    Z_FINISH = 4
    Z_DEFLATED = 8

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: require(lib, "zlib", name, res, *args)  # noqa: E731
        self.lib = lib
        self.zlibVersion = d("zlibVersion", _cp)
        self.deflateInit2_ = d("deflateInit2_", _c_int, _pz, _c_int, _c_int, _c_int, _c_int, _c_int, _cp, _c_int)
        self.deflate = d("deflate", _c_int, _pz, _c_int)
        self.deflateEnd = d("deflateEnd", _c_int, _pz)
        self.deflateBound = d("deflateBound", ctypes.c_ulong, _pz, ctypes.c_ulong)
        self.inflateInit2_ = d("inflateInit2_", _c_int, _pz, _c_int, _cp, _c_int)
        self.inflate = d("inflate", _c_int, _pz, _c_int)
        self.inflateEnd = d("inflateEnd", _c_int, _pz)
        self.version: bytes = self.zlibVersion()


def zlib() -> ZlibLib:
    """The system zlib, loaded once, every function memguard uses declared."""
    return cached("z", lambda: ZlibLib(load_library("z")))
