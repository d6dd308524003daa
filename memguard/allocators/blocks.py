"""A block allocator over pages of the guarded heap (the pages and allocations a defragmenter moves).

Each page is one heap block; each allocation is a region of it declared to a
:class:`~memguard.MemPool`, so an overflow into the next allocation's margin, a write
after free, a double free and an allocation still live at :meth:`BlockAllocator.close`
are findings with stacks.

The free ranges of a page are kept in size classes in the manner of TLSF (a class per
power of two, split into 16 steps, with a bitmap of the classes that hold a range), so a
fit is found without walking the ranges:

* ``"min_time"`` takes the first range of the first class whose every range fits (O(1));
* ``"min_memory"`` takes the smallest range that fits (the first class that holds a fitting
  range holds the smallest ones; only that class's ranges are compared);
* ``"min_offset"`` takes the first page, in page order, that has room, at its lowest offset
  (each non-empty class is asked for its lowest fitting offset: the cost is the number of
  classes, not of ranges).

Pages are walked in order (they are few: a page is ``page_size`` bytes).  The
defragmenter is :meth:`BlockAllocator.defragmenter` (:mod:`memguard.allocators.defrag`).
"""

from __future__ import annotations

import bisect
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Container

from memguard.allocators.mempool import MemPool
from memguard.arguments import int_arg
from memguard.checker import Checker
from memguard.errors import HeapClosedError
from memguard.heap.guarded import GuardedHeap, InvalidAddressError
from memguard.heapmaps import HeapMap, MapBlock, MapRow, site_text
from memguard.kinds import error_for
from memguard.report import Report

if TYPE_CHECKING:
    from memguard.allocators.defrag import DefragStats, Defragmenter, Move
    from memguard.stacks import Frame

__all__ = ["BlockAllocator", "Allocation", "PageInfo", "BlockStats", "STRATEGIES"]

#: The placement strategies of :meth:`BlockAllocator.allocate`.
STRATEGIES = ("min_memory", "min_time", "min_offset")
#: Alignment of every page's first byte (so any ``align`` up to it fits at offset 0).
PAGE_ALIGN = 64
_getframe = sys._getframe


def size_class(size: int) -> int:
    """The class of a free range of ``size`` bytes (16 steps per power of two; exact below 16)."""
    if size < 16:
        return size
    fl = size.bit_length() - 1
    return 16 + ((fl - 4) << 4) + ((size >> (fl - 4)) & 15)


def class_floor(c: int) -> int:
    """The smallest size in class ``c``."""
    if c < 16:
        return c
    fl, sl = divmod(c - 16, 16)
    return (16 + sl) << fl


def _fitting_class(n: int) -> int:
    """The first class whose every range holds ``n`` bytes."""
    c = size_class(n)
    return c if class_floor(c) >= n else c + 1


