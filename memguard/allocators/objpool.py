"""An instrumented fixed-size object pool (the pool of Movian's ``src/misc/pool.c``).

Objects are rounded up to the alignment, chunks of ``objects_per_chunk`` objects are
allocated from the guarded heap and carved into a free list, and the pool counts
allocations, frees, outstanding and peak objects, as the original does.  Unlike the
original, every object is announced to memguard through :class:`~memguard.MemPool`, so
the pool also detects what the C version could not:

* a double :meth:`~ObjectPool.put` (``pool-double-free``) and a put of a foreign pointer
  (``pool-bad-free``), without corrupting the free list;
* a write to an object after it was put back (``pool-use-after-free``): returned objects
  wait in a FIFO quarantine, poisoned, before they are handed out again;
* an overflow from one object into the next (``pool-buffer-overflow``): each object is
  followed by at least ``redzone`` bytes of no-man's land;
* objects still outstanding at :meth:`~ObjectPool.destroy`, each reported with its
  allocation stack ("Leak at 0x… (site)").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Container

from memguard.allocators.mempool import MemPool
from memguard.checker import Checker
from memguard.heap.guarded import GuardedHeap
from memguard.heapmaps import HeapMap, MapBlock, MapRow, fragmentation_of
from memguard.kinds import error_for
from memguard.report import Report

__all__ = ["ObjectPool", "PoolStats"]



@dataclass(frozen=True)
class PoolStats:
    """Counters of an :class:`ObjectPool` (the original's statistics and a few more).

    :ivar object_size: bytes requested per object.
    :ivar stride: bytes between consecutive objects (object size + redzone, aligned).
    :ivar allocations: ``get()`` calls that returned an object.
    :ivar frees: accepted ``put()`` calls.
    :ivar outstanding: objects handed out and not yet put back.
    :ivar peak: the largest ``outstanding`` seen.
    :ivar free: objects ready to be handed out.
    :ivar quarantined: objects put back and still poisoned in the quarantine.
    :ivar chunks: chunks allocated from the heap.
    :ivar reserved_bytes: bytes of those chunks.
    """

    object_size: int
    stride: int
    objects_per_chunk: int
    allocations: int
    frees: int
    outstanding: int
    peak: int
    free: int
    quarantined: int
    chunks: int
    reserved_bytes: int


class ObjectPool(Checker):
    """A fixed-size object pool whose objects memguard can see.

    A :class:`~memguard.checker.Checker` over its heap (findings, ``on_error`` and plugins
    are the heap's); its objects are declared to a :class:`~memguard.MemPool`, which the
    heap's ``check()`` verifies.

    :param object_size: bytes per object (>= 1).
    :param objects_per_chunk: objects carved from each heap chunk.
    :param align: object alignment, a power of two (64, a cache line, as in the original).
    :param zero: zero each object on ``get()`` (the original's ``memset``); otherwise
        objects come filled with 0xCD, which shows reads of uninitialised fields.
    :param heap: the :class:`~memguard.GuardedHeap` chunks come from; ``None`` makes a
        private heap that :meth:`destroy` closes.
    :param redzone: bytes of no-man's land at least after each object (0 packs objects
        like the original and gives up overflow detection between them).
    :param quarantine: objects kept poisoned after ``put()`` before reuse (0: reuse at once).
    :param name: the pool's name in reports.
    """

    def __init__(
        self,
        object_size: int,
        objects_per_chunk: int = 256,
        align: int = 64,
        zero: bool = False,
        heap: GuardedHeap | None = None,
        redzone: int = 16,
        quarantine: int = 64,
        name: str = "objpool",
    ) -> None:
        for arg, value in (("object_size", object_size), ("objects_per_chunk", objects_per_chunk), ("align", align),
                           ("redzone", redzone), ("quarantine", quarantine)):
            if type(value) is not int:
                raise TypeError(f"{arg} must be an int, got {type(value).__name__}")
        if not 1 <= object_size <= 1 << 30:
            raise ValueError(f"object_size must be between 1 and 2**30, got {object_size}")
        if not 1 <= objects_per_chunk <= 1 << 20:
            raise ValueError(f"objects_per_chunk must be between 1 and 2**20, got {objects_per_chunk}")
        if align < 1 or align & (align - 1) or align > 4096:
            raise ValueError(f"align must be a power of two between 1 and 4096, got {align}")
        if not 0 <= redzone <= 4096:
            raise ValueError(f"redzone must be between 0 and 4096, got {redzone}")
        if quarantine < 0:
            raise ValueError(f"quarantine must be >= 0, got {quarantine}")
        if not isinstance(zero, bool):
            raise TypeError(f"zero must be a bool, got {type(zero).__name__}")
        if heap is not None and not isinstance(heap, GuardedHeap):
            raise TypeError(f"heap must be a GuardedHeap or None, got {type(heap).__name__}")
        self.object_size = object_size
        self.objects_per_chunk = objects_per_chunk
        self.align = align
        self.zero = zero
        self.redzone = redzone
        self.stride = -(-(object_size + redzone) // align) * align
        self._own_heap = heap is None
        self.heap = heap if heap is not None else GuardedHeap(name=f"{name}-heap")
        super().__init__(name=name, heap=self.heap, on_error=None)
        self._chunk_align = max(align, 16)
        self._lock = threading.Lock()
        self._free: list[int] = []
        self._chunks: list[int] = []
        self._allocations = 0
        self._frees = 0
        self._peak = 0
        self._destroyed = False
        self._fill = 0 if zero else 0xCD
        self.mempool = MemPool(
            self.heap, name=name, quarantine_bytes=quarantine * object_size, owner=self,
        )

    def _add_chunk(self) -> None:
        size = self.stride * self.objects_per_chunk
        if self._chunk_align > 16:
            chunk = self.heap.memalign(self._chunk_align, size)
        else:
            chunk = self.heap.malloc(size)
        self.mempool.add_chunk(chunk)
        self._chunks.append(chunk)
        stride = self.stride
        # Pushed in reverse so that the first object of the chunk is handed out first.
        self._free.extend(range(chunk + stride * (self.objects_per_chunk - 1), chunk - 1, -stride))

    def get(self) -> int:
        """Hand out one object: its address (aligned, ``object_size`` usable bytes)."""
        if self._destroyed:
            raise ValueError(f"the object pool {self.name!r} was destroyed")
        mp = self.mempool
        # A finding (a write to an object while it was quarantined) is raised once the
        # counters agree with the pool again.
        with self.hold_errors(), self._lock:
            address = 0
            while not address:
                if not self._free:
                    self._add_chunk()
                address = mp.alloc(self._free.pop(), self.object_size, self._fill)
                if address:
                    self._allocations += 1
                    outstanding = self._allocations - self._frees
                    if outstanding > self._peak:
                        self._peak = outstanding
        return address

    def put(self, address: int) -> None:
        """Give an object back.  ``put(0)`` is a no-op, as ``mempool_free(pool, NULL)`` is.

        A double put or a put of an address this pool never handed out is reported
        (``pool-double-free`` / ``pool-bad-free``) and changes nothing.
        """
        if self._destroyed:
            raise ValueError(f"the object pool {self.name!r} was destroyed")
        if type(address) is not int:
            if isinstance(address, bool) or not hasattr(address, "__index__") or isinstance(address, (float, str, bytes)):
                raise TypeError(f"address must be an int, got {type(address).__name__}")
            address = address.__index__()  # type: ignore[attr-defined]
        if address == 0:
            return
        if address < 0:
            raise ValueError(f"address must be >= 0, got {address}")
        with self.hold_errors(), self._lock:
            released = self.mempool.free(address)
            if released is not None:
                self._frees += 1
                self._free.extend(released)

    def view(self, address: int) -> memoryview:
        """A writable memoryview of the ``object_size`` bytes of a live object."""
        region = self.mempool.region(address)
        if region.state != "live":
            raise ValueError(f"0x{address:x} is not a live object of pool {self.name!r}")
        for chunk in self._chunks:
            if chunk <= address < chunk + self.stride * self.objects_per_chunk:
                off = address - chunk
                return self.heap.view(chunk)[off : off + self.object_size]
        raise ValueError(f"0x{address:x} is not in a chunk of pool {self.name!r}")  # pragma: no cover

    def stats(self) -> PoolStats:
        """The pool's counters."""
        with self._lock:
            quarantined = self.mempool.stats().quarantined_regions if not self._destroyed else 0
            return PoolStats(
                object_size=self.object_size,
                stride=self.stride,
                objects_per_chunk=self.objects_per_chunk,
                allocations=self._allocations,
                frees=self._frees,
                outstanding=self._allocations - self._frees,
                peak=self._peak,
                free=len(self._free),
                quarantined=quarantined,
                chunks=len(self._chunks),
                reserved_bytes=len(self._chunks) * self.stride * self.objects_per_chunk,
            )

    def layout_map(self, leaked: Container[int] = (), width: int | None = None) -> HeapMap:
        """The pool as a :class:`~memguard.heapmaps.HeapMap`: a row per chunk (by address), each object in its slot.

        An object handed out is ``"live"`` (``"leaked"`` when its address is in ``leaked``),
        one put back and still poisoned ``"quarantined"``, one ready to be handed out
        ``"free"``; each is drawn over its ``object_size`` bytes, so the redzones between
        objects are unused.  Fragmentation is over the runs of free slots of each chunk.
        ``width`` merges sub-pixel objects as :meth:`HeapMap.aggregated` does.  A destroyed
        pool has no chunk: its map has no row.
        """
        title = f"object pool {self.name!r}"
        with self._lock:
            if self._destroyed:
                return HeapMap(title, (), 0.0, ("destroyed",))
            held = {b.address: b for r in self.mempool.layout_map(leaked).rows for b in r.blocks}
            free = set(self._free)
            chunks = sorted((c, i) for i, c in enumerate(self._chunks))
        size, stride, per = self.object_size, self.stride, self.objects_per_chunk
        rows = []
        runs: list[int] = []
        for chunk, index in chunks:
            blocks = []
            run = 0
            for k in range(per):
                address = chunk + k * stride
                b = held.get(address)
                if b is None and address in free:
                    b = MapBlock(k * stride, size, "free", address=address)
                if b is not None and b.state == "free":
                    run += stride
                elif run:
                    runs.append(run)
                    run = 0
                if b is not None:
                    blocks.append(b._replace(offset=k * stride))
            if run:
                runs.append(run)
            rows.append(MapRow(f"chunk {index}", chunk, stride * per, tuple(blocks)))
        m = HeapMap(title, tuple(rows), fragmentation_of(runs),
                    (f"{size}-byte objects every {stride} bytes, {per} a chunk",))
        return m if width is None else m.aggregated(width)

    def check(self) -> list[Report]:
        """Verify every object's redzones and every returned object's poison now."""
        return self.mempool.check()

    @property
    def destroyed(self) -> bool:
        """Whether :meth:`destroy` was called."""
        return self._destroyed

    def destroy(self) -> list[Report]:
        """Free every chunk; each object still outstanding is a ``memory-leak`` report.

        The report's message is the original's ``Leak at 0x… (site)`` with the allocation
        site; its ``alloc_stack`` is the full stack.  Findings follow the heap's
        ``on_error`` (with ``"raise"``, the first is raised after the pool is gone).
        Destroying twice is a no-op.
        """
        if self._destroyed:
            return []
        self._destroyed = True
        with self.heap.reporting() as saved:
            reports = self.mempool.destroy()
            for chunk in self._chunks:
                self.heap.free(chunk)
            self._chunks.clear()
            self._free.clear()
            if self._own_heap:
                reports = reports + self.heap.close()
        if reports and saved == "raise":
            raise error_for(reports[0])
        return reports

    #: Whether the pool was destroyed (:meth:`close` is :meth:`destroy`).
    closed = destroyed

    def close(self) -> list[Report]:
        """:meth:`destroy` the pool (the checker contract's name for it)."""
        return self.destroy()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Destroy the pool (findings are raised only when no exception is in flight)."""
        self.destroy()

    def __repr__(self) -> str:
        s = self.stats()
        return f"<ObjectPool {self.name!r}: {s.object_size}-byte objects, {s.outstanding} outstanding, peak {s.peak}>"
