"""liblzma: its ``lzma_allocator`` and ``lzma_stream`` structures, its functions, its loader."""

from __future__ import annotations

import ctypes

from memguard.native.loader import cached, load_library, require
from memguard.native.prototypes import LZMA_ALLOC_FN, OPAQUE_FREE_FN

__all__ = ["LzmaAllocator", "LzmaStream", "LzmaLib", "lzma"]

_vp = ctypes.c_void_p
_sz = ctypes.c_size_t
_cp = ctypes.c_char_p
_c_int = ctypes.c_int


class LzmaAllocator(ctypes.Structure):
    """liblzma's ``lzma_allocator``: ``alloc(opaque, nmemb, size)``, ``free(opaque, ptr)``, ``opaque``."""

    _fields_ = [("alloc", LZMA_ALLOC_FN), ("free", OPAQUE_FREE_FN), ("opaque", _vp)]


class LzmaStream(ctypes.Structure):
    """liblzma's ``lzma_stream``; a zeroed instance is ``LZMA_STREAM_INIT``."""

    _fields_ = [
        ("next_in", _vp),
        ("avail_in", _sz),
        ("total_in", ctypes.c_uint64),
        ("next_out", _vp),
        ("avail_out", _sz),
        ("total_out", ctypes.c_uint64),
        ("allocator", ctypes.POINTER(LzmaAllocator)),
        ("internal", _vp),
        ("reserved_ptr1", _vp),
        ("reserved_ptr2", _vp),
        ("reserved_ptr3", _vp),
        ("reserved_ptr4", _vp),
        ("seek_pos", ctypes.c_uint64),
        ("reserved_int2", ctypes.c_uint64),
        ("reserved_int3", _sz),
        ("reserved_int4", _sz),
        ("reserved_enum1", _c_int),
        ("reserved_enum2", _c_int),
    ]


_plz = ctypes.POINTER(LzmaStream)


class LzmaLib:
    """liblzma's functions with prototypes set (see :func:`lzma`)."""

    LZMA_OK = 0
    LZMA_STREAM_END = 1
    LZMA_MEM_ERROR = 5
    LZMA_RUN = 0
    LZMA_FINISH = 3
    LZMA_CHECK_CRC64 = 4

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: require(lib, "liblzma", name, res, *args)  # noqa: E731
        self.lib = lib
        self.lzma_version_string = d("lzma_version_string", _cp)
        self.lzma_easy_encoder = d("lzma_easy_encoder", _c_int, _plz, ctypes.c_uint32, _c_int)
        self.lzma_stream_decoder = d("lzma_stream_decoder", _c_int, _plz, ctypes.c_uint64, ctypes.c_uint32)
        self.lzma_code = d("lzma_code", _c_int, _plz, _c_int)
        self.lzma_end = d("lzma_end", None, _plz)
        self.version: bytes = self.lzma_version_string()


def lzma() -> LzmaLib:
    """The system liblzma, loaded once, every function memguard uses declared."""
    return cached("lzma", lambda: LzmaLib(load_library("lzma")))