class Page:
    """A page's record, shared by the allocator and its defragmenter.

    Heap block ``block``; its ``size`` bytes from ``address``; its free ranges (by offset,
    by end, and by size class with a bitmap of the non-empty classes); its allocations by offset.
    """

    __slots__ = ("index", "block", "address", "size", "free", "ends", "classes", "bitmap", "free_bytes", "allocs")

    def __init__(self, index: int, block: int, address: int, size: int) -> None:
        self.index = index
        self.block = block
        self.address = address
        self.size = size
        self.free: dict[int, int] = {}
        self.ends: dict[int, int] = {}
        self.classes: dict[int, list[int]] = {}
        self.bitmap = 0
        self.free_bytes = 0
        self.allocs: dict[int, Allocation] = {}

    # ------------------------------------------------------------------ free ranges
    def _insert(self, off: int, size: int) -> None:
        self.free[off] = size
        self.ends[off + size] = off
        c = size_class(size)
        offsets = self.classes.get(c)
        if offsets is None:
            self.classes[c] = [off]
            self.bitmap |= 1 << c
        else:
            bisect.insort(offsets, off)
        self.free_bytes += size

    def _remove(self, off: int) -> int:
        size = self.free.pop(off)
        del self.ends[off + size]
        c = size_class(size)
        offsets = self.classes[c]
        del offsets[bisect.bisect_left(offsets, off)]
        if not offsets:
            del self.classes[c]
            self.bitmap &= ~(1 << c)
        self.free_bytes -= size
        return size

    def give(self, off: int, size: int) -> None:
        """Make ``[off, off + size)`` free, merged with the free ranges next to it."""
        right = self.free.get(off + size)
        if right is not None:
            self._remove(off + size)
            size += right
        left = self.ends.get(off)
        if left is not None:
            size += self._remove(left)
            off = left
        self._insert(off, size)

    def take(self, off: int, at: int, size: int) -> None:
        """Take ``[at, at + size)`` out of the free range that starts at ``off``."""
        total = self._remove(off)
        if at > off:
            self._insert(off, at - off)
        if off + total > at + size:
            self._insert(at + size, off + total - at - size)

    # ------------------------------------------------------------------ fits
    def _fit(self, off: int, size: int, need: int, align: int) -> int:
        """Where ``need`` bytes aligned to ``align`` go in the free range ``[off, off + size)``, or -1."""
        at = off
        if align > 1:
            at = -(-(self.address + off) // align) * align - self.address
        return at if at + need <= off + size else -1

    def find(self, need: int, align: int, strategy: str) -> tuple[int, int, int] | None:
        """Where ``need`` bytes aligned to ``align`` go by ``strategy``: ``(offset, free range, its size)``."""
        if need > self.free_bytes:
            return None
        first = size_class(need)
        if not self.bitmap >> first:
            return None
        sure = _fitting_class(need + align - 1)
        if strategy == "min_time":
            m = self.bitmap >> sure
            if m:
                off = self.classes[sure + (m & -m).bit_length() - 1][0]
                size = self.free[off]
                return self._fit(off, size, need, align), off, size
            strategy = "min_memory"  # only classes that may not fit are left: the best of them
        best: tuple[int, int, int] | None = None
        best_key: tuple[int, int] | None = None
        lowest = strategy == "min_offset"
        m = self.bitmap >> first
        c = first
        while m:
            step = (m & -m).bit_length() - 1
            cls = c + step
            c, m = cls + 1, m >> (step + 1)
            offsets = self.classes[cls]
            if lowest and best is not None and offsets[0] >= best[0]:
                continue  # every range of this class starts after the best so far
            for off in offsets[:1] if cls >= sure and lowest else offsets:
                if lowest and best is not None and off >= best[0]:
                    break
                size = self.free[off]
                at = self._fit(off, size, need, align)
                if at < 0:
                    continue
                key = (at, 0) if lowest else (size, at)
                if best_key is None or key < best_key:
                    best_key, best = key, (at, off, size)
                if lowest:
                    break  # the offsets of a class are sorted: the first fit is its lowest
            if best is not None and not lowest:
                return best  # every range of a later class is larger
        return best

    def largest(self) -> int:
        """Its largest free range (0 when it is full)."""
        if not self.bitmap:
            return 0
        c = self.bitmap.bit_length() - 1
        return max(self.free[off] for off in self.classes[c])


class Allocation:
    """A live allocation of a :class:`BlockAllocator` (the handle follows it when it is moved).

    :ivar size: its bytes.
    :ivar align: its alignment.
    :ivar serial: the allocator's allocation number for it (1 for the first).
    """

    __slots__ = ("_owner", "_page", "offset", "size", "align", "serial", "_gone", "_move", "__weakref__")

    def __init__(self, owner: BlockAllocator, page: Page, offset: int, size: int, align: int, serial: int) -> None:
        self._owner = owner
        self._page: Page | None = page
        #: Its first byte's offset in its page.
        self.offset = offset
        self.size = size
        self.align = align
        self.serial = serial
        self._gone: tuple[tuple[Frame, ...], tuple[Frame, ...]] | None = None
        self._move: Move | None = None

    @property
    def valid(self) -> bool:
        """Whether it is live (not freed, not destroyed by a defragmentation)."""
        return self._page is not None

    @property
    def page(self) -> int:
        """The index of its page now (-1 once freed)."""
        return self._page.index if self._page is not None else -1

    @property
    def address(self) -> int:
        """Its first byte now (moves change it; 0 once freed)."""
        return self._page.address + self.offset if self._page is not None else 0

    @property
    def alloc_stack(self) -> tuple[Frame, ...]:
        """Where it was allocated."""
        if self._gone is not None:
            return self._gone[0]
        return self._owner.mempool.region(self.address).alloc_stack

    def view(self) -> memoryview:
        """A writable view of its bytes (at its current address: take a new one after a move)."""
        page = self._page
        if page is None:
            raise ValueError(f"allocation #{self.serial} of {self._owner.name!r} was freed")
        return self._owner.heap.view(page.block)[page.address - page.block + self.offset :][: self.size]

    def __repr__(self) -> str:
        where = f"page {self.page} offset {self.offset}" if self.valid else "freed"
        return f"<Allocation #{self.serial} of {self._owner.name!r}: {self.size} bytes, {where}>"


@dataclass(frozen=True)
class PageInfo:
    """One page of a :class:`BlockAllocator`.

    :ivar index: its position in the page list.
    :ivar address: its first byte.
    :ivar size: its bytes.
    :ivar used: bytes taken (allocations, their margins, destinations reserved by a pass).
    :ivar free: ``size - used``.
    :ivar largest_free: its largest free range.
    :ivar allocations: its allocations, by offset.
    """

    index: int
    address: int
    size: int
    used: int
    free: int
    largest_free: int
    allocations: tuple[Allocation, ...]


@dataclass(frozen=True)
class BlockStats:
    """Counters of a :class:`BlockAllocator` (sizes in bytes).

    ``fragmentation`` is ``1 - largest_free / free bytes`` (0.0 when nothing is free).
    """

    pages: int
    page_bytes: int
    allocations: int
    allocation_bytes: int
    free_ranges: int
    largest_free: int
    fragmentation: float


class BlockAllocator(Checker):
    """Allocations at offsets of pages that are blocks of the guarded heap; defragmentable.

    :param page_size: bytes of each page :meth:`allocate` adds (a larger allocation gets a
        page of its own size).
    :param heap: the :class:`~memguard.GuardedHeap` the pages come from (``None``: a heap of
        its own, closed with the allocator; ``memguard.install()`` for the process heap).
    :param name: the allocator's name in reports.
    :param margin: bytes of no-man's land kept after each allocation (0: allocations touch,
        and an overflow into the next one is not seen).
    """

    def __init__(self, page_size: int = 1 << 16, heap: GuardedHeap | None = None, name: str = "blocks",
                 margin: int = 0) -> None:
        page_size = int_arg(page_size, "page_size")
        margin = int_arg(margin, "margin")
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        if heap is not None and not isinstance(heap, GuardedHeap):
            raise TypeError(f"heap must be a GuardedHeap or None, got {type(heap).__name__}")
        self.page_size = page_size
        self.margin = margin
        self._own_heap = heap is None
        self.heap = heap if heap is not None else GuardedHeap(name=f"{name}-heap")
        super().__init__(name=name, heap=self.heap, on_error=None)
        self._lock = threading.RLock()
        self._pages: list[Page] = []
        self._count = 0
        self._bytes = 0
        self._serial = 0
        self._closed = False
        #: Changes made by callers (allocate, free, add_page): a defragmenter is valid for one value.
        self.generation = 0
        #: The regions of every allocation, declared to memguard.
        self.mempool = MemPool(self.heap, name=name, quarantine_bytes=1 << 40, owner=self)

    # ------------------------------------------------------------------ pages
    def _usable(self) -> None:
        if self._closed:
            raise HeapClosedError(f"the block allocator {self.name!r} is closed")

    def add_page(self, size: int | None = None) -> int:
        """Add a page of ``size`` bytes (``page_size`` by default) at the end; return its index."""
        size = self.page_size if size is None else int_arg(size, "size")
        if size < 1:
            raise ValueError("a page must be at least 1 byte")
        with self.hold_errors(), self._lock:
            self._usable()
            self.generation += 1
            return self._add_page(size).index

    def _add_page(self, size: int) -> Page:
        block = self.heap.memalign(PAGE_ALIGN, size)
        try:
            start = self.mempool.add_chunk(block)
        except BaseException:
            self.heap.free(block)
            raise
        page = Page(len(self._pages), block, start, size)
        page.give(0, size)
        self._pages.append(page)
        return page

    def _release_page(self, page: Page) -> None:
        """Give an empty page back to the heap."""
        self.mempool.remove_chunk(page.address)
        self.heap.free(page.block)
        del self._pages[page.index]
        for i in range(page.index, len(self._pages)):
            self._pages[i].index = i
        page.index = -1

    def _swap(self, i: int, j: int) -> None:
        pages = self._pages
        pages[i], pages[j] = pages[j], pages[i]
        pages[i].index, pages[j].index = i, j

    # ------------------------------------------------------------------ allocate / free
    def allocate(self, size: int, align: int = 1, strategy: str = "min_memory", page: int | None = None) -> Allocation:
        """``size`` bytes aligned to ``align``, placed by ``strategy`` (see the module); a new page when none has room.

        ``page=`` restricts the search to that page (:class:`MemoryError` when it has no room).
        """
        size = int_arg(size, "size")
        align = int_arg(align, "align")
        if size == 0:
            raise ValueError("size must be >= 1")
        if align == 0 or align & (align - 1):
            raise ValueError(f"align must be a power of two, got {align}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if page is not None:
            page = int_arg(page, "page")
        need = size + self.margin
        with self.hold_errors(), self._lock:
            self._usable()
            if page is not None:
                if page >= len(self._pages):
                    raise IndexError(f"{self.name!r} has {len(self._pages)} page(s), no page {page}")
                target = self._pages[page]
                found = target.find(need, align, strategy)
                if found is None:
                    raise MemoryError(f"page {page} of {self.name!r} has no room for {size} bytes aligned to {align}")
            else:
                target, found = self._place(need, align, strategy)
            self.generation += 1
            return self._claim(target, found[0], found[1], size, align)

    def _place(self, need: int, align: int, strategy: str) -> tuple[Page, tuple[int, int, int]]:
        best: tuple[Page, tuple[int, int, int]] | None = None
        for p in self._pages:
            found = p.find(need, align, strategy)
            if found is None:
                continue
            if strategy != "min_memory":
                return p, found
            if best is None or found[2] < best[1][2]:
                best = (p, found)
        if best is not None:
            return best
        page = self._add_page(max(self.page_size, need + (align - 1 if align > PAGE_ALIGN else 0)))
        found = page.find(need, align, "min_offset")
        assert found is not None
        return page, found

    def _claim(self, page: Page, at: int, off: int, size: int, align: int) -> Allocation:
        page.take(off, at, size + self.margin)
        self._serial += 1
        a = Allocation(self, page, at, size, align, self._serial)
        try:
            self.mempool.alloc(page.address + at, size)
        except BaseException:
            page.give(at, size + self.margin)
            raise
        page.allocs[at] = a
        self._count += 1
        self._bytes += size
        return a

    def free(self, allocation: Allocation, note: str = "") -> None:
        """Free ``allocation`` (a second free is a ``pool-double-free`` finding).

        ``note`` (who freed it, in words) is added to a later ``pool-use-after-free`` finding
        about its bytes.
        """
        if not isinstance(allocation, Allocation):
            raise TypeError(f"allocation must be an Allocation, got {type(allocation).__name__}")
        if allocation._owner is not self:
            raise ValueError(f"{allocation!r} is not an allocation of {self.name!r}")
        with self.hold_errors(), self._lock:
            self._usable()
            if allocation._page is None:
                self.emit([self._double_free(allocation, self.mempool.heap.stack_depth)])
                return
            self.generation += 1
            self._free(allocation, note)

    def _free(self, a: Allocation, note: str = "") -> None:
        page = a._page
        assert page is not None
        address = page.address + a.offset
        del page.allocs[a.offset]
        self._count -= 1
        self._bytes -= a.size
        a._page = None
        self.mempool.free(address, note)
        try:
            region = self.mempool.region(address)
            a._gone = (region.alloc_stack, region.free_stack)
        except InvalidAddressError:
            a._gone = ((), ())
        a.offset = -1
        page.give(address - page.address, a.size + self.margin)

    def _double_free(self, a: Allocation, depth: int) -> Report:
        from memguard.stacks import StackTable  # noqa: PLC0415 (a double free is rare)

        table = StackTable(depth)
        stack = table.get(table.capture(_getframe(2)))
        alloc_stack, free_stack = a._gone or ((), ())
        return Report(
            kind="pool-double-free", size=a.size, serial=a.serial, stack=stack, alloc_stack=alloc_stack,
            free_stack=free_stack,
            message=f"attempting double-free of allocation #{a.serial} ({a.size} bytes) of {self.name!r}, already freed",
            extra={"pool": self.name},
        )

    # ------------------------------------------------------------------ inspection
    def allocations(self) -> list[Allocation]:
        """The live allocations, by page and offset."""
        with self._lock:
            return [p.allocs[off] for p in self._pages for off in sorted(p.allocs)]

    def pages(self) -> list[PageInfo]:
        """Every page, in page order."""
        with self._lock:
            return [
                PageInfo(p.index, p.address, p.size, p.size - p.free_bytes, p.free_bytes, p.largest(),
                         tuple(p.allocs[off] for off in sorted(p.allocs)))
                for p in self._pages
            ]

    def stats(self) -> BlockStats:
        """Counters of the allocator."""
        with self._lock:
            free = sum(p.free_bytes for p in self._pages)
            largest = max((p.largest() for p in self._pages), default=0)
            return BlockStats(
                pages=len(self._pages), page_bytes=sum(p.size for p in self._pages), allocations=self._count,
                allocation_bytes=self._bytes, free_ranges=sum(len(p.free) for p in self._pages),
                largest_free=largest, fragmentation=1 - largest / free if free else 0.0,
            )

    def layout_map(self, leaked: Container[int] = (), width: int | None = None, title: str = "") -> HeapMap:
        """The allocator as a :class:`~memguard.heapmaps.HeapMap`: a row per page, its allocations and free ranges.

        Fragmentation is :meth:`stats`' (``1 - largest free range / free bytes``); margins
        are drawn as unused.  Allocations whose address is in ``leaked`` are drawn as
        leaked; ``width`` merges sub-pixel blocks as :meth:`HeapMap.aggregated` does.
        """
        with self._lock:
            rows = []
            for p in self._pages:
                items = [MapBlock(off, size, "free") for off, size in p.free.items()]
                for off, a in p.allocs.items():
                    address = p.address + off
                    site = site_text(a.alloc_stack) if width is None else ""
                    items.append(MapBlock(off, a.size, "leaked" if address in leaked else "live", a.serial, site,
                                          address=address))
                items.sort()
                rows.append(MapRow(f"page {p.index}", p.address, p.size, tuple(items)))
            frag = self.stats().fragmentation
        m = HeapMap(title or f"block allocator {self.name!r}", tuple(rows), frag)
        return m if width is None else m.aggregated(width, self._site_of)

    def _site_of(self, b: MapBlock) -> str:
        if b.state == "free" or not b.address:
            return ""
        try:
            return site_text(self.mempool.region(b.address).alloc_stack)
        except (InvalidAddressError, ValueError):
            return ""

    def dump_stats(self) -> dict[str, Any]:
        """A JSON-ready dump in the shape of VMA's ``vmaBuildStatsString``: totals, then each page.

        ``{"Total": {...}, "Pages": [{"Index", "Address", "Size", "UsedBytes", "UnusedBytes",
        "Fragmentation", "Suballocations": [{"Offset", "Size", "Type", "Serial", "Site"}],
        "FreeRanges": [{"Offset", "Size"}]}]}``: ``Type`` is ``"ALLOCATION"`` (VMA's
        ``"FREE"`` ranges are listed apart).  :func:`memguard.heapmaps.HeapMap`'s
        :meth:`from_dump` draws a map from it.
        """
        with self._lock:
            s = self.stats()
            pages = []
            for p in self._pages:
                pages.append({
                    "Index": p.index, "Address": p.address, "Size": p.size,
                    "UsedBytes": p.size - p.free_bytes, "UnusedBytes": p.free_bytes,
                    "Fragmentation": round(1 - p.largest() / p.free_bytes, 6) if p.free_bytes else 0.0,
                    "Suballocations": [
                        {"Offset": off, "Size": a.size, "Type": "ALLOCATION", "Serial": a.serial,
                         "Site": site_text(a.alloc_stack)}
                        for off, a in sorted(p.allocs.items())
                    ],
                    "FreeRanges": [{"Offset": off, "Size": size} for off, size in sorted(p.free.items())],
                })
        return {
            "Name": self.name,
            "Total": {
                "BlockCount": s.pages, "BlockBytes": s.page_bytes, "AllocationCount": s.allocations,
                "AllocationBytes": s.allocation_bytes, "UnusedRangeCount": s.free_ranges,
                "UnusedRangeSizeMax": s.largest_free, "Fragmentation": round(s.fragmentation, 6),
            },
            "Pages": pages,
        }

    # ------------------------------------------------------------------ defragmentation
    def defragmenter(self, algorithm: str = "full", max_bytes_per_pass: int = 0,
                     max_allocations_per_pass: int = 0) -> Defragmenter:
        """A defragmentation context (:class:`~memguard.allocators.defrag.Defragmenter`); 0 is unlimited."""
        from memguard.allocators.defrag import Defragmenter  # noqa: PLC0415 (the modules import each other)

        return Defragmenter(self, algorithm, max_bytes_per_pass, max_allocations_per_pass)

    def defragment(self, algorithm: str = "full", max_bytes_per_pass: int = 0,
                   max_allocations_per_pass: int = 0) -> DefragStats:
        """Run every pass of a defragmentation (each move copied); return its statistics."""
        ctx = self.defragmenter(algorithm, max_bytes_per_pass, max_allocations_per_pass)
        while True:
            ctx.begin_pass()
            if ctx.end_pass():
                return ctx.stats

    # ------------------------------------------------------------------ the checker contract
    def verify(self) -> list[Report]:
        """Nothing of its own: the allocations' :class:`~memguard.MemPool` is verified by the heap."""
        return []

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> list[Report]:
        """Free every page; each allocation still live is a ``memory-leak`` report.

        Reports follow the heap's ``on_error`` (with ``"raise"``, the first is raised once
        the memory is returned).  Closing twice is a no-op.
        """
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            pages, self._pages = self._pages, []
        if self.heap.closed:
            return []
        with self.heap.reporting() as saved:
            reports = self.mempool.destroy()
            for p in pages:
                self.heap.free(p.block)
                for a in p.allocs.values():
                    a._page = None
        if self._own_heap:
            self.heap.close()
        if reports and saved == "raise":
            raise error_for(reports[0])
        return reports

    def __enter__(self) -> BlockAllocator:
        return self

    def __exit__(self, *exc: Any) -> None:
        """Close the allocator."""
        self.close()

    def __repr__(self) -> str:
        return f"<BlockAllocator {self.name!r}: {len(self._pages)} pages, {self._count} allocations>"
