"""The guarded heap and its parts: layout, canaries, the lock, the fast paths."""

from __future__ import annotations

from memguard.heap.guarded import (
    ARENA_SIZE,
    HEADER_SIZE,
    MAX_BLOCK,
    SMALL_MAX,
    BlockInfo,
    GuardedHeap,
    HeapStats,
    InvalidAddressError,
)

__all__ = ["GuardedHeap", "BlockInfo", "HeapStats", "InvalidAddressError", "SMALL_MAX", "ARENA_SIZE", "HEADER_SIZE", "MAX_BLOCK"]
