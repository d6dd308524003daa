"""The platform allocator: native ``malloc``/``free`` and the memory views over them.

The module-level functions call the platform's backend (:mod:`memguard.native.backend`):
on POSIX ``libc``, resolved through ``ctypes.CDLL(None)``, the process's global symbol
table (no library is opened), so an allocator preloaded with ``LD_PRELOAD``
(AddressSanitizer's runtime, jemalloc, tcmalloc) is the one memguard uses and the two
compose; on Windows the process heap (``HeapAlloc`` and friends) and the CRT's
``_aligned_malloc``/``_aligned_free``.  :func:`owned_buffer` takes any backend.

Public functions return plain ``int`` addresses and raise :class:`MemoryError`
naming the size when the native allocator returns NULL.  The ``raw_*`` functions are
the bare foreign functions (``None`` or 0 on failure) for callers that check NULL
themselves on a hot path.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any, Callable, Final

from memguard.native.backend import DEFAULT_BACKEND, Backend, get_backend, process_symbols
from memguard.native.loader import declare

__all__ = [
    "PLATFORM",
    "POINTER_SIZE",
    "SIZE_MAX",
    "malloc",
    "calloc",
    "realloc",
    "free",
    "aligned_alloc",
    "aligned_free",
    "usable_size",
    "memset",
    "memmove",
    "memcmp",
    "owned_buffer",
    "raise_caught_interrupt",
    "address_space",
    "string_at",
    "raw_malloc",
    "raw_calloc",
    "raw_realloc",
    "raw_free",
    "raw_aligned_alloc",
]

POINTER_SIZE: Final = ctypes.sizeof(ctypes.c_void_p)
#: Largest size any native allocator can be asked for.
SIZE_MAX: Final = (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - 1

_vp = ctypes.c_void_p
_sz = ctypes.c_size_t


#: The platform's backend (``libc`` through ``ctypes.CDLL(None)``, or ``windows``), which
#: the module-level functions below call.
_default: Final = get_backend(DEFAULT_BACKEND)
PLATFORM: Final = "windows" if _default.name == "windows" else "posix"
if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    _memcmp = declare(ctypes.CDLL("ucrtbase"), "memcmp", ctypes.c_int, _vp, _vp, _sz)
else:
    _memcmp = declare(process_symbols(), "memcmp", ctypes.c_int, _vp, _vp, _sz)

#: ``malloc(size)`` of the platform backend: the address, or ``None`` on failure.
raw_malloc = _default.malloc
#: ``calloc(count, size)`` of the platform backend: the address, or ``None`` on failure.
raw_calloc = _default.calloc
#: ``realloc(address, size)`` of the platform backend: ``None`` on failure (the old block is untouched).
raw_realloc = _default.realloc
#: ``free(address)`` of the platform backend.
raw_free = _default.free
#: ``aligned_alloc(alignment, size)`` of the platform backend: ``None`` on failure.
raw_aligned_alloc = _default.aligned_alloc
#: Releases a block obtained from :func:`aligned_alloc`.
aligned_free = _default.aligned_free


def usable_size(address: int) -> int | None:
    """Bytes usable in a block from :func:`malloc`, or ``None`` when unknown."""
    if _default.usable_size is None:  # pragma: no cover - glibc has it
        return None
    return int(_default.usable_size(address))


def _check_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"negative size: {size}")
    if size > SIZE_MAX:
        raise MemoryError(f"cannot allocate {size} bytes: larger than SIZE_MAX")


def malloc(size: int) -> int:
    """Allocate ``size`` bytes natively; :class:`MemoryError` naming the size on NULL."""
    _check_size(size)
    address = raw_malloc(size)
    if not address:
        raise MemoryError(f"native malloc({size}) returned NULL")
    return address


def calloc(count: int, size: int) -> int:
    """Allocate ``count * size`` zeroed bytes natively."""
    _check_size(count)
    _check_size(size)
    if count * size > SIZE_MAX:
        raise MemoryError(f"calloc({count}, {size}) overflows size_t")
    address = raw_calloc(count, size)
    if not address:
        raise MemoryError(f"native calloc({count}, {size}) returned NULL")
    return address


def realloc(address: int, size: int) -> int:
    """Resize a native block; on failure the old block is untouched and MemoryError raised."""
    _check_size(size)
    new = raw_realloc(address or None, size)
    if not new:
        raise MemoryError(f"native realloc(0x{address or 0:x}, {size}) returned NULL")
    return new


def free(address: int) -> None:
    """Release a native block (``free(0)`` is a no-op)."""
    if address:
        raw_free(address)


def aligned_alloc(alignment: int, size: int) -> int:
    """Allocate ``size`` bytes aligned to ``alignment`` (a power of two >= pointer size)."""
    _check_size(size)
    if alignment < POINTER_SIZE or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two >= {POINTER_SIZE}, got {alignment}")
    address = raw_aligned_alloc(alignment, size)
    if not address:
        raise MemoryError(f"native aligned allocation of {size} bytes (alignment {alignment}) failed")
    return address


memset = ctypes.memset
memmove = ctypes.memmove
string_at = ctypes.string_at


#: libc ``memcmp(a, b, size)`` on two addresses (the ctypes function itself).
memcmp = _memcmp

_owned_types: dict[int, type] = {}
#: KeyboardInterrupts a buffer's finalizer caught: an exception cannot leave a finalizer
#: (Python prints it and goes on), so the caller raises it again (raise_caught_interrupt).
_caught: list[BaseException] = []


def raise_caught_interrupt() -> None:
    """Raise the ``KeyboardInterrupt`` a buffer's finalizer caught since the last call, if any.

    Called by code that drops buffers, once it is in a state an exception may leave.
    """
    if _caught:
        exc = _caught.pop()
        _caught.clear()
        raise exc


def _release_owned(self: ctypes.Array[ctypes.c_ubyte]) -> None:
    """``__del__`` of an owned buffer: hand its memory to its release function, once."""
    try:
        release = getattr(self, "release", None)
        if release is not None:
            self.release = None  # type: ignore[attr-defined]
            release(ctypes.addressof(self))
    except KeyboardInterrupt as exc:  # a Ctrl-C here would be lost: keep it
        _caught.append(exc)


def _keep_lost_interrupt(unraisable: Any) -> None:
    """``sys.unraisablehook``: keep a Ctrl-C that left :func:`_release_owned` before its
    ``try`` (at its first instruction); pass everything else on."""
    if unraisable.object is _release_owned and issubclass(unraisable.exc_type, KeyboardInterrupt):
        _caught.append(unraisable.exc_value)
        return
    _previous_hook(unraisable)


_previous_hook: Callable[[Any], object] = sys.unraisablehook


def _watch_lost_interrupts() -> None:
    """Install :func:`_keep_lost_interrupt` unless it is the hook already (chaining to the one before)."""
    global _previous_hook
    if sys.unraisablehook is not _keep_lost_interrupt:
        _previous_hook = sys.unraisablehook
        sys.unraisablehook = _keep_lost_interrupt


def _owned_type(size: int) -> type:
    """A ``c_ubyte * size`` subclass whose instances free their memory when collected."""
    kind = _owned_types.get(size)
    if kind is None:
        kind = type(f"_Owned{size}", (ctypes.c_ubyte * size,), {"__del__": _release_owned})
        _owned_types[size] = kind
    return kind


def owned_buffer(
    size: int,
    alignment: int = 0,
    gate: Callable[[int, Callable[[int], None]], None] | None = None,
    backend: Backend | None = None,
) -> tuple[int, memoryview]:
    """Allocate ``size`` native bytes owned by the returned memoryview.

    Returns ``(address, view)``: ``view`` is a writable 1-D ``'B'`` memoryview of the
    whole allocation.  The native memory is released when the last memoryview over it
    (including slices handed to users) is gone, so no view can ever outlive the memory
    it points at.  ``alignment`` of 0 means the allocator's natural alignment.

    ``backend`` (default: the platform's) makes the memory and releases it: the release
    is the one matching the allocation (``aligned_free`` for an aligned one), of the
    backend that made it, whatever happens to be current when the view goes.

    With ``gate``, the release is ``gate(address, free)`` instead of ``free(address)``:
    the gate decides whether the memory goes back to the allocator (it may keep it, for
    memory that something outside Python still uses; the garbage collector may finalize
    the owner while other objects it is collecting still point into the memory).
    """
    source = _default if backend is None else backend
    _check_size(size)
    if alignment:
        if alignment < POINTER_SIZE or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two >= {POINTER_SIZE}, got {alignment}")
        address = source.aligned_alloc(alignment, size)
        release: Callable[[int], None] = source.aligned_free
    else:
        address = source.malloc(size or 1)
        release = source.free
    if not address:
        raise MemoryError(
            f"native allocation of {size} bytes (alignment {alignment}) failed: {source.name} returned NULL"
        )
    _watch_lost_interrupts()
    owner = _owned_type(size).from_address(address)
    owner.release = release if gate is None else functools.partial(gate, free=release)
    return address, memoryview(owner).cast("B")


_address_space: memoryview | None = None


def address_space() -> memoryview:
    """A 1-D ``'B'`` memoryview whose index ``i`` is the byte at address ``i``.

    It owns nothing and checks nothing: an index is safe only where the caller knows it
    owns the memory (the heap reads blocks leaving its quarantine through it, by address,
    while it holds them).  Needs a 64-bit interpreter, where every address is below
    ``sys.maxsize``.
    """
    global _address_space
    if _address_space is None:
        if POINTER_SIZE != 8:  # pragma: no cover - 32-bit interpreters only
            raise RuntimeError("memguard needs a 64-bit Python")
        _address_space = memoryview((ctypes.c_ubyte * sys.maxsize).from_address(0)).cast("B")
    return _address_space
