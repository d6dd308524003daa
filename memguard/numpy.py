"""Every NumPy array's data on the guarded heap: a NEP 49 memory handler.

::

    import numpy as np
    import memguard.numpy

    with memguard.numpy.guarded() as heap:     # the process heap by default
        a = np.zeros(10)                       # a.ctypes.data is a guarded block
    heap.check()

:func:`install` makes a ``PyDataMem_Handler`` whose functions are the heap's
context-first allocator (:class:`~memguard.CAllocator`'s ``ctx_*`` kinds) the current
handler of the calling thread and of every thread started afterwards (``threading``
threads, subclasses that override ``run`` and executor workers included).  NumPy keeps
a handler per thread (a context variable) and per array: an array made while the handler
was installed frees into the heap even after :func:`uninstall`.  So the heap and the
handler are kept for the rest of the process (the heap outlives every block NumPy holds).

NumPy frees temporaries on its error paths while a Python exception is pending; the
handler's functions therefore go through memguard's exception-preserving trampolines,
and :func:`install` refuses with :class:`~memguard.errors.TrampolineUnavailableError`
when memguard was installed without them.

Leak reports (the exit report, the pytest plugin) leave out the blocks of arrays the
program still reaches from a Python root (:mod:`memguard.reachability`): an array in a
module global, a cache or a session fixture is retained, not leaked; an array alive but
unreachable (a reference leaked in C) is a definite leak.

NumPy's sized ``free`` is not checked against the block's size unless
``check_free_size=True``: NumPy itself passes a wrong size on some paths (``fromstring``
and ``fromfile`` on bad or empty input free an 8-byte block with ``size=1``), which is
not a bug of the program under test.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from memguard import reachability
from memguard.heap.c_allocator import CAllocator
from memguard.heap.guarded import GuardedHeap
from memguard.errors import HeapClosedError
from memguard.hookspecs import hookimpl
from memguard.plugin_manager import PluginValidationError
from memguard.native import prototypes, trampoline
from memguard.reporting import retention

__all__ = ["install", "uninstall", "guarded", "installed", "HANDLER_NAME"]

#: The handler's name, as ``numpy._core.multiarray.get_handler_name()`` reports it.
HANDLER_NAME = "memguard"
_INTEGRATION = "memguard.numpy"


@dataclass(frozen=True)
class _Handler:
    """One handler: the heap, its allocator, the C structure and the capsule NumPy holds."""

    heap: GuardedHeap
    allocator: CAllocator
    struct: Any
    capsule: Any


_lock = threading.RLock()
#: (id(heap), check_free_size) -> handler; kept for the process (arrays keep pointing at them).
_handlers: dict[tuple[int, bool], _Handler] = {}
#: The handlers :func:`install` made current, innermost last: new threads get the last one.
_active: list[_Handler] = []
#: Per thread: the handlers :func:`install` replaced, to be put back by :func:`uninstall`.
_replaced = threading.local()
_default: list[Any] = []
#: References to a capsule held by this module alone (its handler, and getrefcount's argument).
_CAPSULE_REFS = 2
_threads_patched = False


def _capi() -> Any:
    try:
        from memguard.native.numpy_capi import numpy_api
    except ImportError as exc:  # pragma: no cover - the native module itself imports nothing optional
        raise ImportError(f"{_INTEGRATION} needs NumPy: pip install 'memguard[numpy]' ({exc})") from exc
    try:
        capi = numpy_api()
    except ImportError as exc:
        raise ImportError(f"{_INTEGRATION} needs NumPy >= 1.26: pip install 'memguard[numpy]' ({exc})") from exc
    with _lock:
        if not _default:
            _default.append(capi.get_handler())
    return capi


def _handler_for(heap: GuardedHeap, check_free_size: bool) -> _Handler:
    """The handler over ``heap`` (made once per heap and setting)."""
    from memguard.native.numpy_capi import PyDataMemAllocator, PyDataMemHandler

    capi = _capi()
    key = (id(heap), check_free_size)
    with _lock:
        handler = _handlers.get(key)
        if handler is not None and handler.heap is heap:
            return handler
        _reclaim()
        alloc = CAllocator(heap, check_free_size=check_free_size)
        fns = [
            alloc.function(kind, proto, require_trampoline=_INTEGRATION)
            for kind, proto in (
                ("ctx_malloc", prototypes.CTX_MALLOC_FN),
                ("ctx_calloc", prototypes.CTX_CALLOC_FN),
                ("ctx_realloc", prototypes.CTX_REALLOC_FN),
                ("ctx_sized_free", prototypes.CTX_SIZED_FREE_FN),
            )
        ]
        struct = PyDataMemHandler(HANDLER_NAME.encode(), 1, PyDataMemAllocator(None, *fns))
        handler = _Handler(heap, alloc, struct, capi.new_handler_capsule(struct))
        _handlers[key] = handler
        try:
            heap.plugins.register(_close_watch, name="memguard.numpy")
        except PluginValidationError:
            pass  # registered with an earlier handler over this heap
        return handler


def _reclaim() -> None:
    """Forget the handlers nothing refers to any more (lock held).

    NumPy holds a handler's capsule from every array made with it and from every
    thread's context where it is current: a capsule only this module refers to is used
    by no array and no thread, so its handler (and its trampoline slots, released when
    its allocator is collected) can go.
    """
    for key, handler in list(_handlers.items()):
        if handler not in _active and sys.getrefcount(handler.capsule) <= _CAPSULE_REFS:
            del _handlers[key]


class _CloseWatch:
    """A plugin on each heap NumPy allocates from: when the heap closes, NumPy stops using it.

    The closing thread gets NumPy's own handler back and new threads no longer get the
    heap's; threads still running with it get ``MemoryError`` for new arrays.
    """

    @hookimpl
    def memguard_unconfigure(self, heap: Any) -> None:
        with _lock:
            _active[:] = [h for h in _active if h.heap is not heap]
            stack = getattr(_replaced, "stack", None)
            if installed() is heap:
                _capi().set_handler(_default[0])
                if stack:
                    stack.clear()


_close_watch = _CloseWatch()


def _patch_threads() -> None:
    """Make every thread started from now on install the current handler first (once)."""
    global _threads_patched
    with _lock:
        if _threads_patched:
            return
        original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

        def _bootstrap_inner(self: threading.Thread) -> None:
            handler = _active[-1] if _active else None
            if handler is not None and not handler.heap.closed:
                try:
                    _capi().set_handler(handler.capsule)
                except Exception:  # noqa: BLE001 - the thread runs on NumPy's handler instead
                    pass
            original(self)

        threading.Thread._bootstrap_inner = _bootstrap_inner  # type: ignore[attr-defined]
        _threads_patched = True


def install(heap: GuardedHeap | None = None, *, check_free_size: bool = False) -> GuardedHeap:
    """Put the data of every NumPy array made from now on onto ``heap``; return the heap.

    :param heap: a :class:`~memguard.GuardedHeap`; the process heap
        (:func:`memguard.install`) by default.
    :param check_free_size: report NumPy's sized frees whose size is not the block's
        (``free-size-mismatch``).

    Applies to the calling thread and to every thread started afterwards.  Installing
    again (another heap, or the same) stacks: :func:`uninstall` goes back one step.

    :raises TrampolineUnavailableError: memguard has no exception-preserving trampolines.
    :raises ImportError: NumPy (>= 1.26) is not installed.
    :raises HeapClosedError: ``heap`` is closed.
    """
    trampoline.require(_INTEGRATION)
    if heap is None:
        from memguard.process import install as install_process_heap

        heap = install_process_heap()
    if not isinstance(heap, GuardedHeap):
        raise TypeError(f"memguard.numpy.install() needs a GuardedHeap, got {type(heap).__name__}")
    if not isinstance(check_free_size, bool):
        raise TypeError(f"check_free_size must be a bool, got {type(check_free_size).__name__}")
    if heap.closed:
        raise HeapClosedError("memguard.numpy.install(): the heap is closed")
    handler = _handler_for(heap, check_free_size)
    capi = _capi()
    _patch_threads()
    # Leak reports leave out the blocks of arrays the program still reaches.
    retention.add_retainer(reachability.retainer)
    with _lock:
        old = capi.set_handler(handler.capsule)
        stack = getattr(_replaced, "stack", None)
        if stack is None:
            stack = _replaced.stack = []
        stack.append(old)
        _active.append(handler)
    return heap


def uninstall() -> None:
    """Undo the last :func:`install`: the calling thread gets back the handler it replaced,
    and threads started from now on get the one before (NumPy's own when none).

    Arrays made meanwhile keep freeing into their heap.  Threads already running keep
    the handler they have until they end.  A no-op when nothing is installed.
    """
    with _lock:
        if _active:
            _active.pop()
        stack = getattr(_replaced, "stack", None)
        if stack:
            _capi().set_handler(stack.pop())
        elif installed() is not None:
            _capi().set_handler(_default[0])


def installed() -> GuardedHeap | None:
    """The heap of the calling thread's current NumPy handler, when it is memguard's."""
    if not _handlers:
        return None
    current = _capi().get_handler()
    with _lock:
        for handler in _handlers.values():
            if handler.capsule is current:
                return handler.heap
    return None


@contextmanager
def guarded(heap: GuardedHeap | None = None, *, check_free_size: bool = False) -> Iterator[GuardedHeap]:
    """:func:`install` for the ``with`` block (this thread and the threads it starts)."""
    h = install(heap, check_free_size=check_free_size)
    try:
        yield h
    finally:
        uninstall()
