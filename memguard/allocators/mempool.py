"""Custom-allocator annotations: let memguard see the sub-blocks a pool carves out.

A pool (an object pool, a buddy allocator, an interning table) takes big blocks from
the guarded heap and hands out pieces of them.  To the heap those pieces are invisible:
an overflow from one object into the next stays inside one heap block.  :class:`MemPool`
is memguard's equivalent of Valgrind's mempool client requests and ASan's
poison/unpoison calls::

    pool = MemPool(heap, name="nodes")
    chunk = heap.malloc(4096)
    pool.add_chunk(chunk)                 # the whole chunk is now no-man's land (0xFA)
    pool.alloc(chunk + 16, 40)            # a live 40-byte region, filled with 0xCD
    pool.free(chunk + 16)                 # poisoned with 0xDD and quarantined

Every chunk byte outside a live region must keep its poison: 0xFA ("no-man's land",
which includes the redzones the pool leaves between regions) or 0xDD (a returned
region still in the pool's quarantine).  memguard verifies the poison when a region
is returned, when a quarantined region is reused or leaves the quarantine, and at
``pool.check()`` / ``heap.check()``, and reports, with allocation and return stacks:

* ``pool-buffer-overflow`` / ``pool-buffer-underflow``: bytes after / before a region
  changed (an overflow from one object into the next, when the pool leaves a gap);
* ``pool-use-after-free``: a returned region was written to;
* ``pool-double-free``: a region returned twice;
* ``pool-bad-free``: a return of an address the pool never handed out (foreign or interior),
  or a chunk whose heap block was freed while the pool used it (reported once, with the
  block's free stack, by the first operation or check that touches the chunk; nothing is
  handed out from it afterwards and its memory is never touched again);
* ``pool-overlap``: the pool handed out memory that is already live;
* ``memory-leak``: regions still live at :meth:`MemPool.destroy`.

Pools also feed the ``memguard_pool_*`` hooks, and :func:`all_leaks` merges their live
regions into the heap's leak report.

Known limits (as for every canary tool): reads are not seen, and writes are seen only
while the written bytes are poisoned; a pool that stores its own metadata inside
returned regions must keep it outside the regions it declares.
"""

from __future__ import annotations

import bisect
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Container, Iterator

from memguard.arguments import int_arg
from memguard.checker import Checker
from memguard.errors import MemguardError
from memguard.findings import bad_span, memory_window, thread_label
from memguard.heap.layout import BlockInfo
from memguard.heapmaps import HeapMap, MapBlock, MapRow, fragmentation_of, site_text
from memguard.heap.guarded import GuardedHeap, InvalidAddressError
from memguard.leaks import BlockRecord, LeakGroup, group_records
from memguard.report import Report
from memguard.stacks import StackTable

__all__ = ["MemPool", "Region", "MemPoolStats", "all_leaks", "pools_of", "NO_MANS_LAND", "FREED", "FRESH"]

#: Poison of chunk bytes that belong to no region (redzones included).
NO_MANS_LAND = 0xFA
#: Poison of returned (quarantined) regions.
FREED = 0xDD
#: Fill of newly handed-out regions (unless the pool asks for zeros or keeps the bytes).
FRESH = 0xCD

_LIVE = 1
_QUARANTINED = 2
_STATES = {_LIVE: "live", _QUARANTINED: "quarantined"}
_PIECE = 1 << 16
_FA = bytes([NO_MANS_LAND]) * _PIECE
_DD = bytes([FREED]) * _PIECE
_CD = bytes([FRESH]) * _PIECE
_ZERO = bytes(_PIECE)
#: Released regions remembered for double-free reports.
_MAX_RELEASED = 1 << 16
#: Bytes of gap verified on each side of a region when it is returned (all at check()).
_EDGE = 256
_getframe = sys._getframe


@dataclass(frozen=True)
class Region(BlockInfo):
    """A sub-block a pool handed out (the value the ``memguard_pool_*`` hooks receive).

    The fields of a heap block's :class:`~memguard.BlockInfo`, for a region: ``address``
    (its first byte), ``size``, ``serial`` (the pool's allocation number for it, 1 for the
    first), ``state`` (``"live"``, ``"quarantined"``: returned and poisoned, or
    ``"released"``), ``alloc_stack`` (where it was handed out), ``free_stack`` (where it was
    returned; empty while live); and:

    :ivar pool: the pool's name.
    """

    pool: str


@dataclass(frozen=True)
class MemPoolStats:
    """Counters of a :class:`MemPool` (sizes in bytes)."""

    chunks: int
    chunk_bytes: int
    live_regions: int
    live_bytes: int
    peak_bytes: int
    quarantined_regions: int
    quarantined_bytes: int
    total_allocs: int
    total_frees: int


