"""The guarded heap and its parts: layout, canaries, the lock, the fast paths, verification.

The public names are the heap and the values it hands out; the modules
(:mod:`~memguard.heap.layout`, :mod:`~memguard.heap.fastpaths`,
:mod:`~memguard.heap.verify`, :mod:`~memguard.heap.walk`, :mod:`~memguard.heap.canary`,
:mod:`~memguard.heap.mutex`) are memguard's own.
"""

from __future__ import annotations

from memguard.heap.guarded import GuardedHeap, InvalidAddressError
from memguard.heap.layout import (
    ARENA_SIZE,
    HEADER_SIZE,
    MAX_BLOCK,
    SMALL_MAX,
    BlockInfo,
    HeapRegion,
    HeapSlot,
    HeapStats,
)

__all__ = [
    "GuardedHeap",
    "BlockInfo",
    "HeapStats",
    "HeapRegion",
    "HeapSlot",
    "InvalidAddressError",
    "SMALL_MAX",
    "ARENA_SIZE",
    "HEADER_SIZE",
    "MAX_BLOCK",
]
