"""Guard-page blocks: an out-of-bounds or freed access faults, and the fault names its line.

A block chosen for guarding (``guard_sample=N``, ``guard="all"``, ``guard="underflow"``)
gets pages of its own from the OS (``mmap``), outside the heap's arenas:

* overflow side (the default): the user region ends against an inaccessible page
  (``PROT_NONE``), right-aligned to the block's alignment (16 bytes, or the ``memalign``
  alignment); the few slack bytes between the block's end and the guard page carry the
  heap's rear canary and are verified at free and by ``check()``;
* underflow side (``guard="underflow"``): the guard page comes first and the region
  starts right after it; the slack after the block's end carries the canary.

On free the whole mapping becomes inaccessible and waits in a bounded guard quarantine
(:data:`QUARANTINE_BLOCKS` blocks per heap), so a read or a write after free faults too;
then up to :data:`SPARE_MAPPINGS` mappings are kept, still inaccessible, for new blocks of
the same length, and the others are unmapped.  At most ``guard_max`` guarded blocks are live at once; beyond
that allocations come from the ordinary heap.

A fault in a guard page is caught by :mod:`memguard.heap.faults`, which records it and
opens the block's pages so the access completes; :meth:`GuardPages.drain` turns the
records into findings at the next memguard call (an allocation, ``check()``, the free of
a guarded block, the end of a test, the exit report).  Each guarded block reports its
first bad access only (its pages stay open after it), as GWP-ASan's recoverable mode.

:class:`GuardPages` is a checker over its heap: the heap's ``check()`` verifies its
canaries and drains its faults, its findings follow the heap's ``on_error``.  memguard
itself never reads an inaccessible page: the heap sends every operation on a guarded
block here (free, realloc, ``block()``, leaks), and only live blocks' slack is read.
"""

from __future__ import annotations

import ctypes
import random
import weakref
from collections import deque
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from memguard import native
from memguard.checker import Checker
from memguard.errors import HeapClosedError
from memguard.findings import thread_label
from memguard.heap import faults
from memguard.heap.faults import PAGES, Fault
from memguard.heap.layout import BlockInfo
from memguard.leaks import BlockRecord
from memguard.native import mman
from memguard.report import Report

if TYPE_CHECKING:
    from memguard.heap.guarded import GuardedHeap

__all__ = ["GuardBlock", "GuardPages", "QUARANTINE_BLOCKS", "GUARD_MODES"]

#: Freed guarded blocks kept inaccessible per heap before their pages are unmapped (or reused).
QUARANTINE_BLOCKS = 256
#: Mappings of blocks that left the guard quarantine kept (inaccessible) per heap for new
#: guarded blocks of the same length: an mprotect instead of an mmap, an mprotect and an munmap.
SPARE_MAPPINGS = 64
#: The values of ``guard=``: ``None`` (sampled by ``guard_sample``, overflow side),
#: ``"all"`` (every allocation, overflow side), ``"underflow"`` (the guard page before
#: the block; every allocation, or the sampled ones when ``guard_sample`` is set).
GUARD_MODES = (None, "off", "all", "underflow")

_FILL_NEW = 0xCD


class GuardBlock:
    """One guarded block: its mapping, its user region and its state (mutable, one per block)."""

    __slots__ = (
        "owner", "base", "length", "data", "data_len", "address", "size", "serial", "asid", "fsid",
        "freed", "opened", "canary_at", "canary", "views",
    )

    def __init__(
        self, owner: GuardPages, base: int, length: int, data: int, data_len: int,
        address: int, size: int, serial: int, asid: int, canary_at: int, canary: bytes,
    ) -> None:
        self.owner = owner
        #: the whole mapping (data pages and guard page)
        self.base = base
        self.length = length
        #: the data pages (accessible while the block is live)
        self.data = data
        self.data_len = data_len
        self.address = address
        self.size = size
        self.serial = serial
        self.asid = asid
        self.fsid = 0
        self.freed = False
        #: a fault opened its pages (its first bad access was recorded)
        self.opened = False
        #: where the slack canary starts, and its bytes
        self.canary_at = canary_at
        self.canary = canary
        #: the ctypes arrays behind the memoryviews handed out by ``view()`` (weakly)
        self.views: list[weakref.ref[Any]] = []