@dataclass(slots=True)
class _R:
    """A region's record (:class:`Region` is the value handed to hooks)."""

    address: int
    size: int
    serial: int
    asid: int
    chunk: _Chunk
    state: int = _LIVE
    fsid: int = 0
    note: str = ""

    @property
    def end(self) -> int:
        return self.address + self.size


@dataclass(slots=True)
class _Chunk:
    """A chunk: bytes ``[start, end)`` of the heap block ``block`` (allocation ``serial``).

    ``alive`` turns false, once, when the pool notices that the block was freed: from then
    on the chunk's memory is never read or written and nothing is handed out from it.
    """

    start: int
    end: int
    block: int
    serial: int
    view: memoryview
    starts: list[int] = field(default_factory=list)
    alive: bool = True


def pools_of(heap: GuardedHeap) -> list[MemPool]:
    """The pools (not yet destroyed) declared on ``heap``, oldest first."""
    return [c for c in heap.registered() if isinstance(c, MemPool)]


class MemPool(Checker):
    """Annotations for one custom allocator working inside blocks of ``heap``.

    A :class:`~memguard.checker.Checker` over ``heap``: its findings, ``on_error`` and
    plugins are the heap's, and ``heap.check()`` verifies it.

    :param heap: the guarded heap the pool's chunks come from.
    :param name: the pool's name in reports.
    :param quarantine_bytes: returned bytes kept poisoned before :meth:`free` hands their
        addresses back for reuse (0: hand back at once).
    :param owner: the allocator object driving this pool (for plugins: ``pool.owner``).
    """

    def __init__(self, heap: GuardedHeap, name: str = "pool", quarantine_bytes: int = 1 << 20, owner: object = None) -> None:
        if not isinstance(heap, GuardedHeap):
            raise TypeError(f"heap must be a GuardedHeap, got {type(heap).__name__}")
        if type(quarantine_bytes) is not int:
            raise TypeError(f"quarantine_bytes must be an int, got {type(quarantine_bytes).__name__}")
        if quarantine_bytes < 0:
            raise ValueError(f"quarantine_bytes must be >= 0, got {quarantine_bytes}")
        super().__init__(name=name, heap=heap, on_error=None)
        self.heap = heap
        self.owner = owner
        self.quarantine_bytes = quarantine_bytes
        self._stacks = StackTable(heap.stack_depth)
        self._lock = threading.RLock()
        self._chunks: dict[int, _Chunk] = {}
        self._chunk_starts: list[int] = []
        self._regions: dict[int, _R] = {}
        self._quarantine: deque[_R] = deque()
        #: Regions that left the quarantine, by address, until that address is handed out
        #: again: a second return of one is still a double free, not a foreign address.
        self._released: dict[int, _R] = {}
        self._qbytes = 0
        self._serial = 0
        self._frees = 0
        self._live = 0
        self._live_count = 0
        self._peak = 0
        self._destroyed = False
        self.notify("memguard_pool_create", pool=self)

    # ------------------------------------------------------------------ helpers
    def _alive(self) -> None:
        if self._destroyed:
            raise MemguardError(f"the pool {self.name!r} was destroyed")
        if self.heap.closed:
            raise MemguardError(f"the heap {self.heap.name!r} of pool {self.name!r} is closed")

    def _chunk_of(self, address: int) -> _Chunk | None:
        i = bisect.bisect_right(self._chunk_starts, address) - 1
        if i >= 0:
            chunk = self._chunks[self._chunk_starts[i]]
            if chunk.start <= address < chunk.end:
                return chunk
        return None

    def _info(self, r: _R, state: str | None = None) -> Region:
        return Region(
            r.address, r.size, r.serial, state or _STATES[r.state],
            self._stacks.get(r.asid), self._stacks.get(r.fsid), self.name,
        )

    @staticmethod
    def _memory(chunk: _Chunk, bad: int) -> tuple[bytes, int]:
        """The memory around ``bad`` that a report shows, from the chunk alone."""
        return memory_window(chunk.view, chunk.start, chunk.start, chunk.end, bad)

    @staticmethod
    def _same(view: memoryview, lo: int, hi: int, pattern: bytes) -> bool:
        """Whether ``view[lo:hi]`` is all ``pattern``'s byte (checked in 64 KiB pieces)."""
        while hi - lo > _PIECE:
            if not pattern.startswith(view[lo : lo + _PIECE]):
                return False
            lo += _PIECE
        return pattern.startswith(view[lo:hi])

    @staticmethod
    def _fill(view: memoryview, lo: int, hi: int, pattern: bytes) -> None:
        while hi - lo > _PIECE:
            view[lo : lo + _PIECE] = pattern
            lo += _PIECE
        view[lo:hi] = pattern[: hi - lo]

    def _neighbours(self, chunk: _Chunk, lo: int, hi: int) -> tuple[_R | None, _R | None]:
        """The regions just before ``lo`` and from ``hi`` on in ``chunk``."""
        starts = chunk.starts
        i = bisect.bisect_left(starts, lo)
        left = self._regions[starts[i - 1]] if i > 0 else None
        j = bisect.bisect_left(starts, hi)
        right = self._regions[starts[j]] if j < len(starts) else None
        return left, right

    def _chunk_dead(self, chunk: _Chunk, sid: int, reports: list[Report]) -> bool:
        """Whether ``chunk``'s heap block is gone (freed, or its memory another block's).

        The first time the pool notices (under its lock), a ``pool-bad-free`` naming the
        chunk, with the block's free stack, is added to ``reports`` and the chunk's
        regions are dropped: its memory is never touched again and nothing is handed out
        from it.  Costs one header read while the block is alive.
        """
        if not chunk.alive:
            return True
        if self.heap.live_serial(chunk.block) == chunk.serial:
            return False
        chunk.alive = False
        reports.append(self._chunk_freed(chunk, sid))
        return True

    def _chunk_freed(self, chunk: _Chunk, sid: int) -> Report:
        """The report for a chunk whose block was freed; its regions are dropped."""
        dropped = [self._regions.pop(start) for start in chunk.starts]
        chunk.starts.clear()
        live = [r for r in dropped if r.state == _LIVE]
        self._live -= sum(r.size for r in live)
        self._live_count -= len(live)
        for r in dropped:
            self._released.pop(r.address, None)
        try:
            info: BlockInfo | None = self.heap.block(chunk.block)
        except (ValueError, MemguardError):
            info = None
        same = info is not None and info.serial == chunk.serial and info.state != "live"
        if info is not None and same:
            how, free_stack, alloc_stack = "was freed", info.free_stack, info.alloc_stack
        elif info is not None:
            how, free_stack, alloc_stack = "was freed and its memory now belongs to another block", (), ()
        else:
            how, free_stack, alloc_stack = "was freed (its memory has left the heap's quarantine)", (), ()
        return Report(
            kind="pool-bad-free", address=chunk.block, size=info.size if info is not None and same else 0,
            serial=chunk.serial,
            alloc_stack=alloc_stack, free_stack=free_stack, stack=self._stacks.get(sid), thread=thread_label(),
            message=(
                f"the chunk 0x{chunk.block:x} of pool {self.name!r} {how} while the pool still uses it "
                f"({len(live)} live region(s) in it); the pool hands out nothing more from it"
            ),
            extra={"pool": self.name},
        )

    def _verify_gap(self, chunk: _Chunk, lo: int, hi: int, sid: int) -> list[Report]:
        """Check that chunk bytes ``[lo, hi)`` (no region there) hold 0xFA; report and repair."""
        lo, hi = max(lo, chunk.start), min(hi, chunk.end)
        if lo >= hi:
            return []
        view, base = chunk.view, chunk.start
        if self._same(view, lo - base, hi - base, _FA):
            return []
        data = bytes(view[lo - base : hi - base])
        first, last = bad_span(data, _FA[:1] * len(data)) or (0, len(data) - 1)
        bad = lo + first
        count = last - first + 1
        left, right = self._neighbours(chunk, lo, hi)
        memory, mstart = self._memory(chunk, bad)
        common = dict(
            stack=self._stacks.get(sid), thread=thread_label(), expected=bytes([NO_MANS_LAND]) * count,
            found=data[first : last + 1], memory=memory, memory_start=mstart, count=count,
        )
        if left is not None and (right is None or bad - left.end <= right.address - (lo + last) - 1):
            where, r, kind = f"{bad - left.end} byte(s) past the end", left, "pool-buffer-overflow"
        elif right is not None:
            where, r, kind = f"{right.address - bad} byte(s) before the start", right, "pool-buffer-underflow"
        else:
            r = None
        self._fill(view, lo - base, hi - base, _FA)
        if r is None:
            return [Report(
                kind="pool-buffer-overflow", address=bad, message=(
                    f"{count} byte(s) of no-man's land written at 0x{bad:x} in pool {self.name!r} (no region nearby)"
                ), extra={"pool": self.name}, **common,  # type: ignore[arg-type]
            )]
        state = "freed " if r.state == _QUARANTINED else ""
        return [Report(
            kind=kind, address=r.address, size=r.size, offset=bad - r.address, serial=r.serial,
            alloc_stack=self._stacks.get(r.asid), free_stack=self._stacks.get(r.fsid),
            message=f"{count} byte(s) corrupted {where} of a {state}{r.size}-byte region of pool {self.name!r}",
            extra={"pool": self.name}, **common,  # type: ignore[arg-type]
        )]

    def _verify_freed(self, r: _R, sid: int) -> list[Report]:
        """Check a quarantined region's 0xDD poison; report and repair."""
        chunk = r.chunk
        lo = r.address - chunk.start
        if self._same(chunk.view, lo, lo + r.size, _DD):
            return []
        data = bytes(chunk.view[lo : lo + r.size])
        first, last = bad_span(data, _DD[:1] * len(data)) or (0, len(data) - 1)
        count = last - first + 1
        memory, mstart = self._memory(chunk, r.address + first)
        self._fill(chunk.view, lo, lo + r.size, _DD)
        return [Report(
            kind="pool-use-after-free", address=r.address, size=r.size, offset=first, serial=r.serial,
            alloc_stack=self._stacks.get(r.asid), free_stack=self._stacks.get(r.fsid),
            stack=self._stacks.get(sid), thread=thread_label(), expected=bytes([FREED]) * count,
            found=data[first : last + 1], memory=memory, memory_start=mstart, count=count,
            message=(
                f"{count} byte(s) written at offset {first} of a {r.size}-byte region returned to pool {self.name!r}"
                + (f" ({r.note})" if r.note else "")
            ),
            extra={"pool": self.name, "note": r.note} if r.note else {"pool": self.name},
        )]

    def _forget(self, r: _R) -> None:
        """Drop a quarantined region: its bytes become no-man's land again."""
        chunk = r.chunk
        del self._regions[r.address]
        self._released[r.address] = r
        if len(self._released) > _MAX_RELEASED:
            del self._released[next(iter(self._released))]
        i = bisect.bisect_left(chunk.starts, r.address)
        del chunk.starts[i]
        lo = r.address - chunk.start
        self._fill(chunk.view, lo, lo + r.size, _FA)

    def _evict(self, sid: int, reports: list[Report], checked: _Chunk) -> list[int]:
        """Take regions out of the quarantine (``checked``: a chunk known to be alive)."""
        released = []
        q = self._quarantine
        while self._qbytes > self.quarantine_bytes and q:
            r = q.popleft()
            self._qbytes -= r.size
            if r.chunk is not checked and self._chunk_dead(r.chunk, sid, reports):
                continue  # its chunk was freed (the region was dropped with it)
            if self._regions.get(r.address) is not r:
                continue  # reused early by an alloc over it
            reports.extend(self._verify_freed(r, sid))
            self._forget(r)
            released.append(r.address)
        return released

    # ------------------------------------------------------------------ chunks
    def add_chunk(self, address: int, offset: int = 0, size: int | None = None) -> int:
        """Declare bytes ``[address + offset, address + offset + size)`` of a live heap block pool memory.

        ``address`` is the heap block (from ``heap.malloc``/``memalign``); ``size``
        defaults to the rest of the block.  The bytes are poisoned as no-man's land; the
        pool hands them out with :meth:`alloc`.  Returns the chunk's first address.
        """
        self._alive()
        address = int_arg(address, "address")
        offset = int_arg(offset, "offset")
        view = self.heap.view(address)  # raises InvalidAddressError for a non-live block
        serial = self.heap.live_serial(address)
        n = len(view) - offset if size is None else int_arg(size, "size")
        if n <= 0 or offset + n > len(view):
            raise ValueError(
                f"chunk [{offset}, {offset + n}) does not fit in the {len(view)}-byte block 0x{address:x}"
            )
        start = address + offset
        with self._lock:
            if self._chunk_of(start) is not None or self._chunk_of(start + n - 1) is not None or any(
                start <= s < start + n for s in self._chunk_starts
            ):
                raise ValueError(f"chunk 0x{start:x} overlaps a chunk already in pool {self.name!r}")
            chunk = _Chunk(start, start + n, address, serial, view[offset : offset + n])
            self._fill(chunk.view, 0, n, _FA)
            self._chunks[start] = chunk
            bisect.insort(self._chunk_starts, start)
        return start

    def remove_chunk(self, start: int) -> list[Report]:
        """Forget the chunk that starts at ``start`` (its owner is about to free or reuse the block).

        Its gaps and returned regions are verified one last time (findings emitted and
        returned); it must hold no live region (:class:`ValueError` otherwise).
        """
        self._alive()
        start = int_arg(start, "start")
        sid = self._stacks.capture(_getframe(1))
        reports: list[Report] = []
        with self._lock:
            chunk = self._chunks.get(start)
            if chunk is None:
                raise InvalidAddressError(f"0x{start:x} is not a chunk of pool {self.name!r} (not the start of one)")
            if not self._chunk_dead(chunk, sid, reports):
                live = sum(1 for a in chunk.starts if self._regions[a].state == _LIVE)
                if live:
                    raise ValueError(f"the chunk 0x{start:x} of pool {self.name!r} still holds live regions ({live})")
                pos = chunk.start
                for a in chunk.starts:
                    r = self._regions[a]
                    reports.extend(self._verify_gap(chunk, pos, a, sid))
                    reports.extend(self._verify_freed(r, sid))
                    pos = r.end
                reports.extend(self._verify_gap(chunk, pos, chunk.end, sid))
                for a in chunk.starts:
                    del self._regions[a]
            kept = deque(r for r in self._quarantine if r.chunk is not chunk)
            self._qbytes -= sum(r.size for r in self._quarantine if r.chunk is chunk)
            self._quarantine = kept
            for a in [a for a, r in self._released.items() if r.chunk is chunk]:
                del self._released[a]
            del self._chunks[start]
            del self._chunk_starts[bisect.bisect_left(self._chunk_starts, start)]
        self.emit(reports)
        return reports

    # ------------------------------------------------------------------ regions
    def alloc(self, address: int, size: int, fill: int | None = FRESH) -> int:
        """Declare ``[address, address + size)`` handed out; return ``address``.

        The bytes must lie in one chunk and be poisoned (no-man's land, or a quarantined
        region, which is then taken out of the quarantine with its poison verified).
        ``fill`` is the byte the region is filled with (``FRESH`` 0xCD by default, 0 for a
        zeroing pool, ``None`` to leave the bytes alone).  Memory already live is a
        ``pool-overlap`` finding and nothing is allocated (0 is returned unless
        ``on_error="raise"``).
        """
        if self._destroyed or self.heap.closed:
            self._alive()
        if type(address) is not int or address < 0:
            address = int_arg(address, "address")
        if type(size) is not int or size < 0:
            size = int_arg(size, "size")
        if size == 0:
            raise ValueError("a region must be at least 1 byte")
        if fill is not None and (type(fill) is not int or not 0 <= fill <= 255):
            raise ValueError(f"fill must be a byte value (0..255) or None, got {fill!r}")
        sid = self._stacks.capture(_getframe(1))
        address, reports = self._alloc(address, size, fill, sid)
        if reports:
            self.emit(reports)
        return address

    def _alloc(
        self, address: int, size: int, fill: int | None, sid: int, announce: bool = True
    ) -> tuple[int, list[Report]]:
        """Allocate; return ``(address or 0, findings to emit)`` (the caller emits them)."""
        reports: list[Report] = []
        with self._lock:
            chunk = self._chunk_of(address)
            if chunk is None or address + size > chunk.end:
                raise InvalidAddressError(
                    f"region [0x{address:x},0x{address + size:x}) is not inside one chunk of pool {self.name!r}"
                )
            if self._chunk_dead(chunk, sid, reports):
                return 0, reports  # nothing is handed out from freed memory
            starts = chunk.starts
            i = bisect.bisect_left(starts, address)
            if i > 0 and self._regions[starts[i - 1]].end > address:
                i -= 1
            overlapping = []
            while i < len(starts) and starts[i] < address + size:
                overlapping.append(self._regions[starts[i]])
                i += 1
            live = [r for r in overlapping if r.state == _LIVE]
            if live:
                r = live[0]
                report = Report(
                    kind="pool-overlap", address=r.address, size=r.size, offset=address - r.address, serial=r.serial,
                    alloc_stack=self._stacks.get(r.asid), stack=self._stacks.get(sid), thread=thread_label(),
                    message=(
                        f"pool {self.name!r} handed out [0x{address:x},0x{address + size:x}), which overlaps the "
                        f"live {r.size}-byte region [0x{r.address:x},0x{r.end:x})"
                    ),
                    extra={"pool": self.name},
                )
                reports.append(report)
                address = 0
            else:
                for r in overlapping:  # reused straight out of the quarantine
                    reports.extend(self._verify_freed(r, sid))
                    self._forget(r)
                reports.extend(self._verify_gap(chunk, address, address + size, sid))
                self._released.pop(address, None)
                self._serial += 1
                r = self._regions[address] = _R(address, size, self._serial, sid, chunk)
                bisect.insort(starts, address)
                if fill is not None:
                    pattern = _CD if fill == FRESH else (_ZERO if fill == 0 else bytes([fill]) * min(size, _PIECE))
                    lo = address - chunk.start
                    self._fill(chunk.view, lo, lo + size, pattern)
                self._live += size
                self._live_count += 1
                if self._live > self._peak:
                    self._peak = self._live
        if address and announce:
            if self.observes("memguard_pool_alloc"):
                self.notify("memguard_pool_alloc", pool=self, region=self._info(r))
        return address, reports

    def free(self, address: int, note: str = "") -> list[int] | None:
        """Declare the region at ``address`` returned: verify its redzones, poison it, quarantine it.

        ``note`` (who returned it, in words) is added to the findings about the returned
        region, as :meth:`move`'s is.  Returns the addresses of the regions that left the quarantine (their poison
        verified), which the pool may now reuse; ``None`` when the return itself was a
        finding (``pool-double-free``, ``pool-bad-free``).
        """
        if self._destroyed or self.heap.closed:
            self._alive()
        if type(address) is not int or address < 0:
            address = int_arg(address, "address")
        sid = self._stacks.capture(_getframe(1))
        released, reports = self._free(address, sid)
        if note and released is not None:
            with self._lock:
                r = self._regions.get(address)
                if r is not None and r.state != _LIVE:
                    r.note = note
        self.emit(reports)
        return released

    def _free(self, address: int, sid: int, announce: bool = True) -> tuple[list[int] | None, list[Report]]:
        """Return a region; ``(released addresses or None, findings to emit)``."""
        reports: list[Report] = []
        released: list[int] | None = None
        with self._lock:
            r = self._regions.get(address)
            chunk = r.chunk if r is not None else self._chunk_of(address)
            if chunk is not None and self._chunk_dead(chunk, sid, reports):
                return None, reports  # the chunk's memory is gone: nothing to verify or poison
            if r is None or r.state != _LIVE:
                reports.append(self._bad_free(address, r, sid))
            else:
                left, right = self._neighbours(chunk, r.address, r.end)
                lo = max(left.end if left is not None else chunk.start, r.address - _EDGE)
                hi = min(right.address if right is not None else chunk.end, r.end + _EDGE)
                reports.extend(self._verify_gap(chunk, lo, r.address, sid))
                reports.extend(self._verify_gap(chunk, r.end, hi, sid))
                off = r.address - chunk.start
                self._fill(chunk.view, off, off + r.size, _DD)
                r.state = _QUARANTINED
                r.fsid = sid
                self._frees += 1
                self._live -= r.size
                self._live_count -= 1
                self._quarantine.append(r)
                self._qbytes += r.size
                released = self._evict(sid, reports, chunk)
        if released is not None and announce:
            if self.observes("memguard_pool_free"):
                self.notify("memguard_pool_free", pool=self, region=self._info(r))  # type: ignore[arg-type]
        return released, reports

    def _bad_free(self, address: int, r: _R | None, sid: int) -> Report:
        stack = self._stacks.get(sid)
        if r is not None:
            return Report(
                kind="pool-double-free", address=address, size=r.size, serial=r.serial, stack=stack,
                alloc_stack=self._stacks.get(r.asid), free_stack=self._stacks.get(r.fsid), thread=thread_label(),
                message=(
                    f"attempting double-free on 0x{address:x}, a {r.size}-byte region already returned to pool {self.name!r}"
                    + (f" ({r.note})" if r.note else "")
                ),
                extra={"pool": self.name},
            )
        chunk = self._chunk_of(address)
        if chunk is not None:
            left, _ = self._neighbours(chunk, address + 1, address + 1)
            if left is not None and left.address <= address < left.end:
                off = address - left.address
                return Report(
                    kind="pool-bad-free", address=left.address, size=left.size, offset=off, serial=left.serial,
                    stack=stack, alloc_stack=self._stacks.get(left.asid), free_stack=self._stacks.get(left.fsid),
                    thread=thread_label(), extra={"pool": self.name},
                    message=(
                        f"attempting free on address which was not allocated from pool {self.name!r}: 0x{address:x} "
                        f"is located {off} bytes inside of {left.size}-byte region [0x{left.address:x},0x{left.end:x})"
                    ),
                )
            gone = self._released.get(address)
            if gone is not None:
                return Report(
                    kind="pool-double-free", address=address, size=gone.size, serial=gone.serial, stack=stack,
                    alloc_stack=self._stacks.get(gone.asid), free_stack=self._stacks.get(gone.fsid),
                    thread=thread_label(), extra={"pool": self.name},
                    message=(
                        f"attempting double-free on 0x{address:x}, a {gone.size}-byte region already returned to "
                        f"pool {self.name!r} (and out of its quarantine)"
                    ),
                )
            where = f"in pool {self.name!r} memory that is not a region"
        else:
            where = f"outside every chunk of pool {self.name!r}"
        return Report(
            kind="pool-bad-free", address=address, stack=stack, thread=thread_label(), extra={"pool": self.name},
            message=f"attempting free on address which was not allocated from pool {self.name!r}: 0x{address:x} ({where})",
        )

    def move(self, old: int, new: int, note: str = "") -> list[int] | None:
        """Declare the live region at ``old`` moved to ``new`` (defragmentation), copying its bytes.

        The new region keeps the allocation stack of the old one; the old one is returned
        (poisoned and quarantined).  ``note`` (the move, in words) is added to the findings
        about the old region: a write through the old address, a return of it.  Returns
        what :meth:`free` returns.
        """
        self._alive()
        old = int_arg(old, "old")
        new = int_arg(new, "new")
        sid = self._stacks.capture(_getframe(1))
        with self._lock:
            r = self._regions.get(old)
            gone: list[Report] = []
            chunk = r.chunk if r is not None else self._chunk_of(old)
            if chunk is not None and self._chunk_dead(chunk, sid, gone):
                self.emit(gone)
                return None
            if r is None or r.state != _LIVE:
                self.emit([self._bad_free(old, r, sid)])
                return None
            if new < r.end and old < new + r.size:
                raise ValueError(f"move of 0x{old:x} to 0x{new:x}: the regions overlap")
            done, reports = self._alloc(new, r.size, None, r.asid, announce=False)
            if not done:
                self.emit(reports)
                return None
            nr = self._regions[new]
            nr.chunk.view[new - nr.chunk.start : new - nr.chunk.start + r.size] = bytes(
                r.chunk.view[old - r.chunk.start : old - r.chunk.start + r.size]
            )
            released, more = self._free(old, sid, announce=False)
            r.note = note
            if self.observes("memguard_pool_move"):
                self.notify("memguard_pool_move", pool=self, old=self._info(r), new=self._info(nr))
        self.emit(reports + more)
        return released

    # ------------------------------------------------------------------ inspection
    def region(self, address: int) -> Region:
        """What the pool knows about the region at ``address`` (live or quarantined)."""
        address = int_arg(address, "address")
        with self._lock:
            r = self._regions.get(address)
            if r is None:
                raise InvalidAddressError(f"0x{address:x} is not a region of pool {self.name!r}")
            return self._info(r)

    def regions(self) -> list[Region]:
        """The live regions, oldest first."""
        with self._lock:
            live = sorted((r for r in self._regions.values() if r.state == _LIVE), key=lambda r: r.serial)
        return [self._info(r) for r in live]

    def chunks(self) -> list[tuple[int, int]]:
        """``(start, size)`` of every chunk."""
        with self._lock:
            return [(c.start, c.end - c.start) for c in self._chunks.values()]

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions())

    def layout_map(self, leaked: Container[int] = (), width: int | None = None) -> HeapMap:
        """The pool as a :class:`~memguard.heapmaps.HeapMap`: a row per chunk, its live and quarantined regions.

        Bytes no region covers (free space, redzones, the pool's own gaps) are drawn as
        unused; fragmentation is that of those gaps (the pool's own free lists are not
        known to memguard).  Live regions whose address is in ``leaked`` are drawn as
        leaked; ``width`` merges sub-pixel regions as :meth:`HeapMap.aggregated` does.
        """
        with self._lock:
            rows = []
            gaps: list[int] = []
            for start in self._chunk_starts:
                c = self._chunks[start]
                blocks = []
                at = c.start
                for a in c.starts:
                    r = self._regions[a]
                    gaps.append(r.address - at)
                    at = r.end
                    state = "quarantined" if r.state == _QUARANTINED else ("leaked" if r.address in leaked else "live")
                    site = site_text(self._stacks.get(r.asid)) if width is None else ""
                    blocks.append(MapBlock(r.address - c.start, r.size, state, r.serial, site, address=r.address))
                gaps.append(c.end - at)
                rows.append(MapRow(f"chunk {len(rows)}", c.start, c.end - c.start, tuple(blocks)))
        m = HeapMap(f"pool {self.name!r}", tuple(rows), fragmentation_of(gaps))
        return m if width is None else m.aggregated(width, self._site_of)

    def _site_of(self, b: MapBlock) -> str:
        with self._lock:
            r = self._regions.get(b.address)
            return site_text(self._stacks.get(r.asid)) if r is not None else ""

    def stats(self) -> MemPoolStats:
        """Counters of the pool."""
        with self._lock:
            return MemPoolStats(
                chunks=len(self._chunks),
                chunk_bytes=sum(c.end - c.start for c in self._chunks.values()),
                live_regions=self._live_count,
                live_bytes=self._live,
                peak_bytes=self._peak,
                quarantined_regions=sum(1 for r in self._quarantine if self._regions.get(r.address) is r),
                quarantined_bytes=self._qbytes,
                total_allocs=self._serial,
                total_frees=self._frees,
            )

    def leaks(self) -> list[LeakGroup]:
        """Live regions grouped by allocation stack, largest first (LeakSanitizer's shape)."""
        with self._lock:
            records = [BlockRecord(r.address, r.size, r.serial, r.asid) for r in self._regions.values() if r.state == _LIVE]
        return group_records(records, self._stacks)

    def verify(self) -> list[Report]:
        """Every gap and every quarantined region of every chunk (``check()``)."""
        if self._destroyed:
            return []
        sid = self._stacks.here(2)
        reports: list[Report] = []
        with self._lock:
            for chunk in list(self._chunks.values()):
                if self._chunk_dead(chunk, sid, reports):
                    continue
                pos = chunk.start
                for start in list(chunk.starts):
                    r = self._regions[start]
                    reports.extend(self._verify_gap(chunk, pos, start, sid))
                    if r.state == _QUARANTINED:
                        reports.extend(self._verify_freed(r, sid))
                    pos = r.end
                reports.extend(self._verify_gap(chunk, pos, chunk.end, sid))
        return reports

    def check(self) -> list[Report]:
        """Verify the poison of every chunk; emit and return the findings."""
        self._alive()
        return super().check()

    @property
    def destroyed(self) -> bool:
        """Whether :meth:`destroy` was called."""
        return self._destroyed

    #: Whether the pool was destroyed (:meth:`close` is :meth:`destroy`).
    closed = destroyed

    def close(self) -> list[Report]:
        """:meth:`destroy` the pool (the checker contract's name for it)."""
        return self.destroy()

    def destroy(self) -> list[Report]:
        """Forget the pool: each region still live is a ``memory-leak`` ("Leak at 0x… (site)").

        Calls ``memguard_pool_destroy`` first (the regions are still listed), then
        verifies the chunks one last time.  The chunks themselves stay the owner's to
        free.  Returns the findings (emitted under the heap's ``on_error``).
        """
        if self._destroyed:
            return []
        self.notify("memguard_pool_destroy", pool=self)
        reports = self.verify() if not self.heap.closed else []
        for region in self.regions():
            site = str(region.alloc_stack[0]) if region.alloc_stack else "<unknown>"
            reports.append(Report(
                kind="memory-leak", address=region.address, size=region.size, serial=region.serial,
                alloc_stack=region.alloc_stack, count=1,
                message=f"Leak at 0x{region.address:x} ({site}): {region.size}-byte region of pool {self.name!r}",
                extra={"pool": self.name},
            ))
        with self._lock:
            self._destroyed = True
            self._regions.clear()
            self._chunks.clear()
            self._chunk_starts.clear()
            self._quarantine.clear()
            self._released.clear()
            self._qbytes = 0
        if not self.heap.closed:
            self.emit(reports)
        else:  # nobody is left to act on them: recorded only
            self.reports.extend(reports)
            self.heap.reports.extend(reports)
        return reports

    def __repr__(self) -> str:
        state = "destroyed" if self._destroyed else f"{self._live_count} live regions, {len(self._chunks)} chunks"
        return f"<MemPool {self.name!r}: {state}>"


def all_leaks(heap: GuardedHeap, since: Any = None) -> list[LeakGroup]:
    """``heap.leaks(since)`` with pool chunks replaced by the pools' live regions.

    A chunk is the pool's, not a leak by itself; the regions still live in it are what
    leaked.  Pool regions are included whatever ``since`` says.
    """
    pools = pools_of(heap)
    chunk_blocks = {c.block for p in pools for c in p._chunks.values()}
    groups = []
    for g in heap.leaks(since):
        keep = tuple(a for a in g.addresses if a not in chunk_blocks)
        if len(keep) == len(g.addresses):
            groups.append(g)
        elif keep:
            size = sum(heap.block(a).size for a in keep)
            groups.append(LeakGroup(g.stack, size, len(keep), keep))
    for p in pools:
        groups.extend(p.leaks())
    groups.sort(key=lambda g: (-g.size, -g.count, str(g.stack[:1])))
    return groups
