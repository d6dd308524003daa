"""ctypes arrays over guarded blocks: :func:`array` and :func:`string_buffer`.

The most common ctypes memory bug is a C function writing past a buffer made by
``ctypes.create_string_buffer`` (``snprintf`` told the wrong size, a ``strcpy``): that
buffer lives in Python's allocator and nothing notices.  An array made here is a plain
ctypes array (``ctype * count``) whose memory is a block of a
:class:`~memguard.GuardedHeap`, zeroed like a ctypes array, so a write past its end or
before its start is reported with the line that made it.

The block belongs to the array: it is freed when the array is garbage (its last
reference gone, as for any ctypes object; ``memoryview(arr)``, ``ctypes.pointer(arr)``,
``ctypes.cast(arr, ...)`` and its structure elements keep it alive), so a C pointer kept
after that (``ctypes.addressof(arr)`` saved somewhere) points into quarantined memory
and a write through it is a ``heap-use-after-free``.  The free runs with the heap's
errors deferred (a finding made then is recorded and raised by the next ``check()``),
does nothing once the heap is closed, and arrays still alive when the interpreter exits
are freed before the exit report (they are reachable, not leaked).

:func:`retainer` is LeakSanitizer's reachability for these blocks: a block whose array is
reachable from a Python root (a module's globals, a live frame's locals) is retained, not
leaked; :mod:`memguard.ctypes_buffers` registers it with the leak reports
(:mod:`memguard.reporting.retention`); the walk is :mod:`memguard.reachability`'s.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import threading
import weakref
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from memguard.arguments import int_arg
from memguard.reachability import weak_retainer

if TYPE_CHECKING:
    from memguard.heap.guarded import GuardedHeap

__all__ = ["array", "string_buffer", "retainer"]

#: The arrays alive now: id of the weak reference -> (the reference, heap, block address, block
#: serial).  Keyed by id: a weak reference to an unhashable ctypes array is unhashable.
_live: dict[int, tuple[weakref.ReferenceType[Any], weakref.ReferenceType[GuardedHeap], int, int]] = {}
_lock = threading.RLock()  # re-entrant: the collector may run a callback below while it is held
_atexit_registered = False


def _release(ref: weakref.ReferenceType[Any]) -> None:
    """The weak reference's callback (the array is garbage): free its block, once.

    Called by the interpreter directly, so the free's stack starts at the user's line
    that dropped the array.
    """
    with _lock:
        entry = _live.pop(id(ref), None)
    if entry is None:
        return
    _, heap_ref, address, serial = entry
    heap = heap_ref()
    if heap is None or heap.closed:
        return
    deferral = heap.deferral  # heap.deferred_errors() without its generator (a hot path)
    deferral.depth += 1
    try:
        current = heap.live_serial(address)
        # 0: the block was freed by hand (a second free is the finding it should be);
        # another serial: freed and handed out again, that block is not the array's.
        if current == serial or current == 0:
            heap.free(address)
    except Exception:  # noqa: BLE001 - a weakref callback cannot raise; the heap has the finding
        pass
    finally:
        deferral.depth -= 1


def _free_live_at_exit() -> None:
    """Free the blocks of the arrays still alive at exit: reachable memory, not leaks."""
    with _lock:
        refs = [entry[0] for entry in _live.values()]
    for ref in refs:
        _release(ref)


def _reset_lock_in_child() -> None:
    """After ``fork()``: a fresh lock (another thread may have held this one at the fork)."""
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_in_child)


def _own(ref: weakref.ReferenceType[Any], heap: GuardedHeap, address: int) -> None:
    """Tie the block at ``address`` to the lifetime of ``ref``'s array."""
    global _atexit_registered
    with _lock:
        _live[id(ref)] = (ref, weakref.ref(heap), address, heap.live_serial(address))
        if not _atexit_registered:
            # Registered after the heap's exit report (atexit runs last-in first-out).
            atexit.register(_free_live_at_exit)
            _atexit_registered = True


def array(heap: GuardedHeap, ctype: Any, count: int) -> Any:
    """A zeroed ctypes array ``ctype * count`` over a new block of ``heap``.

    ``ctype`` is any ctypes type (``ctypes.c_int``, a ``Structure`` …).  The block is
    freed when the array is garbage.
    """
    count = int_arg(count, "count")
    if not isinstance(ctype, type) or not hasattr(ctype, "_type_") and not issubclass(
        ctype, (ctypes.Structure, ctypes.Union, ctypes.Array)
    ):
        raise TypeError(f"ctype must be a ctypes type, got {ctype!r}")
    kind = ctype * count
    size = ctypes.sizeof(kind)
    address = heap.malloc(size)
    ref = None
    try:
        ctypes.memset(address, 0, size)  # zeroed like any ctypes array (cheaper than the heap's calloc path)
        arr = kind.from_address(address)
        ref = weakref.ref(arr, _release)
        _own(ref, heap, address)
    except BaseException:  # (a Ctrl-C included): the caller never gets the array, the block goes
        if ref is not None:
            with _lock:
                _live.pop(id(ref), None)
        heap.free(address)
        raise
    return arr


def string_buffer(heap: GuardedHeap, init_or_size: bytes | int, size: int | None = None) -> Any:
    """``ctypes.create_string_buffer(init_or_size, size)`` over a new block of ``heap``.

    Same signature and semantics: from ``bytes``, a buffer of ``size`` (default
    ``len(init) + 1``, room for the NUL terminator) holding ``init`` followed by a NUL
    when it fits; from an int, that many zero bytes.  The block is freed when the array
    is garbage.
    """
    if isinstance(init_or_size, bytes):
        length = len(init_or_size) + 1 if size is None else int_arg(size, "size")
        if len(init_or_size) > length:
            raise ValueError(f"byte string too long ({len(init_or_size)} bytes for a {length}-byte buffer)")
        buf = array(heap, ctypes.c_char, length)
        buf.value = init_or_size
        return buf
    if isinstance(init_or_size, int) and not isinstance(init_or_size, bool):
        if size is not None:
            raise TypeError("size is given only with a bytes initialiser")
        return array(heap, ctypes.c_char, init_or_size)
    raise TypeError(f"init_or_size must be bytes or an int, got {type(init_or_size).__name__}")


def retainer(heap: Any, addresses: Collection[int]) -> set[int]:
    """The candidates of a leak report that are not leaks: blocks of arrays still reachable
    (or freed by a garbage collection).  Blocks that are not guarded arrays' are left to
    the report.
    """
    with _lock:
        mine = {address: ref for ref, heap_ref, address, _ in _live.values() if heap_ref() is heap and address in addresses}
    return weak_retainer(heap, mine)
