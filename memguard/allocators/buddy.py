"""A buddy allocator over an offset space (hcsshim's vPMem ``PoolAllocator``), optionally backed.

The space is a tree of regions: class ``c`` holds ``min_size * factor**c`` bytes, and a
region of class ``c + 1`` splits into ``factor`` children of class ``c``.  A new allocator
has one free region of the largest class.  :meth:`BuddyAllocator.allocate` takes the
smallest class that fits and the lowest free offset in it, splitting the first larger
class with free space when none is free; :meth:`BuddyAllocator.release` frees a region
and merges every parent whose children are all free again.

As in the original (defaults: 1 MiB to 4 GiB in 7 classes, factor 4), only offsets are
managed.  Unlike the original, a release that would corrupt the tree (a split parent, a
region of the wrong class, a region released twice or from another allocator) is
refused with "no memory allocated at the given offset" and changes nothing, and the
allocator is thread-safe.

With ``backing=`` a :class:`~memguard.GuardedHeap`, the offset space is one heap block and
every region is declared to a :class:`~memguard.MemPool`: an overflow from a region into a
free buddy, a write after release and a region still live at :meth:`~BuddyAllocator.destroy`
are reported with their stacks.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from dataclasses import dataclass, field
from typing import Container

from memguard.allocators.mempool import MemPool
from memguard.arguments import int_arg
from memguard.checker import Checker
from memguard.errors import (
    EmptyPoolError,
    HeapClosedError,
    MemguardError,
    InvalidMemoryClassError,
    NotAllocatedError,
    NotEnoughSpaceError,
)
from memguard.heap import fork
from memguard.heap.guarded import GuardedHeap
from memguard.heapmaps import HeapMap, MapBlock, MapRow, fragmentation_of, site_text
from memguard.kinds import error_for
from memguard.report import Report

__all__ = [
    "BuddyAllocator",
    "BuddyRegion",
    "memory_class",
    "class_size",
    "MiB",
    "GiB",
]

MiB = 1 << 20
GiB = 1 << 30
#: Largest offset space a backed allocator takes from its heap.
MAX_BACKED_BYTES = 1 << 30
_owners = itertools.count(1)


def memory_class(size: int, min_size: int = MiB, factor: int = 4) -> int:
    """The smallest class that holds ``size`` bytes (``GetMemoryClassType``), with no upper check.

    ``memory_class(4 * GiB + 1)`` is 7 with the defaults, a class no default allocator has.
    A size of 0 holds no class: :class:`InvalidMemoryClassError`.
    """
    size = int_arg(size, "size")
    if size == 0:
        raise InvalidMemoryClassError("invalid memory class", size=0)
    quotient = (size - 1) // min_size
    c = 0
    while quotient:
        quotient //= factor
        c += 1
    return c


def class_size(size_class: int, min_size: int = MiB, factor: int = 4, classes: int = 7) -> int:
    """The bytes of class ``size_class`` (``GetMemoryClassSize``): ``min_size * factor**size_class``."""
    size_class = int_arg(size_class, "size_class")
    if size_class >= classes:
        raise InvalidMemoryClassError("invalid memory class", size_class=size_class)
    return min_size * factor**size_class


@dataclass(frozen=True)
class BuddyRegion:
    """A region handed out by a :class:`BuddyAllocator`.

    :ivar offset: its first byte in the allocator's offset space.
    :ivar size_class: its memory class.
    :ivar size: the class's size in bytes (the whole region is the caller's).
    :ivar address: its first byte in memory when the allocator is backed, else ``None``.
    :ivar serial: the allocator's allocation number for it (1 for the first).
    """

    offset: int
    size_class: int
    size: int
    address: int | None = None
    serial: int = 0
    owner: int = field(default=0, repr=False)


class BuddyAllocator(Checker):
    """A buddy allocator (hcsshim's vPMem pool allocator); with ``backing``, over guarded memory.

    :param min_size: bytes of class 0.
    :param classes: number of classes; the largest holds ``min_size * factor**(classes - 1)``.
    :param factor: children per split region (>= 2).
    :param backing: ``None`` to manage offsets only, or the :class:`~memguard.GuardedHeap`
        the offset space is taken from (at most 1 GiB; pass ``memguard.install()`` for the
        process heap).
    :param name: the allocator's name in reports.
    """

    def __init__(self, min_size: int = MiB, classes: int = 7, factor: int = 4,
                 backing: GuardedHeap | None = None, name: str = "buddy") -> None:
        min_size = int_arg(min_size, "min_size")
        classes = int_arg(classes, "classes")
        factor = int_arg(factor, "factor")
        if min_size < 1:
            raise ValueError("min_size must be >= 1")
        if not 1 <= classes <= 64:
            raise ValueError(f"classes must be between 1 and 64, got {classes}")
        if factor < 2:
            raise ValueError(f"factor must be >= 2, got {factor}")
        if backing is not None and not isinstance(backing, GuardedHeap):
            raise TypeError(
                f"backing must be a GuardedHeap or None, got {type(backing).__name__} "
                "(for the process heap pass memguard.install())"
            )
        self.min_size = min_size
        self.classes = classes
        self.factor = factor
        self._sizes = [min_size * factor**c for c in range(classes)]
        #: Bytes of the offset space (the largest class).
        self.total = self._sizes[-1]
        if backing is not None and self.total > MAX_BACKED_BYTES:
            raise ValueError(f"a backed allocator takes at most {MAX_BACKED_BYTES} bytes, not {self.total}")
        if backing is not None:
            super().__init__(name=name, heap=backing, on_error=None)
        else:
            super().__init__(name=name, on_error="raise")
        self.heap = backing
        self._owner = next(_owners)
        self._lock = threading.Lock()
        if backing is None:  # over no heap: made consistent across forks on its own
            fork.track_checker(self)
        self._free: list[list[int]] = [[] for _ in range(classes)]
        self._busy: list[dict[int, BuddyRegion]] = [{} for _ in range(classes)]
        self._split: list[set[int]] = [set() for _ in range(classes)]
        self._pools = [False] * classes
        self._free[-1].append(0)
        self._pools[-1] = True
        self._serial = 0
        self._destroyed = False
        self.base = 0
        self.mempool: MemPool | None = None
        if backing is not None:
            self.base = backing.malloc(self.total)
            try:
                self.mempool = MemPool(backing, name=name, quarantine_bytes=self.total, owner=self)
                self.mempool.add_chunk(self.base)
            except BaseException:
                backing.free(self.base)
                raise

    # ------------------------------------------------------------------ sizes
    def memory_class(self, size: int) -> int:
        """The smallest class of this allocator's geometry holding ``size`` bytes (no upper check)."""
        return memory_class(size, self.min_size, self.factor)

    def class_size(self, size_class: int) -> int:
        """The bytes of ``size_class`` in this allocator."""
        return class_size(size_class, self.min_size, self.factor, self.classes)

    # ------------------------------------------------------------------ allocate / release
    def _usable(self) -> None:
        if self._destroyed:
            raise HeapClosedError(f"the buddy allocator {self.name!r} was destroyed")

    def allocate(self, size: int) -> BuddyRegion:
        """The lowest free region of the smallest class holding ``size`` bytes (splitting as needed).

        :raises InvalidMemoryClassError: ``size`` is 0 or larger than the largest class.
        :raises NotEnoughSpaceError: no region of that class or a larger one is free.
        """
        size = int_arg(size, "size")
        if size == 0 or size > self.total:
            raise InvalidMemoryClassError("invalid memory class", size=size)
        c = self.memory_class(size)
        with self.hold_errors(), self._lock:
            self._usable()
            k = c
            while k < self.classes and not self._free[k]:
                k += 1
            if k == self.classes:
                raise NotEnoughSpaceError("not enough space", size=size, size_class=c)
            offset = self._take(c, k)
            self._serial += 1
            address = None
            if self.mempool is not None:
                address = self.base + offset
                try:
                    handed = self.mempool.alloc(address, self._sizes[c])
                except BaseException:
                    self._give_back(c, offset)
                    raise
                if not handed:
                    self._give_back(c, offset)
                    raise MemguardError(f"the backing memory of buddy allocator {self.name!r} is not usable")
            region = BuddyRegion(offset, c, self._sizes[c], address, self._serial, self._owner)
            self._busy[c][offset] = region
        return region

    def _take(self, c: int, k: int) -> int:
        """Take the lowest free offset of class ``k``, splitting it down to class ``c``."""
        offset = self._free[k].pop(0)
        for j in range(k, c, -1):
            self._split[j].add(offset)
            child = self._sizes[j - 1]
            # Class j - 1 had no free region, so the children are its whole, sorted free list.
            self._free[j - 1] = [offset + i * child for i in range(1, self.factor)]
            self._pools[j - 1] = True
        return offset

    def release(self, region: BuddyRegion) -> None:
        """Free ``region`` and merge each parent whose children are all free.

        :raises InvalidMemoryClassError: its class is out of this allocator's range.
        :raises EmptyPoolError: its class never held a region.
        :raises NotAllocatedError: it is not a region this allocator handed out and still
            holds (released already, a split parent, the wrong class, another allocator's);
            nothing changes.
        """
        if not isinstance(region, BuddyRegion):
            raise TypeError(f"region must be a BuddyRegion, got {type(region).__name__}")
        c, offset = region.size_class, region.offset
        with self.hold_errors(), self._lock:
            self._usable()
            if type(c) is not int or not 0 <= c < self.classes:
                raise InvalidMemoryClassError("invalid memory class", size_class=c, offset=offset)
            if not self._pools[c]:
                raise EmptyPoolError("operation on empty pool", size_class=c, offset=offset)
            if self._busy[c].get(offset) != region:
                raise NotAllocatedError("no memory allocated at the given offset", size_class=c, offset=offset)
            del self._busy[c][offset]
            if self.mempool is not None:
                self.mempool.free(self.base + offset)
            self._give_back(c, offset)

    def _give_back(self, c: int, offset: int) -> None:
        """Put ``offset`` back in class ``c`` and merge upwards while all siblings are free."""
        free = self._free
        bisect.insort(free[c], offset)
        while c + 1 < self.classes:
            parent = offset - offset % self._sizes[c + 1]
            if parent not in self._split[c + 1]:
                return
            i = bisect.bisect_left(free[c], parent)
            step = self._sizes[c]
            siblings = free[c][i : i + self.factor]
            if siblings != [parent + n * step for n in range(self.factor)]:
                return
            del free[c][i : i + self.factor]
            self._split[c + 1].discard(parent)
            c, offset = c + 1, parent
            bisect.insort(free[c], offset)

    # ------------------------------------------------------------------ introspection
    def free_offsets(self, size_class: int) -> list[int]:
        """Sorted offsets of the free regions of ``size_class``."""
        c = self._class_arg(size_class)
        with self._lock:
            return list(self._free[c])

    def busy_offsets(self, size_class: int) -> list[int]:
        """Sorted offsets of the regions of ``size_class`` handed out and not yet released."""
        c = self._class_arg(size_class)
        with self._lock:
            return sorted(self._busy[c])

    def split_offsets(self, size_class: int) -> list[int]:
        """Sorted offsets of the regions of ``size_class`` split into children (neither free nor busy)."""
        c = self._class_arg(size_class)
        with self._lock:
            return sorted(self._split[c])

    def regions(self) -> list[BuddyRegion]:
        """The regions handed out and not yet released, by offset."""
        with self._lock:
            return sorted((r for busy in self._busy for r in busy.values()), key=lambda r: r.offset)

    def _class_arg(self, size_class: int) -> int:
        c = int_arg(size_class, "size_class")
        if c >= self.classes:
            raise InvalidMemoryClassError("invalid memory class", size_class=c)
        return c

    # ------------------------------------------------------------------ heap map
    def layout_map(self, leaked: Container[int] = (), width: int | None = None) -> HeapMap:
        """The allocator as a :class:`~memguard.heapmaps.HeapMap`: one row for the offset space.

        Regions handed out are ``"live"`` (``"leaked"`` when their address, or their offset
        for an unbacked allocator, is in ``leaked``), free regions ``"free"``; split parents
        are not drawn (their children cover them).  Unbacked, the row starts at 0 and
        addresses in tooltips are offsets; backed, it starts at the backing block and
        tooltips carry the allocation site.  Fragmentation is ``1 - largest free region /
        free bytes`` (buddies are not merged unless their parent is).  ``width`` merges
        sub-pixel regions as :meth:`HeapMap.aggregated` does.  A destroyed allocator's map
        has no row.
        """
        mode = "backed" if self.mempool is not None else "offsets only"
        title = f"buddy allocator {self.name!r}"
        with self._lock:
            if self._destroyed:
                return HeapMap(title, (), 0.0, ("destroyed",))
            busy = [r for regions in self._busy for r in regions.values()]
            free = [(offset, self._sizes[c]) for c in range(self.classes) for offset in self._free[c]]
        base = self.base
        blocks = [MapBlock(offset, size, "free", address=base + offset if base else 0) for offset, size in free]
        for r in busy:
            address = base + r.offset
            site = self._site_of(MapBlock(r.offset, r.size, "live", address=address)) if width is None else ""
            blocks.append(MapBlock(r.offset, r.size, "leaked" if address in leaked else "live", r.serial, site,
                                   address=address if base else 0))
        blocks.sort()
        row = MapRow(f"offset space ({mode}, {self.classes} classes of {self.min_size}*{self.factor}**c bytes)",
                     base, self.total, tuple(blocks))
        m = HeapMap(title, (row,), fragmentation_of(size for _, size in free))
        return m if width is None else m.aggregated(width, self._site_of)

    def _site_of(self, b: MapBlock) -> str:
        if self.mempool is None or b.state == "free" or not b.address:
            return ""
        try:
            return site_text(self.mempool.region(b.address).alloc_stack)
        except (MemguardError, ValueError):
            return ""

    # ------------------------------------------------------------------ the checker contract
    def verify(self) -> list[Report]:
        """Nothing of its own: the regions' :class:`~memguard.MemPool` is verified by the heap."""
        return []

    @property
    def destroyed(self) -> bool:
        """Whether :meth:`destroy` was called."""
        return self._destroyed

    #: Whether the allocator was destroyed (:meth:`close` is :meth:`destroy`).
    closed = destroyed

    def destroy(self) -> list[Report]:
        """Forget every region; when backed, each one still live is a ``memory-leak`` report.

        The backing memory goes back to the heap.  Reports follow the heap's ``on_error``
        (with ``"raise"``, the first is raised once the memory is returned).  Destroying
        twice is a no-op.
        """
        with self._lock:
            if self._destroyed:
                return []
            self._destroyed = True
        if self.heap is None or self.mempool is None:
            return []
        with self.heap.reporting() as saved:
            reports = self.mempool.destroy()
            if not self.heap.closed:
                self.heap.free(self.base)
        if reports and saved == "raise":
            raise error_for(reports[0])
        return reports

    def close(self) -> list[Report]:
        """:meth:`destroy` the allocator (the checker contract's name for it)."""
        return self.destroy()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Destroy the allocator."""
        self.destroy()

    def __repr__(self) -> str:
        with self._lock:
            live = sum(map(len, self._busy))
        mode = "backed" if self.heap is not None else "offsets"
        return f"<BuddyAllocator {self.name!r}: {self.classes} classes of {self.min_size}*{self.factor}**c bytes, {mode}, {live} live>"
