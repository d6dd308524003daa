"""The values and records of :mod:`memguard.allocators.manager`: constants, the frozen values it hands out, its tables."""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from memguard.allocators.blocks import Allocation
    from memguard.stacks import Frame

__all__ = ["Chunk", "PoolRecord", "Entry", "str_arg", "choice_arg", "AllocationInfo", "MemoryPool", "MemoryStats", "LIFETIMES", "USAGES", "POOL_STRATEGIES", "GC_STRATEGIES",
           "ADAPTIVE_IDLE", "RETIRED_MEMORY"]

#: Seconds an unreferenced allocation of each lifetime survives its last access.
LIFETIMES: Mapping[str, float] = MappingProxyType({"short": 60.0, "medium": 300.0, "long": 1800.0})
#: What an allocation's view allows (``"read_only"`` views are read-only).
USAGES = ("read_only", "write_only", "read_write")
#: How a pool picks the free chunk it hands out.
POOL_STRATEGIES = ("fifo", "lifo", "lru", "adaptive")
#: ``"generational"``: lifetimes expire; ``"none"``: only allocations whose owner died are collected.
GC_STRATEGIES = ("generational", "none")
#: Seconds a free chunk of an ``"adaptive"`` pool stays unused before a collection frees it.
ADAPTIVE_IDLE = 60.0
#: Retired ids remembered for ``manager-double-free`` findings (the oldest are forgotten).
RETIRED_MEMORY = 1 << 16


@dataclass(frozen=True)
class AllocationInfo:
    """One live allocation of a :class:`MemoryManager` (times by the manager's clock).

    :ivar pool: the pool it was taken from (``None`` for :meth:`MemoryManager.allocate`).
    :ivar alloc_stack: where it was allocated.
    """

    id: str
    size: int
    type: str
    usage: str
    lifetime: str
    allocated_at: float
    last_accessed: float
    reference_count: int
    pool: str | None = None
    alloc_stack: tuple[Frame, ...] = ()


@dataclass(frozen=True)
class MemoryPool:
    """One pool of a :class:`MemoryManager`: ``available + allocated == chunk_count``."""

    id: str
    chunk_size: int
    chunk_count: int
    max_chunks: int
    available: int
    allocated: int
    strategy: str
    created_at: float
    initial_count: int = 0


@dataclass(frozen=True)
class MemoryStats:
    """A manager's counters (bytes).

    ``allocated`` is the live allocations' bytes plus every pool chunk's; ``available`` is
    ``total_budget - allocated``; ``allocation_count`` counts live allocations (pooled
    ones too); ``fragmentation_ratio`` is the block allocator's ``1 - largest free range
    / free bytes`` (0.0 when nothing is free).
    """

    total_budget: int
    allocated: int
    available: int
    peak_usage: int
    allocation_count: int
    pool_stats: Mapping[str, MemoryPool]
    fragmentation_ratio: float


class Chunk:
    """A chunk of a pool: its block, when it was last accessed and returned, who holds it."""

    __slots__ = ("block", "last_accessed", "returned_at", "entry")

    def __init__(self, block: Allocation, now: float) -> None:
        self.block = block
        self.last_accessed = now
        self.returned_at = now
        self.entry: Entry | None = None


class PoolRecord:
    """A pool's table: its chunks and, in strategy order, the free ones."""

    __slots__ = ("id", "chunk_size", "initial", "max", "strategy", "created_at", "chunks", "free")

    def __init__(self, pid: str, chunk_size: int, initial: int, maximum: int, strategy: str, now: float) -> None:
        self.id = pid
        self.chunk_size = chunk_size
        self.initial = initial
        self.max = maximum
        self.strategy = strategy
        self.created_at = now
        self.chunks: list[Chunk] = []
        self.free: deque[Chunk] = deque()

    def take(self) -> Chunk:
        """Remove and return the free chunk the strategy picks."""
        if self.strategy == "fifo":
            return self.free.popleft()
        if self.strategy == "lru":
            best = min(self.free, key=lambda c: c.last_accessed)
            self.free.remove(best)
            return best
        return self.free.pop()

    def value(self) -> MemoryPool:
        """The pool as a :class:`MemoryPool` value."""
        n = len(self.chunks)
        return MemoryPool(self.id, self.chunk_size, n, self.max, len(self.free), n - len(self.free), self.strategy,
                          self.created_at, self.initial)


class Entry:
    """A live allocation's record."""

    __slots__ = ("id", "size", "type", "usage", "lifetime", "allocated_at", "last_accessed", "refs", "block",
                 "chunk", "pool", "owner", "asid")

    def __init__(self, aid: str, size: int, kind: str, usage: str, lifetime: str, now: float, asid: int) -> None:
        self.id = aid
        self.size = size
        self.type = kind
        self.usage = usage
        self.lifetime = lifetime
        self.allocated_at = now
        self.last_accessed = now
        self.refs = 0
        self.block: Allocation | None = None
        self.chunk: Chunk | None = None
        self.pool: PoolRecord | None = None
        self.owner: weakref.ref[Any] | None = None
        self.asid = asid


def str_arg(value: object, what: str) -> str:
    """``value`` if it is a non-empty str (TypeError otherwise)."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what} must be a non-empty str, got {value!r}")
    return value


def choice_arg(value: object, what: str, allowed: tuple[str, ...] | Mapping[str, float]) -> str:
    """``value`` if it is one of ``allowed`` (ValueError otherwise)."""
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)
