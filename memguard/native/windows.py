"""The Windows backend: the Win32 process heap and the CRT's aligned allocator.

``HeapAlloc``/``HeapReAlloc``/``HeapFree``/``HeapSize`` on ``GetProcessHeap()`` make and
release ordinary blocks (``calloc`` is ``HeapAlloc`` with ``HEAP_ZERO_MEMORY``), and
``_aligned_malloc(size, alignment)``/``_aligned_free`` the aligned ones, which never go
to ``HeapFree``.  :func:`windows_backend` takes the two libraries as arguments, so the
backend is built (and tested) anywhere from stand-ins; :func:`load` opens the real
``kernel32`` and ``ucrtbase``, on Windows.  Nothing here looks at the platform when it
is imported.
"""

from __future__ import annotations

import ctypes
from typing import Any, Final

from memguard.errors import BackendUnavailableError
from memguard.native.backend import Backend
from memguard.native.loader import require

__all__ = ["HEAP_ZERO_MEMORY", "windows_backend"]

#: ``HeapAlloc`` flag: the block is zeroed.
HEAP_ZERO_MEMORY: Final = 0x00000008

_vp = ctypes.c_void_p
_sz = ctypes.c_size_t
_dword = ctypes.c_uint32
_bool = ctypes.c_int


def windows_backend(kernel32: Any, crt: Any, library: str = "kernel32 + ucrtbase") -> Backend:
    """The backend over ``kernel32`` (the process heap) and ``crt`` (``_aligned_malloc``).

    Either may be any object whose attributes are ctypes function pointers; every
    prototype is declared here.  A ``HeapFree`` or ``HeapSize`` that fails (a block the
    heap does not know: never one memguard made) raises :class:`OSError` naming it.
    """
    get_process_heap = require(kernel32, "kernel32", "GetProcessHeap", _vp)
    heap_alloc = require(kernel32, "kernel32", "HeapAlloc", _vp, _vp, _dword, _sz)
    heap_realloc = require(kernel32, "kernel32", "HeapReAlloc", _vp, _vp, _dword, _vp, _sz)
    heap_free = require(kernel32, "kernel32", "HeapFree", _bool, _vp, _dword, _vp)
    heap_size = require(kernel32, "kernel32", "HeapSize", _sz, _vp, _dword, _vp)
    aligned_malloc = require(crt, "ucrtbase", "_aligned_malloc", _vp, _sz, _sz)
    aligned_free_fn = require(crt, "ucrtbase", "_aligned_free", None, _vp)
    heap = get_process_heap()
    if not heap:
        raise BackendUnavailableError("GetProcessHeap() returned NULL", "windows", library, "")
    failed_size: Final = (1 << (8 * ctypes.sizeof(_sz))) - 1

    def malloc(size: int) -> int | None:
        return heap_alloc(heap, 0, size or 1)  # type: ignore[no-any-return]

    def calloc(count: int, size: int) -> int | None:
        total = count * size
        if total >> (8 * ctypes.sizeof(_sz)):
            return None
        return heap_alloc(heap, HEAP_ZERO_MEMORY, total or 1)  # type: ignore[no-any-return]

    def realloc(address: int | None, size: int) -> int | None:
        if not address:
            return malloc(size)
        return heap_realloc(heap, 0, address, size or 1)  # type: ignore[no-any-return]

    def free(address: int) -> None:
        if address and not heap_free(heap, 0, address):
            raise OSError(f"HeapFree(0x{heap:x}, 0, 0x{address:x}) failed: not a block of the process heap")

    def aligned_alloc(alignment: int, size: int) -> int | None:
        return aligned_malloc(size or 1, alignment)  # type: ignore[no-any-return]

    def aligned_free(address: int) -> None:
        if address:
            aligned_free_fn(address)

    def usable_size(address: int) -> int:
        n = heap_size(heap, 0, address)
        if n == failed_size:
            raise OSError(f"HeapSize(0x{heap:x}, 0, 0x{address:x}) failed: not a block of the process heap")
        return int(n)

    return Backend("windows", library, malloc, calloc, realloc, free, aligned_alloc, aligned_free, usable_size)


def load() -> Backend:
    """The backend over the real ``kernel32`` and ``ucrtbase`` (Windows only)."""
    win_dll = getattr(ctypes, "WinDLL", None)
    if win_dll is None:
        raise BackendUnavailableError(
            "the windows backend needs kernel32.dll and ucrtbase.dll, which exist only on Windows",
            "windows", "kernel32.dll", "",
        )
    try:
        kernel32 = win_dll("kernel32", use_last_error=True)
        crt = ctypes.CDLL("ucrtbase")
    except OSError as exc:
        raise BackendUnavailableError(
            f"the windows backend cannot load kernel32.dll and ucrtbase.dll ({exc})", "windows", "ucrtbase.dll", ""
        ) from None
    return windows_backend(kernel32, crt)
