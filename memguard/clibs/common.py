"""What the C-library adapters share: the error a library's return code becomes, and the
helpers that drive a library over a whole buffer.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable

from memguard.heap.c_allocator import CAllocator, allocator_for
from memguard.errors import MemguardError

__all__ = ["CHUNK", "MAX_IN", "CLibraryError", "as_bytes", "buffer_address", "optional_allocator", "pump"]

#: Size of the output buffer the whole-buffer helpers collect through.
CHUNK = 1 << 20
#: Input is fed to 32-bit ``avail_in`` fields in pieces no larger than this.
MAX_IN = 1 << 30


class CLibraryError(MemguardError, RuntimeError):
    """A C library returned an error code (bad data, misuse).

    Also a :class:`RuntimeError`, as it always was.  ``str(error)`` is
    ``"<library>: <message> (code <code>)"``.

    :ivar library: ``"zlib"``, ``"bzip2"``, ``"liblzma"``, ``"expat"`` or ``"sqlite"``.
    :ivar code: the library's return code (for expat, its ``XML_Error`` code).
    :ivar message: what failed, in words (the function and the library's message).
    """

    def __init__(self, library: str, code: int, message: str) -> None:
        super().__init__(f"{library}: {message} (code {code})")
        self.library = library
        self.code = code
        self.message = message


def as_bytes(data: object, what: str = "data") -> bytes:
    """``data`` as :class:`bytes` (bytes, bytearray or memoryview); :class:`TypeError` otherwise."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes-like, got {type(data).__name__}")


def buffer_address(data: bytes) -> int:
    """Address of the bytes object's own buffer (valid while ``data`` is alive)."""
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0


def optional_allocator(allocator: CAllocator | Any | None) -> CAllocator | None:
    """The :class:`CAllocator` for ``allocator`` (a heap or an allocator), ``None`` for ``None``."""
    return None if allocator is None else allocator_for(allocator)


def pump(strm: Any, data: bytes, step: Callable[[bool], int], done: Callable[[int, int, bool], bool]) -> bytes:
    """Drive a zlib/bzip2-shaped stream over ``data`` and return everything it produced.

    Input is fed through ``next_in``/``avail_in`` in pieces that fit a 32-bit count and
    output is collected through a :data:`CHUNK` buffer.  ``step(last)`` runs the library
    once (``last`` is true once all input has been handed over) and returns its status
    code; ``done(rc, produced, exhausted)`` raises on errors and says whether the stream
    ended.
    """
    out = bytearray()
    buf = ctypes.create_string_buffer(CHUNK)
    base = buffer_address(data)
    pos = 0
    while True:
        if strm.avail_in == 0 and pos < len(data):
            take = min(MAX_IN, len(data) - pos)
            strm.next_in = base + pos
            strm.avail_in = take
            pos += take
        strm.next_out = ctypes.addressof(buf)
        strm.avail_out = CHUNK
        rc = step(pos >= len(data))
        produced = CHUNK - strm.avail_out
        out += buf.raw[:produced]
        if done(rc, produced, strm.avail_in == 0 and pos >= len(data)):
            return bytes(out)