class GuardPages(Checker):
    """The guarded blocks of one heap (made by the heap when a guard option is set)."""

    def __init__(self, heap: GuardedHeap, mode: Literal["overflow", "underflow"], sample: int, max_live: int) -> None:
        super().__init__(name=f"{heap.name} guard pages", heap=heap, on_error=None)
        self._mm = mman.require_mman()
        faults.install()
        self._heap = heap
        self.underflow = mode == "underflow"
        #: one allocation in ``sample`` is guarded (0: every one)
        self.sample = sample
        self.max_live = max_live
        self.page = self._mm.page_size
        self._shift = faults.page_shift()
        #: user address -> block, for live and quarantined guarded blocks
        self.blocks: dict[int, GuardBlock] = {}
        #: faults the handler recorded and no finding was made of yet, oldest first
        self.faults: list[Fault] = []
        self._quarantine: deque[GuardBlock] = deque()
        #: mapping length -> inaccessible mappings of blocks that left the quarantine, for reuse
        self._spare: dict[int, list[GuardBlock]] = {}
        self._spares = 0
        #: blocks out of the quarantine whose pages a view still points at
        self._held: list[GuardBlock] = []
        self.live_blocks = 0
        self.live_bytes = 0
        #: user bytes of every guarded block made so far
        self.total_bytes = 0
        self.frees = 0
        self._random = random.Random()

    @property
    def closed(self) -> bool:
        """Whether the heap is closed."""
        return self._heap.closed

    def next_countdown(self) -> int:
        """Allocations until the next sampled one: uniform in ``[1, 2 * sample - 1]`` (mean ``sample``)."""
        return self._random.randint(1, max(1, 2 * self.sample - 1))

    # ------------------------------------------------------------------ allocation
    def allocate(self, size: int, alignment: int, zero: bool, frame: FrameType | None) -> int:
        """A new guarded block of ``size`` bytes; 0 when ``guard_max`` guarded blocks are live."""
        heap = self._heap
        page = self.page
        align = max(alignment, 16)
        span = -(-size // align) * align
        sid = heap._stacks.capture(frame)
        faults.ensure_on_top()  # (faulthandler enabled since the heap was made, say)
        with heap._lock:
            if heap._closed:
                raise HeapClosedError("the heap is closed")
            if self.live_blocks >= self.max_live or span > (1 << 40):
                return 0
            data_len = max(page, -(-span // page) * page)
            length = data_len + page
            spares = self._spare.get(length)
            reused = bool(spares)
            if spares:
                old = spares.pop()
                self._spares -= 1
                base = old.base
                self._forget_pages(old)
            else:
                base = self._mm.map(length)
            if self.underflow:
                data = base + page
                p = data
                guard = base
                canary_len = min(data + data_len - (p + size), span - size + heap.redzone)
            else:
                data = base
                p = base + data_len - span
                guard = base + data_len
                canary_len = span - size
            try:
                # A spare mapping is all inaccessible (its guard page too): open its data pages.
                opened = self._mm.protect(data, data_len, mman.PROT_RW) if reused else True
                if not opened or not self._mm.protect(guard, page, mman.PROT_NONE):
                    raise MemoryError("mprotect of a guarded block's pages failed")
                if not zero:
                    _memset(p, _FILL_NEW, size)
                elif reused:
                    _memset(p, 0, size)
                canary = heap._expected(p, size)[1]
                canary = (canary * (canary_len // max(1, len(canary)) + 1))[:canary_len]
                _write(p + size, canary)
                serial = heap._count_alloc(0, p)
                block = GuardBlock(self, base, length, data, data_len, p, size, serial, sid, p + size, canary)
                PAGES[guard >> self._shift] = block
                self.blocks[p] = block
                self.live_blocks += 1
                self.live_bytes += size
                self.total_bytes += size
            except BaseException:
                if self.blocks.get(p) is None:
                    PAGES.pop(guard >> self._shift, None)
                    self._mm.unmap(base, length)
                raise
        return p

    # ------------------------------------------------------------------ free
    def free(self, p: int, frame: FrameType | None, hooks: bool = True) -> None:
        """Free the guarded block at ``p``: verify its canary, make it inaccessible, quarantine it
        (``hooks=False``: without the ``memguard_free`` hook, for a block its caller never got)."""
        __tracebackhide__ = True
        heap = self._heap
        sid = heap._stacks.capture(frame)
        freed = False
        with heap._lock:
            block = self.blocks.get(p)
            if block is None or heap._closed:
                reports = [] if block is None else [self._double_free(block, frame, closed=True)]
            elif block.freed:
                reports = [self._double_free(block, frame)]
            else:
                reports = self._verify_block(block)
                block.freed = True
                block.fsid = sid
                _memset(block.address, 0xDD, block.size)
                self._mm.protect(block.base, block.length, mman.PROT_NONE)
                block.opened = False
                shift = self._shift
                for page in range(block.base >> shift, (block.base + block.length) >> shift):
                    PAGES[page] = block
                self._quarantine.append(block)
                self.live_blocks -= 1
                self.live_bytes -= block.size
                self.frees += 1
                freed = True
                while len(self._quarantine) > QUARANTINE_BLOCKS:
                    if self._held:
                        held, self._held = self._held, []
                        for old in held:
                            self._unmap(old)
                    self._unmap(self._quarantine.popleft())
        on_free = heap.seams.on_free if hooks else None
        if freed and on_free is not None:
            on_free(heap, p)
        reports = self.drain() + reports
        heap.emit(reports)

    def _unmap(self, block: GuardBlock) -> None:
        """Forget a quarantined block and give its pages back (heap lock held).

        Pages a memoryview from :meth:`view` still points at stay mapped (inaccessible, so
        a use through the view is still a use-after-free finding) until the view is gone.
        """
        if any(ref() is not None for ref in block.views):
            self._held.append(block)
            return
        if self.blocks.get(block.address) is block:
            del self.blocks[block.address]
        if self._spares < SPARE_MAPPINGS and not block.opened:
            # Kept, inaccessible, for the next block of its length; its pages stay in the
            # table until then, so a use is still reported.
            self._spare.setdefault(block.length, []).append(block)
            self._spares += 1
            return
        self._forget_pages(block)
        self._mm.unmap(block.base, block.length)

    def _forget_pages(self, block: GuardBlock) -> None:
        """Take the pages of ``block`` out of the fault handler's table."""
        shift = self._shift
        for page in range(block.base >> shift, (block.base + block.length) >> shift):
            if PAGES.get(page) is block:
                del PAGES[page]

    def _double_free(self, block: GuardBlock, frame: FrameType | None, closed: bool = False) -> Report:
        stacks = self._heap._stacks
        return Report(
            kind="double-free", address=block.address, size=block.size, serial=block.serial,
            alloc_stack=stacks.get(block.asid), free_stack=stacks.get(block.fsid),
            stack=stacks.get(stacks.capture(frame)), thread=thread_label(),
            message=(
                f"attempting free on 0x{block.address:x}, a {block.size}-byte guarded block that was already freed"
                if not closed else f"attempting free on 0x{block.address:x} after its heap was closed"
            ),
        )

    # ------------------------------------------------------------------ verification
    def _verify_block(self, block: GuardBlock) -> list[Report]:
        """The slack canary of a live block (its pages are accessible): an overflow found at free/check."""
        if block.freed or not block.canary:
            return []
        found = _read(block.canary_at, len(block.canary))
        if found == block.canary:
            return []
        first = next(i for i, (a, b) in enumerate(zip(found, block.canary)) if a != b)
        last = max(i for i, (a, b) in enumerate(zip(found, block.canary)) if a != b)
        _write(block.canary_at, block.canary)  # repaired: each corruption is reported once
        stacks = self._heap._stacks
        offset = block.size + first
        return [Report(
            kind="heap-buffer-overflow", address=block.address, size=block.size, offset=offset,
            alloc_stack=stacks.get(block.asid), serial=block.serial, expected=block.canary[first : last + 1],
            found=found[first : last + 1], count=last - first + 1, thread=thread_label(),
            message=(
                f"{last - first + 1} byte(s) after the {block.size}-byte guarded block 0x{block.address:x} were "
                "changed (in the slack before its guard page; found at free or check, not at the access)"
            ),
            extra={"guard_page": True},
        )]

    def verify(self) -> list[Report]:
        """The faults recorded since the last call, then the canaries of the live guarded blocks."""
        reports = self.drain()
        heap = self._heap
        with heap._lock:
            if heap._closed:
                return reports
            for block in list(self.blocks.values()):
                reports.extend(self._verify_block(block))
        return reports

    def drain(self) -> list[Report]:
        """Findings for the faults the handler recorded since the last call (oldest first)."""
        reports: list[Report] = []
        pending = self.faults
        stacks = self._heap._stacks
        while pending:
            fault = pending.pop(0)
            b = fault.block
            freed = fault.freed
            offset = fault.address - b.address
            if freed:
                kind, where = "heap-use-after-free", f"{offset} bytes inside of" if 0 <= offset < b.size else "in"
            elif offset < 0:
                kind, where = "heap-buffer-underflow", f"{-offset} bytes to the left of"
            else:
                kind, where = "heap-buffer-overflow", f"{offset - b.size} bytes to the right of"
            access = {True: "WRITE", False: "READ", None: "READ or WRITE"}[fault.write]
            reports.append(Report(
                kind=kind, address=b.address, size=b.size, offset=offset, serial=b.serial,
                alloc_stack=stacks.get(b.asid), free_stack=stacks.get(b.fsid) if freed else (),
                stack=fault.stack, thread=fault.thread, count=1,
                message=(
                    f"{access} at 0x{fault.address:x}, {where} the {b.size}-byte "
                    f"{'freed ' if freed else ''}block 0x{b.address:x} (allocation #{b.serial}), "
                    "caught at the access by a guard page"
                ),
                extra={"access": None if fault.write is None else ("write" if fault.write else "read"), "guard_page": True},
            ))
        return reports

    # ------------------------------------------------------------------ what the heap asks
    def live_records(self, since: int) -> list[BlockRecord]:
        """The live guarded blocks with a serial above ``since`` (heap lock held)."""
        return [
            BlockRecord(b.address, b.size, b.serial, b.asid)
            for b in list(self.blocks.values()) if not b.freed and b.serial > since
        ]

    def info(self, p: int) -> BlockInfo | None:
        """:meth:`GuardedHeap.block` of a guarded block (None: not one)."""
        b = self.blocks.get(p)
        if b is None:
            return None
        stacks = self._heap._stacks
        return BlockInfo(
            address=p, size=b.size, serial=b.serial, state="quarantined" if b.freed else "live",
            alloc_stack=stacks.get(b.asid), free_stack=stacks.get(b.fsid) if b.freed else (),
        )

    def view(self, p: int) -> memoryview | None:
        """A writable ``'B'`` memoryview of the live guarded block at ``p`` (None: not one).

        The view keeps the block's pages mapped after the block is freed and leaves the guard
        quarantine; a use of it after the free is a use-after-free finding.
        """
        b = self.blocks.get(p)
        if b is None or b.freed:
            return None
        array = (ctypes.c_ubyte * b.size).from_address(p)
        b.views = [ref for ref in b.views if ref() is not None] + [weakref.ref(array)]
        return memoryview(array).cast("B")

    def size_of(self, p: int) -> int | None:
        """The size of the live guarded block at ``p`` (None: not a live guarded block)."""
        b = self.blocks.get(p)
        return None if b is None or b.freed else b.size

    def release(self) -> None:
        """The heap closed: unmap the quarantined blocks and the spare mappings (live blocks
        stay mapped: something may still use them)."""
        self._spares = SPARE_MAPPINGS
        while self._quarantine:
            self._unmap(self._quarantine.popleft())
        for spares in self._spare.values():
            for block in spares:
                self._forget_pages(block)
                self._mm.unmap(block.base, block.length)
        self._spare.clear()

    def after_fork_in_child(self) -> None:
        """In a forked child: the parent's faults not yet reported are the parent's to report."""
        del self.faults[:]

    def close(self) -> list[Report]:
        """Closed with its heap (nothing of its own to release)."""
        return []


def _memset(address: int, byte: int, n: int) -> None:
    native.memset(address, byte, n)


def _write(address: int, data: bytes) -> None:
    if data:
        native.memmove(address, data, len(data))


def _read(address: int, n: int) -> bytes:
    return bytes(native.string_at(address, n))
