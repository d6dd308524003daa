"""cffi buffers on the guarded heap: :func:`allocator` wraps ``ffi.new_allocator``.

``ffi.new`` takes its memory from Python's allocator, out of memguard's sight.  The
allocator returned here behaves like ``ffi.new`` (``new("char[]", 16)``,
``new("struct point *", [1, 2])``) but each buffer is a block of a
:class:`~memguard.GuardedHeap`: cffi calls the heap's C-callable ``malloc`` and ``free``
(:class:`~memguard.CAllocator`) directly, so an overflow, an underflow or a write after
the buffer died is reported, and a buffer nobody releases is a leak, each with the
user's line.  The buffer is freed when its cdata object is garbage (or by
``ffi.release``), exactly as with ``ffi.new``.

cffi's own Python wrapper (``FFI.new_allocator`` returns a function defined in cffi's
``api.py``) is not used: the allocator calls cffi's compiled allocator itself, so the
stacks start at the line that called it.  Needs the ``cffi`` package
(``pip install memguard[cffi]``).

A buffer still reachable from Python when a test or the program ends (a module global, a
cache) is retained, not leaked: this module registers a retainer with the leak reports
(:mod:`memguard.reporting.retention`) that walks from Python's roots
(:func:`memguard.reachability.weak_retainer`).
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from collections.abc import Collection
from typing import Any

from memguard.errors import HeapClosedError
from memguard.heap.c_allocator import CAllocator, allocator_for
from memguard.heap.guarded import GuardedHeap
from memguard.reachability import weak_retainer
from memguard.reporting.retention import add_retainer

__all__ = ["GuardedAllocator", "allocator"]

#: The buffers alive now: id of the weak reference -> (the reference, heap, block address,
#: the allocator cffi will call to free it).
_live: dict[int, tuple[weakref.ReferenceType[Any], weakref.ReferenceType[GuardedHeap], int, CAllocator]] = {}
_lock = threading.RLock()  # re-entrant: the collector may run a callback below while it is held
#: Allocators whose last buffer just died, kept until the next buffer is made: cffi calls
#: ``free`` after the buffer's weak references are cleared, and the callbacks behind the
#: function pointer must still exist then.
_dying: list[CAllocator] = []


def _reset_lock_in_child() -> None:
    """After ``fork()``: a fresh lock (another thread may have held this one at the fork)."""
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_in_child)


def _forget(ref: weakref.ReferenceType[Any]) -> None:
    """The weak reference's callback: the buffer is gone (cffi frees its block)."""
    with _lock:
        entry = _live.pop(id(ref), None)
        if entry is not None:
            _dying.append(entry[3])  # (a buffer holds the allocator until cffi's free is done)


def _retainer(heap: Any, addresses: Collection[int]) -> set[int]:
    """The candidates of a leak report that are not leaks: blocks of buffers still reachable."""
    with _lock:
        mine = {address: ref for ref, heap_ref, address, _ in _live.values() if heap_ref() is heap and address in addresses}
    return weak_retainer(heap, mine)


_MALLOC_DECL = "void *(*)(size_t)"
_FREE_DECL = "void (*)(void *)"


def _backend() -> Any:
    """cffi's compiled backend module, with a clear error when cffi is not installed."""
    try:
        import _cffi_backend
    except ImportError as exc:
        raise ImportError("memguard.cffi needs the cffi package: pip install 'memguard[cffi]'") from exc
    return _cffi_backend


class GuardedAllocator:
    """A callable like ``ffi.new`` whose buffers are guarded-heap blocks (see :func:`allocator`).

    ``alloc(cdecl, init=None)`` returns an owning cdata exactly as ``ffi.new(cdecl, init)``
    does; ``cdecl`` is a C type as a string or a ``ffi.typeof`` object.

    :ivar ffi: the ``FFI`` whose types string declarations are parsed with.
    :ivar heap: the heap the buffers come from.
    :ivar c_allocator: the heap's :class:`~memguard.CAllocator` cffi calls.
    """

    __slots__ = ("ffi", "heap", "c_allocator", "_new", "_typeof", "_pointers", "_address", "_heap_ref")

    def __init__(self, ffi: Any, c_allocator: CAllocator, should_clear_after_alloc: bool) -> None:
        backend = _backend()
        if not (isinstance(ffi, backend.FFI) or (hasattr(ffi, "new_allocator") and hasattr(ffi, "typeof"))):
            raise TypeError(f"ffi must be a cffi FFI object, got {type(ffi).__name__}")
        self.ffi = ffi
        self.heap = c_allocator.heap
        self.c_allocator = c_allocator
        malloc = ffi.cast(_MALLOC_DECL, ctypes.cast(c_allocator.malloc, ctypes.c_void_p).value)
        free = ffi.cast(_FREE_DECL, ctypes.cast(c_allocator.free, ctypes.c_void_p).value)
        # cffi keeps the function-pointer cdata alive from each buffer; the callbacks behind
        # them belong to the CAllocator, which each buffer's entry in _live keeps alive.
        self._pointers = (malloc, free)
        self._new = backend.FFI().new_allocator(malloc, free, bool(should_clear_after_alloc))
        self._typeof = ffi.typeof
        self._address = lambda cdata, cast=ffi.cast: int(cast("uintptr_t", cdata))
        self._heap_ref = weakref.ref(self.heap)

    def __call__(self, cdecl: Any, init: Any = None) -> Any:
        """A new owning cdata of type ``cdecl`` on the guarded heap, like ``ffi.new``.

        Raises :class:`~memguard.HeapClosedError` once the heap is closed, and
        :class:`MemoryError` when the heap gives no memory.
        """
        if self.heap.closed:
            raise HeapClosedError("the heap of this cffi allocator is closed")
        if isinstance(cdecl, str):
            cdecl = self._typeof(cdecl)
        cdata = self._new(cdecl, init)
        ref = weakref.ref(cdata, _forget)
        with _lock:
            _dying.clear()
            _live[id(ref)] = (ref, self._heap_ref, self._address(cdata), self.c_allocator)
        return cdata

    def __repr__(self) -> str:
        return f"<memguard.cffi.GuardedAllocator over {self.heap!r}>"


def allocator(ffi: Any, heap: GuardedHeap | CAllocator | None = None, should_clear_after_alloc: bool = False) -> GuardedAllocator:
    """``ffi.new_allocator`` over the guarded heap: a replacement for ``ffi.new``.

    :param ffi: a ``cffi.FFI()`` (ABI or API mode) or a compiled module's ``ffi``.
    :param heap: a :class:`~memguard.GuardedHeap` or its :class:`~memguard.CAllocator`;
        ``None`` is the process-wide heap (installed on first use).
    :param should_clear_after_alloc: cffi zeroes each buffer when true.  By default a
        buffer starts filled with the heap's ``0xCD`` pattern (``init`` still applies),
        so code that reads memory it never wrote sees a recognisable value.
    """
    if heap is None:
        from memguard.process import install, process_heap

        heap = process_heap() or install()
    return GuardedAllocator(ffi, allocator_for(heap), should_clear_after_alloc)


add_retainer(_retainer)
