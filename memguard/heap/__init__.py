"""The guarded heap and its parts: layout, canaries, the lock, the fast paths, verification.

The public names are the heap and the values it hands out, each imported from its module
on first use (PEP 562), so that importing the value layer (:mod:`~memguard.heap.layout`)
does not load the heap.  The modules (:mod:`~memguard.heap.guarded`,
:mod:`~memguard.heap.layout`, :mod:`~memguard.heap.fastpaths`, :mod:`~memguard.heap.verify`,
:mod:`~memguard.heap.walk`, :mod:`~memguard.heap.canary`, :mod:`~memguard.heap.mutex`,
:mod:`~memguard.heap.c_allocator`) are memguard's own.
"""

from __future__ import annotations

from memguard._lazy import lazy_exports

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "GuardedHeap": "memguard.heap.guarded",
    "InvalidAddressError": "memguard.heap.guarded",
    "BlockInfo": "memguard.heap.layout",
    "HeapStats": "memguard.heap.layout",
    "HeapRegion": "memguard.heap.layout",
    "HeapSlot": "memguard.heap.layout",
    "SMALL_MAX": "memguard.heap.layout",
    "ARENA_SIZE": "memguard.heap.layout",
    "HEADER_SIZE": "memguard.heap.layout",
    "MAX_BLOCK": "memguard.heap.layout",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
