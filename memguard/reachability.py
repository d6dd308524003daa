"""LeakSanitizer's reachability, applied to Python: which objects a program still reaches.

A block of a NumPy array is *retained*, not leaked, while the array is reachable from a
Python root: a module's globals, or a live frame of any thread (whose locals reach a
cache, a fixture's value, an object's attributes ...).  A block whose array is alive but
unreachable from every root (a reference leaked in C code, which Python's garbage
collector cannot see) is a definite leak.

:func:`reachable_ids` walks the object graph from the roots for given objects (the
ctypes arrays and cffi buffers of :mod:`memguard.heap.arrays` and :mod:`memguard.cffi`,
judged by :func:`weak_retainer`); :func:`reachable_blocks` walks it from the roots with
:func:`gc.get_referents` (breadth-first, one batch per level, each object once), and
follows each array's ``base`` by hand (NumPy arrays do not report their referents to the
collector).  An array that owns its data contributes its data address.  The walk visits
every reachable object, so it is done only when there are candidate blocks to judge
(:func:`retainer` returns at once for none).
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["reachable_blocks", "reachable_ids", "retainer", "roots", "weak_retainer"]


def roots() -> list[Any]:
    """The roots of the walk: every module's globals and the locals of every thread's live frames.

    A frame that is still executing does not show its locals to the garbage collector,
    so each one's ``f_locals`` is a root of its own.
    """
    found: list[Any] = [sys.modules]
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if namespace is not None:
            found.append(namespace)
    for top in sys._current_frames().values():
        frame = top
        while frame is not None:
            if frame.f_code.co_filename != __file__:  # (the walk's own frames hold only what it seeks)
                found.append(frame.f_locals)
            frame = frame.f_back
    top = frame = None  # no frame kept by this function
    return found


def reachable_blocks(addresses: Collection[int] | None = None) -> set[int]:
    """The data addresses of the NumPy arrays that own their data and are reachable.

    :param addresses: when given, the walk stops as soon as all of them were found.
    """
    ndarray = sys.modules.get("numpy", None)
    ndarray = getattr(ndarray, "ndarray", None)
    if ndarray is None:
        return set()
    wanted = set(addresses) if addresses is not None else None
    found: set[int] = set()
    frontier = roots()
    try:
        _walk(frontier, ndarray, found, wanted)
    finally:
        # The lists hold this thread's own frame: cleared, they keep nothing alive in a cycle.
        frontier.clear()
    return found


def _walk(frontier: list[Any], ndarray: type, found: set[int], wanted: set[int] | None) -> None:
    """Breadth-first from ``frontier``; the data addresses of owning arrays go into ``found``."""
    seen = {id(o) for o in frontier}
    get_referents = gc.get_referents
    level: list[Any] = []
    while frontier:
        level: list[Any] = []
        for obj in get_referents(*frontier):
            key = id(obj)
            if key in seen:
                continue
            seen.add(key)
            level.append(obj)
            if isinstance(obj, ndarray):
                base = obj
                while isinstance(base, ndarray):
                    if base.flags.owndata:
                        found.add(base.__array_interface__["data"][0])
                        break
                    nxt = base.base
                    if nxt is None:
                        break
                    if id(nxt) not in seen:
                        seen.add(id(nxt))
                        level.append(nxt)
                    base = nxt
        frontier.clear()
        if wanted is not None and wanted <= found:
            break
        frontier.extend(level)
        level.clear()
    level.clear()


def retainer(heap: Any, addresses: Collection[int]) -> set[int]:
    """The retainer :mod:`memguard.numpy` registers: the candidates that are not leaks.

    A garbage collection runs first (an array held only by garbage awaiting collection is
    freed by it, not leaked); then the candidates freed meanwhile and those whose array is
    reachable are returned.
    """
    if not addresses:
        return set()
    gc.collect()
    gone = {a for a in addresses if heap.live_serial(a) == 0}
    rest = set(addresses) - gone
    if not rest:
        return gone
    return gone | (reachable_blocks(rest) & rest)


def reachable_ids(wanted: Collection[int]) -> set[int]:
    """The ids among ``wanted`` of objects reachable from a Python root (:func:`roots`).

    Breadth-first with :func:`gc.get_referents`, each object once, stopping as soon as
    every wanted id was found.  The caller's frames are roots like any other: they must
    hold the ids, not the objects.
    """
    wanted = set(wanted)
    found: set[int] = set()
    if not wanted:
        return found
    frontier = roots()
    seen = {id(o) for o in frontier}
    get_referents = gc.get_referents
    level: list[Any] = []
    try:
        while frontier and found != wanted:
            level = []
            for obj in get_referents(*frontier):
                key = id(obj)
                if key not in seen:
                    seen.add(key)
                    level.append(obj)
                    if key in wanted:
                        found.add(key)
            frontier = level
    finally:
        frontier = level = []  # (they hold this thread's own frames' locals)
    return found


def weak_retainer(heap: Any, owners: Mapping[int, weakref.ReferenceType[Any]]) -> set[int]:
    """The blocks of ``owners`` (block address -> a weak reference to the Python object that
    owns it) that are not leaks: freed by a garbage collection, or owned by an object still
    reachable.  A retainer's body for objects that own a block each.
    """
    if not owners:
        return set()
    gc.collect()
    gone = {a for a in owners if heap.live_serial(a) == 0}
    ids: dict[int, int] = {}
    for address, ref in owners.items():
        obj = ref()
        if obj is not None and address not in gone:
            ids[id(obj)] = address
        obj = None
    return gone | {ids[i] for i in reachable_ids(ids)}
