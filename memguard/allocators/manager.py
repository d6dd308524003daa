"""A memory manager with a budget: typed allocations, pools, garbage collection, defragmentation.

The documented API of Raxol's graphics ``MemoryManager``, on the guarded heap.  Every
allocation and every pool chunk is an allocation of one
:class:`~memguard.BlockAllocator` (regions declared to a :class:`~memguard.MemPool`), so:

* ``allocated`` (the bytes of the live allocations plus every pool chunk) never goes over
  ``total_budget``: a request that does not fit runs a garbage collection, then raises
  :class:`~memguard.errors.BudgetExceededError`;
* a pool hands out its free chunks by its strategy: ``"fifo"`` the chunk returned
  longest ago, ``"lifo"`` the one returned last, ``"lru"`` the one accessed least
  recently, ``"adaptive"`` LIFO (the warmest chunk) and, at each garbage collection,
  frees the chunks idle for :data:`ADAPTIVE_IDLE` seconds while the pool holds more than
  ``initial_count``;
* ``garbage_collect()`` frees the allocations with no reference whose lifetime
  (:data:`LIFETIMES`) has passed since their last access, by the manager's clock, and
  those whose owner (held weakly) died;
* ``defragment()`` runs the block allocator's defragmenter: ids stay valid and
  :meth:`MemoryManager.access` returns a view at the new place;
* misuse is a finding: ``manager-wrong-pool`` (naming both pools), ``manager-double-free``
  (both stacks), ``manager-over-release``, ``manager-leak`` at :meth:`MemoryManager.close`
  (grouped by type and allocation site), and a write through a view kept after
  ``deallocate``, a collection or a defragmentation move is a ``pool-use-after-free``
  naming which of them retired the memory.

Each change is announced to the ``memguard_manager_event`` hook.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from types import MappingProxyType
from typing import Any, Callable, Container

from memguard.allocators.blocks import BlockAllocator
from memguard.allocators.manager_records import (
    ADAPTIVE_IDLE,
    GC_STRATEGIES,
    LIFETIMES,
    POOL_STRATEGIES,
    RETIRED_MEMORY,
    USAGES,
    AllocationInfo,
    MemoryPool,
    MemoryStats,
    Chunk,
    choice_arg,
    Entry,
    PoolRecord,
    str_arg,
)
from memguard.arguments import int_arg
from memguard.checker import Checker
from memguard.errors import (
    AllocationNotFoundError,
    BudgetExceededError,
    HeapClosedError,
    PoolExhaustedError,
    PoolExistsError,
    PoolNotFoundError,
)
from memguard.heap.guarded import GuardedHeap
from memguard.heapmaps import HeapMap, MapBlock, MapRow, site_text
from memguard.report import Report
from memguard.stacks import StackTable

__all__ = ["MemoryManager", "AllocationInfo", "MemoryPool", "MemoryStats", "LIFETIMES", "USAGES",
           "POOL_STRATEGIES", "GC_STRATEGIES", "ADAPTIVE_IDLE"]
_getframe = sys._getframe


class MemoryManager(Checker):
    """A memory budget over a :class:`~memguard.BlockAllocator` of the guarded heap (see the module).

    :param total_budget: bytes the allocations and pool chunks may hold together (> 0).
    :param pool_strategy: the strategy of a pool created without one (:data:`POOL_STRATEGIES`).
    :param gc_strategy: :data:`GC_STRATEGIES`.
    :param heap: the :class:`~memguard.GuardedHeap` the pages come from (``None``: a heap of
        its own, closed with the manager; ``memguard.install()`` for the process heap).
    :param clock: seconds, for lifetimes and idle chunks (``time.monotonic``; inject a fake in tests).
    :param name: the manager's name in reports and allocation ids.
    :param page_size: bytes of each page of the block allocator.
    """

    def __init__(self, total_budget: int, pool_strategy: str = "adaptive", gc_strategy: str = "generational",
                 heap: GuardedHeap | None = None, clock: Callable[[], float] = time.monotonic,
                 name: str = "manager", page_size: int = 1 << 20) -> None:
        budget = int_arg(total_budget, "total_budget")
        if budget < 1:
            raise ValueError(f"total_budget must be > 0, got {budget}")
        self.pool_strategy = choice_arg(pool_strategy, "pool_strategy", POOL_STRATEGIES)
        self.gc_strategy = choice_arg(gc_strategy, "gc_strategy", GC_STRATEGIES)
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        name = str_arg(name, "name")
        self._blocks = BlockAllocator(page_size=page_size, heap=heap, name=name, margin=16)
        self.heap = self._blocks.heap
        super().__init__(name=name, heap=self.heap, on_error=None)
        self._clock = clock
        self._budget = budget
        self._allocated = 0
        self._peak = 0
        self._lock = threading.RLock()
        self._entries: dict[str, Entry] = {}
        self._generations: dict[str, OrderedDict[str, Entry]] = {k: OrderedDict() for k in LIFETIMES}
        self._pools: dict[str, PoolRecord] = {}
        self._retired: OrderedDict[str, tuple[int, int, str]] = OrderedDict()
        self._dead: deque[str] = deque()
        self._stacks = StackTable(self.heap.stack_depth)
        self._serial = 0
        self._closed = False

    # ------------------------------------------------------------------ helpers
    @property
    def blocks(self) -> BlockAllocator:
        """The block allocator holding every allocation and pool chunk."""
        return self._blocks

    @property
    def total_budget(self) -> int:
        """The budget in bytes."""
        return self._budget

    def _usable(self) -> None:
        if self._closed:
            raise HeapClosedError(f"the memory manager {self.name!r} is closed")

    def _now(self) -> float:
        return float(self._clock())

    def _entry(self, aid: object) -> Entry:
        e = self._entries.get(aid) if isinstance(aid, str) else None
        if e is not None:
            return e
        if not isinstance(aid, str):
            raise TypeError(f"allocation id must be a str, got {type(aid).__name__}")
        gone = self._retired.get(aid)
        why = f" (it was retired by {gone[2]})" if gone is not None else ""
        raise AllocationNotFoundError(f"memory manager {self.name!r} holds no allocation {aid!r}{why}", self.name, aid)

    def _pool(self, pid: object) -> PoolRecord:
        p = self._pools.get(pid) if isinstance(pid, str) else None
        if p is None:
            raise PoolNotFoundError(f"memory manager {self.name!r} has no pool {pid!r}", self.name, str(pid))
        return p

    def _reserve(self, n: int, what: str) -> None:
        """Make room for ``n`` more bytes (collecting first if needed) or raise BudgetExceededError."""
        if self._allocated + n > self._budget:
            self._collect(self._now())
        if self._allocated + n > self._budget:
            raise BudgetExceededError(
                f"{what}: {n} bytes requested, but memory manager {self.name!r} has {self._allocated} of its "
                f"{self._budget}-byte budget allocated ({self._budget - self._allocated} available)",
                self.name, n, self._budget, self._allocated,
            )

    def _charge(self, n: int) -> None:
        self._allocated += n
        if self._allocated > self._peak:
            self._peak = self._allocated

    def _view(self, e: Entry) -> memoryview:
        block = e.block if e.chunk is None else e.chunk.block
        assert block is not None
        view = block.view()[: e.size]
        return view.toreadonly() if e.usage == "read_only" else view

    def _new_entry(self, size: int, kind: object, usage: object, lifetime: object, depth: int) -> Entry:
        kind = str_arg(kind, "type")
        usage = choice_arg(usage, "usage", USAGES)
        lifetime = choice_arg(lifetime, "lifetime", LIFETIMES)
        self._serial += 1
        asid = self._stacks.capture(_getframe(depth))
        return Entry(f"{self.name}-{self._serial}", size, kind, usage, lifetime, self._now(), asid)

    def _watch(self, e: Entry, owner: object) -> None:
        """Hold ``owner`` weakly; when it dies, ``e`` is queued for the next collection."""
        if owner is not None:
            dead = self._dead
            aid = e.id
            try:
                e.owner = weakref.ref(owner, lambda _r: dead.append(aid))
            except TypeError:
                raise TypeError(f"owner must be weakly referenceable, got {type(owner).__name__}") from None

    def _register(self, e: Entry) -> None:
        self._entries[e.id] = e
        self._generations[e.lifetime][e.id] = e

    def _retire(self, e: Entry, how: str, sid: int) -> None:
        """Forget ``e`` and give its memory back (to its pool, or to the block allocator)."""
        del self._entries[e.id]
        del self._generations[e.lifetime][e.id]
        self._retired[e.id] = (e.asid, sid, how)
        if len(self._retired) > RETIRED_MEMORY:
            self._retired.popitem(last=False)
        if e.chunk is not None:
            assert e.pool is not None
            e.chunk.entry = None
            e.chunk.returned_at = self._now()
            e.pool.free.append(e.chunk)
            return
        assert e.block is not None
        self._blocks.free(e.block, note=f"freed by {how} of memory manager {self.name!r} ({e.id}, type {e.type!r})")
        self._allocated -= e.size

    def _finding(self, kind: str, e_or_aid: Entry | str, message: str, alloc: int, freed: int,
                 **extra: Any) -> Report:
        stacks = self._stacks
        aid = e_or_aid if isinstance(e_or_aid, str) else e_or_aid.id
        size = 0 if isinstance(e_or_aid, str) else e_or_aid.size
        return Report(
            kind=kind, size=size, stack=stacks.get(stacks.capture(_getframe(2))),
            alloc_stack=stacks.get(alloc) if alloc else (), free_stack=stacks.get(freed) if freed else (),
            message=message, extra={"manager": self.name, "allocation": aid, **extra},
        )

    def _announce(self, event: str, aid: str | None) -> None:
        if self.observes("memguard_manager_event"):
            self.notify("memguard_manager_event", manager=self, event=event, allocation_id=aid,
                        stats=self._stats())

    # ------------------------------------------------------------------ allocations
    def allocate(self, size: int, type: str = "generic", usage: str = "read_write", lifetime: str = "medium",
                 owner: object = None) -> tuple[str, memoryview]:
        """``size`` bytes within the budget: ``(id, view)`` (a read-only view for ``usage="read_only"``).

        ``owner`` (held weakly) ties the allocation to an object: once it dies, the next
        :meth:`garbage_collect` frees the allocation.
        """
        size = int_arg(size, "size")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        with self.hold_errors(), self._lock:
            self._usable()
            e = self._new_entry(size, type, usage, lifetime, 2)
            self._watch(e, owner)
            self._reserve(size, f"allocate({size})")
            e.block = self._blocks.allocate(size, align=16)
            self._register(e)
            self._charge(size)
            view = self._view(e)
            self._announce("allocate", e.id)
            return e.id, view

    def info(self, aid: str) -> AllocationInfo:
        """What the manager knows about the allocation ``aid``."""
        with self._lock:
            return self._info(self._entry(aid))

    def _info(self, e: Entry) -> AllocationInfo:
        return AllocationInfo(e.id, e.size, e.type, e.usage, e.lifetime, e.allocated_at, e.last_accessed, e.refs,
                              e.pool.id if e.pool is not None else None, self._stacks.get(e.asid))

    def allocations(self) -> list[AllocationInfo]:
        """Every live allocation, oldest first."""
        with self._lock:
            return [self._info(e) for e in self._entries.values()]

    def access(self, aid: str) -> memoryview:
        """A view of ``aid`` at its current place (take a new one after :meth:`defragment`); marks it accessed."""
        with self._lock:
            self._usable()
            e = self._entry(aid)
            e.last_accessed = self._now()
            self._generations[e.lifetime].move_to_end(e.id)
            if e.chunk is not None:
                e.chunk.last_accessed = e.last_accessed
            return self._view(e)

    def add_ref(self, aid: str) -> int:
        """Take a reference to ``aid`` (a referenced allocation is never collected); return the count."""
        with self._lock:
            self._usable()
            e = self._entry(aid)
            e.refs += 1
            return e.refs

    def release(self, aid: str) -> int:
        """Drop a reference to ``aid``; at the last one it is freed.  Return the count left.

        A release with no reference held is a ``manager-over-release`` finding (nothing changes).
        """
        with self.hold_errors(), self._lock:
            self._usable()
            e = self._entry(aid)
            if e.refs == 0:
                self.emit([self._finding(
                    "manager-over-release", e,
                    f"release of allocation {e.id} of memory manager {self.name!r}, which holds no reference "
                    f"(call add_ref() first)", e.asid, 0)])
                return 0
            e.refs -= 1
            if e.refs == 0:
                self._retire(e, "release()", self._stacks.capture(_getframe(1)))
                self._announce("release", e.id)
            return e.refs

    def deallocate(self, aid: str) -> None:
        """Free ``aid`` (a pooled allocation goes back to its pool); a second time is a ``manager-double-free``."""
        with self.hold_errors(), self._lock:
            self._usable()
            if self._double(aid, "deallocate"):
                return
            self._retire(self._entry(aid), "deallocate()", self._stacks.capture(_getframe(1)))
            self._announce("deallocate", aid)

    def _double(self, aid: object, what: str) -> bool:
        if not isinstance(aid, str) or aid in self._entries or aid not in self._retired:
            return False
        asid, fsid, how = self._retired[aid]
        self.emit([self._finding(
            "manager-double-free", aid,
            f"attempting {what}() of allocation {aid} of memory manager {self.name!r}, already retired by {how}",
            asid, fsid, retired_by=how)])
        return True

    # ------------------------------------------------------------------ pools
    def create_pool(self, pool_id: str, chunk_size: int, initial_count: int = 0, max_count: int | None = None,
                    strategy: str | None = None) -> MemoryPool:
        """A pool of ``chunk_size``-byte chunks: ``initial_count`` made now, up to ``max_count`` on demand."""
        pool_id = str_arg(pool_id, "pool_id")
        chunk_size = int_arg(chunk_size, "chunk_size")
        initial = int_arg(initial_count, "initial_count")
        maximum = max(initial, 1) if max_count is None else int_arg(max_count, "max_count")
        strategy = self.pool_strategy if strategy is None else choice_arg(strategy, "strategy", POOL_STRATEGIES)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if maximum < max(initial, 1):
            raise ValueError(f"max_count ({maximum}) must be >= initial_count ({initial}) and >= 1")
        with self.hold_errors(), self._lock:
            self._usable()
            if pool_id in self._pools:
                raise PoolExistsError(f"memory manager {self.name!r} already has a pool {pool_id!r}", self.name,
                                      pool_id)
            self._reserve(initial * chunk_size, f"create_pool({pool_id!r}) of {initial} x {chunk_size} bytes")
            pool = PoolRecord(pool_id, chunk_size, initial, maximum, strategy, self._now())
            for _ in range(initial):
                self._grow(pool)
            self._pools[pool_id] = pool
            self._announce("create_pool", None)
            return pool.value()

    def _grow(self, pool: PoolRecord) -> Chunk:
        chunk = Chunk(self._blocks.allocate(pool.chunk_size, align=16), self._now())
        pool.chunks.append(chunk)
        pool.free.append(chunk)
        self._charge(pool.chunk_size)
        return chunk

    def pools(self) -> dict[str, MemoryPool]:
        """Every pool, by id."""
        with self._lock:
            return {p.id: p.value() for p in self._pools.values()}

    def allocate_from_pool(self, pool_id: str, type: str = "generic", usage: str = "read_write",
                           lifetime: str = "medium", owner: object = None) -> tuple[str, memoryview]:
        """A chunk of the pool, picked by its strategy (growing it within ``max_count`` and the budget).

        A full pool at ``max_count`` is garbage-collected before :class:`PoolExhaustedError` is raised.
        """
        with self.hold_errors(), self._lock:
            self._usable()
            pool = self._pool(pool_id)
            e = self._new_entry(pool.chunk_size, type, usage, lifetime, 2)
            self._watch(e, owner)
            if not pool.free and len(pool.chunks) >= pool.max:
                self._collect(self._now())  # expired allocations of the pool go back to it
            if not pool.free:
                if len(pool.chunks) >= pool.max:
                    raise PoolExhaustedError(
                        f"pool {pool.id!r} of memory manager {self.name!r} has all its {pool.max} chunks in use",
                        self.name, pool.id, pool.max)
                self._reserve(pool.chunk_size, f"allocate_from_pool({pool.id!r})")
                if not pool.free:  # a collection may have returned chunks
                    self._grow(pool)
            chunk = pool.take()
            chunk.entry = e
            chunk.last_accessed = e.allocated_at
            e.chunk, e.pool = chunk, pool
            self._register(e)
            view = self._view(e)
            self._announce("allocate_from_pool", e.id)
            return e.id, view

    def return_to_pool(self, pool_id: str, aid: str) -> None:
        """Give ``aid`` back to ``pool_id``; an allocation of another pool (or none) is a ``manager-wrong-pool``."""
        with self.hold_errors(), self._lock:
            self._usable()
            pool = self._pool(pool_id)
            if self._double(aid, "return_to_pool"):
                return
            e = self._entry(aid)
            if e.pool is not pool:
                origin = f"pool {e.pool.id!r}" if e.pool is not None else "no pool (it came from allocate())"
                self.emit([self._finding(
                    "manager-wrong-pool", e,
                    f"return_to_pool({pool.id!r}, {e.id!r}): allocation {e.id} of memory manager {self.name!r} "
                    f"comes from {origin}, not from pool {pool.id!r}", e.asid, 0,
                    pool=pool.id, origin=e.pool.id if e.pool is not None else None)])
                return
            self._retire(e, f"return_to_pool({pool.id!r})", self._stacks.capture(_getframe(1)))
            self._announce("return_to_pool", aid)

    # ------------------------------------------------------------------ collection, defragmentation, budget
    def garbage_collect(self) -> MemoryStats:
        """Free the expired unreferenced allocations and those whose owner died; shrink idle adaptive pools."""
        with self.hold_errors(), self._lock:
            self._usable()
            self._collect(self._now())
            self._announce("garbage_collect", None)
            return self._stats()

    def _collect(self, now: float) -> int:
        freed = 0
        sid = 0
        while self._dead:
            e = self._entries.get(self._dead.popleft())
            if e is not None and e.refs == 0 and e.owner is not None and e.owner() is None:
                sid = sid or self._stacks.capture(_getframe(1))
                self._retire(e, "garbage_collect() (its owner died)", sid)
                freed += 1
        if self.gc_strategy == "generational":
            for lifetime, generation in self._generations.items():
                limit = now - LIFETIMES[lifetime]
                expired = []
                for e in generation.values():
                    if e.last_accessed > limit:
                        break
                    if e.refs == 0:
                        expired.append(e)
                for e in expired:
                    sid = sid or self._stacks.capture(_getframe(1))
                    self._retire(e, f"garbage_collect() (its {lifetime!r} lifetime of {LIFETIMES[lifetime]:g} s "
                                    f"expired)", sid)
                freed += len(expired)
        for pool in self._pools.values():
            if pool.strategy == "adaptive":
                self._shrink(pool, now)
        return freed

    def _shrink(self, pool: PoolRecord, now: float) -> None:
        idle = [c for c in pool.free if now - max(c.last_accessed, c.returned_at) >= ADAPTIVE_IDLE]
        for c in idle[: max(0, len(pool.chunks) - pool.initial)]:
            pool.free.remove(c)
            pool.chunks.remove(c)
            self._blocks.free(c.block, note=f"an idle chunk of adaptive pool {pool.id!r} freed by garbage_collect()")
            self._allocated -= pool.chunk_size

    def defragment(self, algorithm: str = "full") -> MemoryStats:
        """Run the block allocator's defragmenter (ids stay valid; views taken before a move are stale)."""
        with self.hold_errors(), self._lock:
            self._usable()
            self._blocks.defragment(algorithm)
            self._announce("defragment", None)
            return self._stats()

    def set_budget(self, total_budget: int) -> None:
        """Change the budget; below what is allocated, collect first, then refuse with BudgetExceededError."""
        budget = int_arg(total_budget, "total_budget")
        if budget < 1:
            raise ValueError(f"total_budget must be > 0, got {budget}")
        with self.hold_errors(), self._lock:
            self._usable()
            if budget < self._allocated:
                self._collect(self._now())
            if budget < self._allocated:
                raise BudgetExceededError(
                    f"set_budget({budget}): memory manager {self.name!r} still has {self._allocated} bytes "
                    f"allocated after garbage collection", self.name, budget, self._budget, self._allocated)
            self._budget = budget
            self._announce("set_budget", None)

    # ------------------------------------------------------------------ statistics and maps
    def get_stats(self) -> MemoryStats:
        """The manager's counters now."""
        with self._lock:
            return self._stats()

    def _stats(self) -> MemoryStats:
        pools = MappingProxyType({p.id: p.value() for p in self._pools.values()})
        frag = self._blocks.stats().fragmentation if not self._blocks.closed else 0.0
        return MemoryStats(self._budget, self._allocated, self._budget - self._allocated, self._peak,
                           len(self._entries), pools, frag)

    def snapshot(self) -> tuple[MemoryStats, tuple[AllocationInfo, ...]]:
        """The counters and every live allocation, taken together (one consistent state)."""
        with self._lock:
            return self._stats(), tuple(self._info(e) for e in self._entries.values())

    def layout_map(self, leaked: Container[str] = (), width: int | None = None, title: str = "") -> HeapMap:
        """The manager as a :class:`~memguard.heapmaps.HeapMap`: a row per page of its block allocator.

        Allocations (and pool chunks handed out) are live, the ids in ``leaked`` are drawn
        leaked, free pool chunks and free ranges free; tooltips name the id, type, pool
        and allocation site.  ``width`` merges sub-pixel blocks.
        """
        with self._lock:
            self._usable()
            by_address: dict[int, tuple[str, str]] = {}
            for e in self._entries.values():
                block = e.block if e.chunk is None else e.chunk.block
                assert block is not None
                where = f" of pool {e.pool.id!r}" if e.pool is not None else ""
                text = f"{e.id} {e.type!r}{where} at {site_text(self._stacks.get(e.asid))}"
                by_address[block.address] = ("leaked" if e.id in leaked else "live", text)
            for pool in self._pools.values():
                for c in pool.free:
                    by_address[c.block.address] = ("free", f"available chunk of pool {pool.id!r}")
            base = self._blocks.layout_map()
            rows = []
            for row in base.rows:
                items = []
                for b in row.blocks:
                    if b.state != "free" and b.address in by_address:
                        state, text = by_address[b.address]
                        b = b._replace(state=state, site=text if width is None else "")
                    items.append(b)
                rows.append(MapRow(row.label, row.address, row.size, tuple(items)))
        m = HeapMap(title or f"memory manager {self.name!r}", tuple(rows), base.fragmentation)
        if width is None:
            return m

        def site_of(b: MapBlock) -> str:
            return by_address.get(b.address, ("", ""))[1] if b.state != "free" else ""

        return m.aggregated(width, site_of)

    # ------------------------------------------------------------------ the checker contract
    def verify(self) -> list[Report]:
        """Nothing of its own: the block allocator's regions are verified by the heap."""
        return []

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> list[Report]:
        """Free everything; allocations still live are ``manager-leak`` findings, one per type and site."""
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            groups: dict[tuple[str, int], list[Entry]] = {}
            for e in self._entries.values():
                groups.setdefault((e.type, e.asid), []).append(e)
            entries, self._entries = self._entries, {}
            pools, self._pools = self._pools, {}
            heap_alive = not self.heap.closed and not self._blocks.closed
            if heap_alive:
                for e in entries.values():
                    if e.block is not None:
                        self._blocks.free(e.block)
                for pool in pools.values():
                    for c in pool.chunks:
                        self._blocks.free(c.block)
            self._allocated = 0
            reports = [self._leak(kind, asid, es) for (kind, asid), es in groups.items()]
        try:
            if reports and heap_alive:
                self.emit(reports)
        finally:
            self._blocks.close()
        return reports

    def _leak(self, kind: str, asid: int, entries: list[Entry]) -> Report:
        stack = self._stacks.get(asid)
        total = sum(e.size for e in entries)
        ids = ", ".join(e.id for e in entries[:5]) + (" …" if len(entries) > 5 else "")
        return Report(
            kind="manager-leak", size=total, count=len(entries), alloc_stack=stack,
            message=(f"{len(entries)} allocation(s) of type {kind!r} ({total} bytes: {ids}) still live when memory "
                     f"manager {self.name!r} closed, allocated at {site_text(stack)}"),
            extra={"manager": self.name, "type": kind, "ids": [e.id for e in entries]},
        )

    def __enter__(self) -> MemoryManager:
        return self

    def __exit__(self, *exc: Any) -> None:
        """Close the manager."""
        self.close()

    def __repr__(self) -> str:
        return (f"<MemoryManager {self.name!r}: {self._allocated}/{self._budget} bytes, "
                f"{len(self._entries)} allocations, {len(self._pools)} pools>")
