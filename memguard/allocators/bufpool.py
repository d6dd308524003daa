"""A memory-budgeted buffer pool (the ``BufPool`` of frozen_core), checked by memguard.

Every :meth:`BufPool.allocate` hands out ``n`` fixed-size buffers in one contiguous block
of the guarded heap, and reserves ``n * buffer_size`` bytes of the pool's budget
(``max_memory``).  A caller whose request does not fit waits until releases make room
(backpressure).  Waiters are served **first come, first served**: a request that fits
still queues behind earlier waiters, so a large request is never starved by small ones.

An allocation is released by :meth:`BufAllocation.release`, by leaving its ``with``
block, or when it is garbage collected (the original's RAII).  The memory goes back to
the guarded heap, so the heap reports writes through a stale view or address
(``heap-use-after-free``), overflows past the last buffer (``heap-buffer-overflow``) and
allocations live at the end of a test (``memory-leak``, with the allocating line).  The
pool itself reports what only it can see:

* ``bufpool-double-release``: a second ``release()`` of one allocation, with both
  release stacks;
* ``memory-leak``: allocations still live when a ``with BufPool(...)`` block closes it.

:meth:`BufPool.close` is the original's blocking drop: it waits until every allocation is
released (with a ``timeout``, it raises :class:`~memguard.errors.BufPoolTimeoutError`
naming every live allocation and its allocation stack, and leaves the pool open).  Every
allocation, release and close is announced to the ``memguard_bufpool_event`` hook with a
consistent snapshot of the pool's counters and live allocations.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Container, Iterator

from memguard.arguments import int_arg
from memguard.checker import Checker
from memguard.errors import BufPoolClosedError, BufPoolTimeoutError
from memguard.findings import thread_label
from memguard.heap.guarded import GuardedHeap
from memguard.heapmaps import HeapMap, MapBlock, MapRow, site_text
from memguard.report import Report
from memguard.stacks import Stack, StackTable

__all__ = ["BufPool", "BufPoolStats", "BufAllocation", "BufAllocationInfo", "MAX_BUFFERS"]

#: The most buffers one allocation may hold (the original's ``u16::MAX`` soft limit).
MAX_BUFFERS = 0xFFFF
#: Longest single sleep of a waiter: a release made by the garbage collector while this
#: thread held the pool's lock is noticed within this many seconds.
_SLICE = 1.0
_getframe = sys._getframe


@dataclass(frozen=True)
class BufPoolStats:
    """Counters of a :class:`BufPool`.

    :ivar buffer_size: bytes per buffer.
    :ivar max_memory: the budget in bytes.
    :ivar used_bytes: bytes reserved by live allocations.
    :ivar peak_bytes: the largest ``used_bytes`` seen.
    :ivar active_allocations: allocations not yet released.
    :ivar waiting: callers waiting for room now.
    :ivar total_allocations: allocations handed out.
    :ivar total_waits: allocations that had to wait.
    :ivar total_timeouts: waits that ran out of time.
    """

    buffer_size: int
    max_memory: int
    used_bytes: int
    peak_bytes: int
    active_allocations: int
    waiting: int
    total_allocations: int
    total_waits: int
    total_timeouts: int


@dataclass(frozen=True)
class BufAllocationInfo:
    """A live allocation as reports, errors and hooks show it.

    :ivar address: the first buffer's address (0 while the heap block is being made).
    :ivar length: the number of buffers.
    :ivar nbytes: ``length * buffer_size``.
    :ivar serial: the pool's allocation number (1 for the first).
    :ivar alloc_stack: where it was allocated, most recent call first.
    :ivar pool: the pool's name.
    """

    address: int
    length: int
    nbytes: int
    serial: int
    alloc_stack: Stack
    pool: str

    def __str__(self) -> str:
        site = str(self.alloc_stack[0]) if self.alloc_stack else "<unknown>"
        return f"{self.length} buffer(s) at 0x{self.address:x} ({self.nbytes} bytes), allocated at {site}"


@dataclass(slots=True)
class _Live:
    """The pool's record of one allocation (its budget is reserved while it is in ``_live``)."""

    serial: int
    length: int
    nbytes: int
    asid: int
    address: int = 0
    released: bool = False
    fsid: int = 0


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
    return float(timeout)


