"""Retained blocks: live blocks a program still reaches, which a leak report leaves out.

LeakSanitizer reports a block as leaked only when nothing reachable points at it.  A
plain heap cannot tell (a pointer is an integer), but an integration that knows which
Python objects own blocks can: :mod:`memguard.numpy` knows that a NumPy array owns its
data block and asks Python's garbage collector which arrays are reachable.  Such an
integration registers a *retainer*, a function ``(heap, addresses) -> the addresses
that are not leaks`` (still reachable, or released since the list was made); the exit report and the pytest plugin pass their leak groups through
:func:`without_retained` before reporting them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any

from memguard.leaks import LeakGroup

__all__ = ["Retainer", "add_retainer", "remove_retainer", "retained", "without_retained"]

#: ``(heap, candidate addresses) -> the addresses among them that are not leaks (reachable, or released)``.
Retainer = Callable[[Any, Collection[int]], Collection[int]]

_lock = threading.Lock()
_retainers: list[Retainer] = []


def add_retainer(retainer: Retainer) -> None:
    """Register ``retainer`` (once; registering it again is a no-op)."""
    with _lock:
        if retainer not in _retainers:
            _retainers.append(retainer)


def remove_retainer(retainer: Retainer) -> None:
    """Unregister ``retainer`` (a no-op when it is not registered)."""
    with _lock:
        if retainer in _retainers:
            _retainers.remove(retainer)


def retained(heap: Any, addresses: Collection[int]) -> set[int]:
    """The addresses among ``addresses`` some retainer says are not leaks.

    A retainer that raises is skipped (with one line on stderr): a leak report is never
    lost to it, at worst it shows a retained block.
    """
    with _lock:
        retainers = list(_retainers)
    found: set[int] = set()
    for retainer in retainers:
        try:
            found.update(a for a in retainer(heap, addresses) if a in addresses)
        except Exception as exc:  # noqa: BLE001
            sys.stderr.write(f"memguard: retainer {retainer!r} failed: {type(exc).__name__}: {exc}\n")
    return found


def without_retained(heap: Any, groups: Sequence[LeakGroup]) -> list[LeakGroup]:
    """``groups`` without the blocks a retainer says are not leaks (a group left empty goes).

    Costs nothing when no retainer is registered or there is no group.
    """
    if not groups or not _retainers:
        return list(groups)
    candidates = {a for g in groups for a in g.addresses}
    keep = retained(heap, candidates)
    if not keep:
        return list(groups)
    result = []
    for g in groups:
        rest = tuple(a for a in g.addresses if a not in keep)
        if len(rest) == len(g.addresses):
            result.append(g)
        elif rest:
            size = sum(heap.block(a).size for a in rest)
            result.append(LeakGroup(g.stack, size, len(rest), rest))
    return result
