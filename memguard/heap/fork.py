"""Heaps across ``os.fork()``: a child can always allocate, and knows what it inherited.

A forked child has one thread: the one that called ``fork()``.  A lock another parent
thread held at that moment stays held in the child, by a thread that does not exist
there, and the child's first allocation would wait for it forever.  So handlers
registered with :func:`os.register_at_fork` (once per process, holding the heaps
weakly) take every heap's locks before the fork, in the order the heap itself takes
them, and give them back after it, in the parent and in the child alike: the child
inherits consistent tables.  A lock that cannot be taken within
:data:`ACQUIRE_TIMEOUT` seconds (its holder is stuck) is left alone in the parent and
reset in the child, so the fork itself never hangs either.

The child starts with the parent's blocks marked as inherited (see
:attr:`~memguard.GuardedHeap.inherited_serial`): they are the parent's to free and to
report as leaks, so :meth:`~memguard.GuardedHeap.leaks` and the exit report leave them
out unless asked; the findings the parent had recorded are the parent's to report too.
Everything else is checked in the child as usual, the inherited blocks included: their
redzones and their poison, and their frees.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

from memguard.heap.mutex import Mutex

if TYPE_CHECKING:
    from memguard.checker import Checker
    from memguard.heap.guarded import GuardedHeap

__all__ = ["ACQUIRE_TIMEOUT", "track", "track_checker", "after_fork_in_child"]

#: Seconds the parent waits, before a fork, for another thread to leave a heap.
ACQUIRE_TIMEOUT = 2.0

_heaps: weakref.WeakSet[GuardedHeap] = weakref.WeakSet()
#: Checkers over no heap (an allocator that manages offsets only), with locks of their own.
_standalone: weakref.WeakSet[Checker] = weakref.WeakSet()
_registered = False
_registry_lock = threading.Lock()
#: What the handler before the fork took: ``(heap or None, its checkers, [(release, reset) ...])``.
_taken: list[tuple[GuardedHeap | None, list[Checker], list[tuple[Callable[[], None], Callable[[], None]]]]] = []
#: Called in the child after the heaps are reset (the process heap's own state).
_child_hooks: list[Callable[[], None]] = []


def track(heap: GuardedHeap) -> None:
    """Have ``heap`` made consistent across forks (held weakly), with every checker registered
    over it (their :meth:`~memguard.Checker.fork_locks`); registers the handlers once."""
    with _registry_lock:
        _heaps.add(heap)
        _register()


def track_checker(checker: Checker) -> None:
    """The same for a checker over no heap (held weakly)."""
    with _registry_lock:
        _standalone.add(checker)
        _register()


def _register() -> None:
    """Register the handlers, once (with the registry lock held)."""
    global _registered
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)
        _registered = True


def after_fork_in_child(hook: Callable[[], None]) -> None:
    """Run ``hook()`` in every forked child, after the heaps are ready (once per hook)."""
    if hook not in _child_hooks:
        _child_hooks.append(hook)


def _take_mutex(mutex: Mutex, deadline: float) -> tuple[Callable[[], None], Callable[[], None]] | None:
    """Take ``mutex``'s token before the deadline: ``(give it back, reset)``, or ``None``
    when this thread already holds it (it goes on holding it in the child)."""
    if mutex.held():
        return None
    tries = 0
    while True:
        try:
            mutex.take()
            return (lambda: mutex.give(True)), mutex.reset_after_fork
        except IndexError:
            if time.monotonic() > deadline:
                return (lambda: None), mutex.reset_after_fork  # left alone: reset in the child
            time.sleep(0 if tries < 1000 else 1e-4)
            tries += 1


def _take_lock(lock: Any, deadline: float) -> tuple[Callable[[], None], Callable[[], None]] | None:
    """Take a ``threading`` lock before the deadline: ``(release, release in the child)``."""
    if lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
        return lock.release, lock.release
    # Left alone; in the child its holder does not exist: the lock is made new there.
    return (lambda: None), lock._at_fork_reinit


def _checkers_over(owner: Checker) -> list[Checker]:
    """The checkers registered over ``owner``, outermost first (the newest made first: an
    allocator makes the ones it uses before it is registered itself), each followed by
    its own: the order in which they take each other's locks."""
    found: list[Checker] = []
    for checker in reversed(owner.registered()):
        found.append(checker)
        found.extend(_checkers_over(checker))
    return found


def _take_all(parts: list[Any], deadline: float) -> list[tuple[Callable[[], None], Callable[[], None]]]:
    taken = []
    for part in parts:
        got = _take_mutex(part, deadline) if isinstance(part, Mutex) else _take_lock(part, deadline)
        if got is not None:
            taken.append(got)
    return taken


def _before() -> None:
    """Before ``fork()``: take every checker's locks, then every heap's (evictor, then
    lock, as the heap does)."""
    _registry_lock.acquire()
    deadline = time.monotonic() + ACQUIRE_TIMEOUT
    _taken.clear()
    for checker in list(_standalone):
        checkers = [checker, *_checkers_over(checker)]
        _taken.append((None, checkers, _take_all([p for c in checkers for p in c.fork_locks()], deadline)))
    for heap in list(_heaps):
        checkers = [] if heap.closed else _checkers_over(heap)
        parts = [p for c in checkers for p in c.fork_locks()] + heap.fork_locks()
        _taken.append((heap, checkers, _take_all(parts, deadline)))


def _after_in_parent() -> None:
    """After ``fork()``, in the parent: give every lock back."""
    try:
        for _, _, taken in reversed(_taken):
            for release, _ in reversed(taken):
                release()
    finally:
        _taken.clear()
        _registry_lock.release()


def _after_in_child() -> None:
    """After ``fork()``, in the child: locks back (reset when their holder was elsewhere),
    the parent's blocks and findings marked as inherited."""
    global _registry_lock
    try:
        for heap, checkers, taken in reversed(_taken):
            for _, reset in reversed(taken):
                reset()
            if heap is not None:
                heap.mark_inherited()
            for checker in checkers:
                checker.after_fork_in_child()
    finally:
        _taken.clear()
        _registry_lock = threading.Lock()
    for hook in list(_child_hooks):
        hook()