class BufAllocation:
    """``n`` contiguous buffers handed out by :meth:`BufPool.allocate`.

    Released by :meth:`release`, at the end of a ``with`` block, or when garbage
    collected.  Keep the allocation referenced while its memory is used: a view or an
    address does not keep it alive.
    """

    __slots__ = ("_pool", "_rec", "_finalizer", "__weakref__")

    def __init__(self, pool: BufPool, rec: _Live) -> None:
        self._pool = pool
        self._rec = rec
        finalizer = weakref.finalize(self, pool._collected, rec)
        finalizer.atexit = False  # at interpreter exit the memory is left for the exit report
        self._finalizer = finalizer

    @property
    def address(self) -> int:
        """The address of the first buffer."""
        return self._rec.address

    @property
    def length(self) -> int:
        """The number of buffers."""
        return self._rec.length

    @property
    def allocated_bytes(self) -> int:
        """``length * buffer_size``."""
        return self._rec.nbytes

    @property
    def serial(self) -> int:
        """The pool's allocation number (1 for the first; in the order requests were served)."""
        return self._rec.serial

    @property
    def buffer_size(self) -> int:
        """Bytes per buffer."""
        return self._pool.buffer_size

    @property
    def released(self) -> bool:
        """Whether the allocation was released."""
        return self._rec.released

    def __len__(self) -> int:
        return self._rec.length

    def __iter__(self) -> Iterator[int]:
        """The buffer addresses, ``buffer_size`` apart."""
        return iter(range(self._rec.address, self._rec.address + self._rec.nbytes, self._pool.buffer_size))

    def _live_view(self) -> memoryview:
        if self._rec.released:
            raise ValueError(f"the allocation at 0x{self._rec.address:x} of pool {self._pool.name!r} was released")
        return self._pool.heap.view(self._rec.address)

    def view(self) -> memoryview:
        """A writable memoryview of all the buffers (``allocated_bytes`` bytes)."""
        return self._live_view()

    def buffer(self, i: int) -> memoryview:
        """A writable memoryview of buffer ``i`` (``0 <= i < length``)."""
        i = int_arg(i, "i")
        if i >= self._rec.length:
            raise IndexError(f"buffer {i} of an allocation of {self._rec.length} buffer(s)")
        size = self._pool.buffer_size
        return self._live_view()[i * size : (i + 1) * size]

    def release(self) -> None:
        """Give the buffers back (a second release is a ``bufpool-double-release`` finding)."""
        self._finalizer.detach()
        self._pool._release(self._rec, self._pool._stacks.capture(_getframe(1)))

    def __enter__(self) -> BufAllocation:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Release, unless the block already did."""
        if not self._rec.released:
            self.release()

    def __repr__(self) -> str:
        state = "released" if self._rec.released else "live"
        return f"<BufAllocation {self._rec.length} x {self._pool.buffer_size} at 0x{self._rec.address:x} ({state})>"


class BufPool(Checker):
    """A pool of fixed-size buffers under a memory budget, on the guarded heap.

    A :class:`~memguard.checker.Checker` over its heap: its findings, ``on_error`` and
    plugins are the heap's, and it is registered with the heap (so under
    ``pytest --memguard`` a test that leaves an allocation live or releases one twice
    fails).  Thread-safe.

    :param buffer_size: bytes per buffer, a power of two from 8 to 16384.
    :param max_memory: the budget in bytes, larger than ``buffer_size``.
    :param heap: the :class:`~memguard.GuardedHeap` the buffers come from; ``None`` makes
        a private heap, closed with the pool.
    :param name: the pool's name in reports.
    """

    def __init__(
        self,
        buffer_size: int = 4096,
        max_memory: int = 64 << 20,
        heap: GuardedHeap | None = None,
        name: str = "bufpool",
    ) -> None:
        buffer_size = int_arg(buffer_size, "buffer_size")
        max_memory = int_arg(max_memory, "max_memory")
        if not 8 <= buffer_size <= 16384 or buffer_size & (buffer_size - 1):
            raise ValueError(f"buffer_size must be a power of two from 8 to 16384, got {buffer_size}")
        if max_memory <= buffer_size:
            raise ValueError(f"max_memory ({max_memory}) must be larger than buffer_size ({buffer_size})")
        if heap is not None and not isinstance(heap, GuardedHeap):
            raise TypeError(f"heap must be a GuardedHeap or None, got {type(heap).__name__}")
        self.buffer_size = buffer_size
        self.max_memory = max_memory
        self._own_heap = heap is None
        self.heap = heap if heap is not None else GuardedHeap(name=f"{name}-heap")
        super().__init__(name=name, heap=self.heap, on_error=None)
        self._stacks = StackTable(self.heap.stack_depth)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._local = threading.local()
        #: Allocations the garbage collector released while their thread held the lock.
        self._pending: deque[_Live] = deque()
        self._live: dict[int, _Live] = {}
        self._queue: deque[object] = deque()
        self._used = 0
        self._peak = 0
        self._serial = 0
        self._waits = 0
        self._timeouts = 0
        self._closing = False
        self._closed = False

    # ------------------------------------------------------------------ locking
    def _enter(self) -> None:
        # Marked before the lock is taken: a collector-run release in this thread from
        # here on only queues itself (taking the lock would deadlock).
        self._local.holding = True
        self._lock.acquire()

    def _leave(self) -> None:
        while True:
            try:
                self._drain()
            finally:
                self._lock.release()
                self._local.holding = False
            if not self._pending:  # (a release the collector queued after the drain)
                return
            self._enter()

    def _drain(self) -> None:
        """Finish the releases the collector queued (lock held)."""
        while self._pending:
            rec = self._pending.popleft()
            with self.heap.deferred_errors():
                self._free_memory(rec)
            self._unreserve(rec)

    def _unreserve(self, rec: _Live) -> None:
        if self._live.pop(rec.serial, None) is not None:
            self._used -= rec.nbytes
            self._cond.notify_all()

    def _free_memory(self, rec: _Live) -> None:
        if rec.address and not self.heap.closed:
            self.heap.free(rec.address)

    # ------------------------------------------------------------------ values
    def _info(self, rec: _Live) -> BufAllocationInfo:
        return BufAllocationInfo(rec.address, rec.length, rec.nbytes, rec.serial, self._stacks.get(rec.asid), self.name)

    def _stats(self) -> BufPoolStats:
        return BufPoolStats(
            buffer_size=self.buffer_size,
            max_memory=self.max_memory,
            used_bytes=self._used,
            peak_bytes=self._peak,
            active_allocations=len(self._live),
            waiting=len(self._queue),
            total_allocations=self._serial,
            total_waits=self._waits,
            total_timeouts=self._timeouts,
        )

    def _snapshot(self) -> tuple[BufPoolStats, tuple[BufAllocationInfo, ...]]:
        return self._stats(), tuple(self._info(r) for r in self._live.values())

    def _announce(self, event: str, rec: _Live | None, snapshot: tuple[BufPoolStats, tuple[BufAllocationInfo, ...]] | None) -> None:
        if snapshot is not None:
            self.notify(
                "memguard_bufpool_event", pool=self, event=event,
                allocation=self._info(rec) if rec is not None else None, stats=snapshot[0], live=snapshot[1],
            )

    # ------------------------------------------------------------------ allocation
    def allocate(self, n: int, timeout: float | None = None) -> BufAllocation:
        """``n`` contiguous buffers; waits (first come, first served) while they do not fit.

        :param n: buffers, 1 to 65535, with ``n * buffer_size <= max_memory``.
        :param timeout: seconds to wait at most (``None``: as long as it takes).
        :raises BufPoolTimeoutError: (a ``TimeoutError``) no room within ``timeout``.
        :raises BufPoolClosedError: the pool is closed, or ``close()`` began while waiting.
        """
        n = int_arg(n, "n")
        if not 1 <= n <= MAX_BUFFERS:
            raise ValueError(f"n must be between 1 and {MAX_BUFFERS}, got {n}")
        nbytes = n * self.buffer_size
        if nbytes > self.max_memory:
            raise ValueError(
                f"{n} buffers of {self.buffer_size} bytes ({nbytes}) exceed max_memory ({self.max_memory}) of pool {self.name!r}"
            )
        wait = _check_timeout(timeout)
        sid = self._stacks.capture(_getframe(1))
        rec = self._reserve(n, nbytes, sid, wait)
        try:
            rec.address = self.heap.malloc(nbytes)
            allocation = BufAllocation(self, rec)
        except BaseException:
            self._enter()
            try:
                self._free_memory(rec)
                self._unreserve(rec)
            finally:
                self._leave()
            raise
        if self.observes("memguard_bufpool_event"):
            self._enter()
            try:
                snapshot = self._snapshot()
            finally:
                self._leave()
            self._announce("allocate", rec, snapshot)
        return allocation

    def _closed_error(self, n: int) -> BufPoolClosedError:
        return BufPoolClosedError(f"the buffer pool {self.name!r} is closed", self.name, n)

    def _reserve(self, n: int, nbytes: int, sid: int, timeout: float | None) -> _Live:
        """Wait for room, in turn, and reserve ``nbytes`` of the budget."""
        self._enter()
        try:
            if self._closing or self._closed:
                raise self._closed_error(n)
            if self._queue or self._used + nbytes > self.max_memory:
                self._wait_turn(n, nbytes, timeout)
            self._serial += 1
            rec = self._live[self._serial] = _Live(self._serial, n, nbytes, sid)
            self._used += nbytes
            if self._used > self._peak:
                self._peak = self._used
            return rec
        finally:
            self._leave()

    def _wait_turn(self, n: int, nbytes: int, timeout: float | None) -> None:
        """Queue and wait (lock held) until first in line with room; leave the queue however it ends."""
        ticket = object()
        self._queue.append(ticket)
        self._waits += 1
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                self._drain()
                if self._closing or self._closed:
                    raise self._closed_error(n)
                if self._queue[0] is ticket and self._used + nbytes <= self.max_memory:
                    return
                remaining = _SLICE if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    self._timeouts += 1
                    raise BufPoolTimeoutError(
                        f"pool {self.name!r}: no room for {n} buffer(s) ({nbytes} bytes) within {timeout} s "
                        f"({self._used} of {self.max_memory} bytes in use)",
                        self.name, float(timeout or 0.0),
                    )
                self._cond.wait(min(remaining, _SLICE))
        finally:
            self._queue.remove(ticket)
            self._cond.notify_all()  # the next in line may go now

    # ------------------------------------------------------------------ release
    def _release(self, rec: _Live, sid: int) -> None:
        """Release ``rec`` (from :meth:`BufAllocation.release`); a second release is a finding."""
        self._enter()
        try:
            again = rec.released
            first = rec.fsid
            if not again:
                rec.released = True
                rec.fsid = sid
        finally:
            self._leave()
        if again:
            self.emit([self._double_release(rec, first, sid)])
            return
        try:
            self._free_memory(rec)
        finally:
            self._enter()
            try:
                self._unreserve(rec)
                snapshot = self._snapshot() if self.observes("memguard_bufpool_event") else None
            finally:
                self._leave()
            self._announce("release", rec, snapshot)

    def _double_release(self, rec: _Live, first: int, sid: int) -> Report:
        return Report(
            kind="bufpool-double-release", address=rec.address, size=rec.nbytes, serial=rec.serial,
            alloc_stack=self._stacks.get(rec.asid), free_stack=self._stacks.get(first), stack=self._stacks.get(sid),
            thread=thread_label(), count=rec.length, extra={"pool": self.name},
            message=(
                f"attempting double release of 0x{rec.address:x}, an allocation of {rec.length} buffer(s) "
                f"({rec.nbytes} bytes) already released to pool {self.name!r}"
            ),
        )

    def _collected(self, rec: _Live) -> None:
        """The finalizer of a garbage allocation: release it, never raising."""
        if rec.released:
            return
        rec.released = True
        if getattr(self._local, "holding", False):
            self._pending.append(rec)  # this thread holds the lock: the holder finishes it
            return
        try:
            with self.heap.deferred_errors():
                self._free_memory(rec)
        except Exception:  # noqa: BLE001 - a finalizer: the heap records its own findings
            pass
        self._enter()
        try:
            self._unreserve(rec)
            snapshot = self._snapshot() if self.observes("memguard_bufpool_event") else None
        finally:
            self._leave()
        with self.deferred_errors():
            self._announce("release", rec, snapshot)

    # ------------------------------------------------------------------ inspection
    def stats(self) -> BufPoolStats:
        """The pool's counters."""
        self._enter()
        try:
            return self._stats()
        finally:
            self._leave()

    def allocations(self) -> list[BufAllocationInfo]:
        """The live allocations, oldest first."""
        self._enter()
        try:
            return [self._info(r) for r in self._live.values()]
        finally:
            self._leave()

    def layout_map(self, leaked: Container[int] = (), width: int | None = None) -> HeapMap:
        """The pool as a :class:`~memguard.heapmaps.HeapMap`: its budget as one row, the live allocations by address.

        Each live allocation (its own block of the guarded heap) is drawn ``"live"``
        (``"leaked"`` when its address is in ``leaked``), in address order, end to end from
        the row's start, over its ``n * buffer_size`` bytes; the rest of the budget
        (``max_memory``) is drawn ``"free"``.  Tooltips give each allocation's address,
        buffers, serial and allocation site.  The budget does not fragment (each allocation
        is a heap block of its own): fragmentation is 0.  ``width`` merges sub-pixel
        allocations as :meth:`HeapMap.aggregated` does.  A closed pool's map has no row.
        """
        title = f"buffer pool {self.name!r}"
        self._enter()
        try:
            if self._closed:
                return HeapMap(title, (), 0.0, ("closed",))
            live = sorted((r.address, r.nbytes, r.length, r.serial, r.asid) for r in self._live.values() if r.address)
            sites = {asid: site_text(self._stacks.get(asid)) for *_, asid in live}
        finally:
            self._leave()
        blocks = []
        off = 0
        for address, nbytes, length, serial, asid in live:
            blocks.append(MapBlock(off, nbytes, "leaked" if address in leaked else "live", serial, sites[asid],
                                   address=address, what=f"{length} buffer(s) of {self.buffer_size} bytes"))
            off += nbytes
        if off < self.max_memory:
            blocks.append(MapBlock(off, self.max_memory - off, "free", what="budget not reserved"))
        row = MapRow(f"budget of {self.max_memory} bytes: live allocations by address", 0, max(self.max_memory, off),
                     tuple(blocks))
        m = HeapMap(title, (row,), 0.0, (f"{len(live)} live allocation(s) of {self.buffer_size}-byte buffers",))
        return m if width is None else m.aggregated(width)

    def verify(self) -> list[Report]:
        """Nothing of its own: the buffers are heap blocks, which the heap verifies."""
        return []

    def after_fork_in_child(self) -> None:
        """In a forked child: the callers waiting in the parent's other threads are not there."""
        self._queue.clear()

    # ------------------------------------------------------------------ lifetime
    @property
    def closed(self) -> bool:
        """Whether the pool is closed."""
        return self._closed

    def close(self, timeout: float | None = None) -> list[Report]:
        """Close the pool once every allocation is released (the original's blocking drop).

        From the call on, :meth:`allocate` raises :class:`BufPoolClosedError`, callers
        already waiting included.  Closing twice is a no-op.

        :param timeout: seconds to wait at most (``None``: as long as it takes).
        :raises BufPoolTimeoutError: allocations still live after ``timeout``; its ``live``
            lists them with their allocation stacks.  The pool stays open.
        """
        wait = _check_timeout(timeout)
        deadline = None if wait is None else time.monotonic() + wait
        self._enter()
        try:
            if self._closed:
                return []
            self._closing = True
            self._cond.notify_all()
            while True:
                self._drain()
                if not self._live:
                    break
                remaining = _SLICE if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    self._closing = False
                    live = tuple(self._info(r) for r in self._live.values())
                    lines = "\n".join(f"  {info}" for info in live)
                    raise BufPoolTimeoutError(
                        f"pool {self.name!r} not closed: {len(live)} allocation(s) still live after {wait} s:\n{lines}",
                        self.name, float(wait or 0.0), live,
                    )
                self._cond.wait(min(remaining, _SLICE))
            snapshot = self._finish()
        finally:
            self._leave()
        return self._finished(snapshot)

    def _finish(self) -> tuple[BufPoolStats, tuple[BufAllocationInfo, ...]] | None:
        self._closed = True
        self._cond.notify_all()
        return self._snapshot() if self.observes("memguard_bufpool_event") else None

    def _finished(self, snapshot: tuple[BufPoolStats, tuple[BufAllocationInfo, ...]] | None) -> list[Report]:
        self._announce("close", None, snapshot)
        if self._own_heap and not self.heap.closed:
            return self.heap.close()
        return []

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Close now, without waiting: each allocation still live is a ``memory-leak`` finding.

        The allocations stay usable; releasing one later gives its memory back to the heap.
        Findings are raised only when no exception is in flight.
        """
        self._enter()
        try:
            if self._closed:
                return
            self._drain()
            live = [self._info(r) for r in self._live.values()]
            snapshot = self._finish()
        finally:
            self._leave()
        reports = [
            Report(
                kind="memory-leak", address=info.address, size=info.nbytes, serial=info.serial,
                alloc_stack=info.alloc_stack, count=1, extra={"pool": self.name},
                message=(
                    f"Leak at 0x{info.address:x} ({info.alloc_stack[0] if info.alloc_stack else '<unknown>'}): "
                    f"{info.length} buffer(s) ({info.nbytes} bytes) of pool {self.name!r} live when it closed"
                ),
            )
            for info in live
        ]
        if exc_type is None:
            self.emit(reports)
        else:
            with self.reporting():
                self.emit(reports)
        self._finished(snapshot)

    def __repr__(self) -> str:
        s = self.stats()
        state = "closed" if self._closed else f"{s.active_allocations} live, {s.used_bytes}/{s.max_memory} bytes"
        return f"<BufPool {self.name!r}: {s.buffer_size}-byte buffers, {state}>"
