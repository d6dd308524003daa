"""The defragmenter of a :class:`~memguard.BlockAllocator` (VMA's, as vkngwrapper's ``memutils/defrag`` ports it).

A :class:`Defragmenter` runs a defragmentation pass by pass::

    ctx = blocks.defragmenter(algorithm="full", max_bytes_per_pass=0, max_allocations_per_pass=0)
    while True:
        moves = ctx.begin_pass()     # the caller may set m.op = "ignore" or "destroy"
        if ctx.end_pass():           # True when the pass had no moves
            break

``begin_pass`` collects moves: pages are walked from the last to the second (a page made
immovable never is a source), the allocations of a page from the highest offset down.
``"fast"`` moves an allocation to the first earlier page with room, at its lowest offset
that fits; ``"full"`` does the same and, when no earlier page has room, moves it within
its page to the lowest offset that fits if that is lower; with a single page only
``"full"`` (and the algorithms built on it) moves anything, within the page.
``"balanced"`` (VMA's default) is ``"full"`` except that a move within a page is made
only when it is worth it: the free range after the allocation, or the one after the
allocation visited before it, is at least half the average free range, or the
allocation is no larger than the average free range or the average allocation (the
averages are taken at the first pass and again after a pass that found nothing, which
is then retried).  ``"extensive"`` (empty the last pages first) is, as in VMA and
vkngwrapper when the buffer/image granularity is 1, which it always is for plain memory,
``"full"``.  A destination is reserved when its move is collected, so two moves of a
pass never overlap and the sources stay occupied until ``end_pass``.  A move that would
take the pass over ``max_bytes_per_pass`` is skipped; 16 consecutive skips end the pass,
and reaching either maximum ends it.

``end_pass`` carries the moves out: ``"copy"`` copies the bytes (through
:meth:`~memguard.MemPool.move`, announced to ``memguard_pool_move``), re-points the
:class:`~memguard.allocators.blocks.Allocation` and poisons the old range (a later write
through the old address is a ``pool-use-after-free`` naming the move and the pass);
``"ignore"`` leaves the allocation and makes its page immovable (moved to the front of
the page list); ``"destroy"`` frees it.  At the end of a pass every empty page behind the immovable ones
goes back to the heap, as in VMA.  Plugins
see each pass through ``memguard_defrag_pass``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

from memguard.allocators.blocks import Allocation, BlockAllocator, Page
from memguard.arguments import int_arg
from memguard.errors import DefragmentationError
from memguard.report import Report
from memguard.stacks import StackTable

__all__ = ["Defragmenter", "Move", "DefragStats", "ALGORITHMS", "OPS", "MAX_SKIPS"]

#: The algorithms :meth:`BlockAllocator.defragmenter` takes.
ALGORITHMS = ("fast", "full", "balanced", "extensive")
#: The operations a :class:`Move` may be given.
OPS = ("copy", "ignore", "destroy")
#: Consecutive moves skipped for the byte budget that end a pass.
MAX_SKIPS = 16
_UNLIMITED = sys.maxsize
_getframe = sys._getframe


@dataclass(slots=True)
class Move:
    """One move of a pass (the caller may change ``op`` before ``end_pass``).

    :ivar allocation: the allocation moved (its handle follows it).
    :ivar size: its bytes.
    :ivar src_page: its page index when the move was collected; ``src_offset`` its offset.
    :ivar dst_page: the destination page index when collected; ``dst_offset`` the offset reserved there.
    :ivar op: ``"copy"`` (default: memguard copies), ``"ignore"`` or ``"destroy"``.
    """

    allocation: Allocation
    size: int
    src_page: int
    src_offset: int
    dst_page: int
    dst_offset: int
    op: str = "copy"
    _dst: Page | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class DefragStats:
    """What a defragmentation did so far.

    :ivar bytes_moved: bytes copied (copies only).
    :ivar allocations_moved: allocations copied.
    :ivar bytes_freed: bytes of the pages given back to the heap.
    :ivar pages_freed: pages given back to the heap.
    :ivar passes: passes ended.
    """

    bytes_moved: int = 0
    allocations_moved: int = 0
    bytes_freed: int = 0
    pages_freed: int = 0
    passes: int = 0


class Defragmenter:
    """A defragmentation of one :class:`BlockAllocator`, pass by pass (see the module).

    Valid while the allocator is changed by nobody else: after an ``allocate``, ``free`` or
    ``add_page`` by a caller, the next ``begin_pass`` raises :class:`DefragmentationError`.
    """

    def __init__(self, allocator: BlockAllocator, algorithm: str = "full", max_bytes_per_pass: int = 0,
                 max_allocations_per_pass: int = 0) -> None:
        if not isinstance(allocator, BlockAllocator):
            raise TypeError(f"allocator must be a BlockAllocator, got {type(allocator).__name__}")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        self.allocator = allocator
        self.algorithm = algorithm
        self.max_bytes_per_pass = int_arg(max_bytes_per_pass, "max_bytes_per_pass") or _UNLIMITED
        self.max_allocations_per_pass = int_arg(max_allocations_per_pass, "max_allocations_per_pass") or _UNLIMITED
        self._generation = allocator.generation
        self._moves: list[Move] | None = None
        self._pass = 0
        self._immovable = 0
        self._skipped = 0
        self._pass_bytes = 0
        self._pass_count = 0
        self._stats = DefragStats()
        #: "balanced": (average allocation, average free range), or None to take them again.
        self._averages: tuple[float, float] | None = None
        self._prev_free = 0

    @property
    def stats(self) -> DefragStats:
        """The statistics of the passes ended so far."""
        return self._stats

    @property
    def pass_number(self) -> int:
        """The pass begun last (1 for the first; 0 before any)."""
        return self._pass

    @property
    def moves(self) -> list[Move]:
        """The moves of the pass in progress (empty between passes)."""
        return list(self._moves or ())

    def _error(self, message: str) -> DefragmentationError:
        return DefragmentationError(f"defragmentation of {self.allocator.name!r}: {message}",
                                    allocator=self.allocator.name, pass_number=self._pass)

    # ------------------------------------------------------------------ begin
    def begin_pass(self) -> list[Move]:
        """Collect the moves of the next pass (their destinations reserved) and return them."""
        blocks = self.allocator
        with blocks._lock:
            blocks._usable()
            if self._moves is not None:
                raise self._error(f"begin_pass() called twice: pass {self._pass} has not ended (call end_pass())")
            if blocks.generation != self._generation:
                raise self._error(
                    "the allocator changed underneath this defragmenter (an allocate, free or add_page since "
                    f"{'it was made' if not self._pass else f'pass {self._pass}'}): make a new one"
                )
            self._pass += 1
            self._moves = []
            self._skipped = self._pass_bytes = self._pass_count = 0
            self._collect()
            moves = list(self._moves)
        if blocks.observes("memguard_defrag_pass"):
            blocks.notify("memguard_defrag_pass", context=self, phase="begin", moves=tuple(moves))
        return moves

    def _collect(self) -> None:
        pages = self.allocator._pages
        if len(pages) == 1:
            if self.algorithm != "fast":
                self._walk(pages[0], self._within)
            return
        if self.algorithm == "balanced":
            retry = self._averages is not None
            if self._averages is None:
                self._averages = self._measure()
            self._run(self._balanced)
            if not self._moves and retry:
                self._averages = self._measure()
                self._skipped = 0
                self._run(self._balanced)
            return
        self._run(self._fast if self.algorithm == "fast" else self._full)

    def _run(self, handler: Callable[[Page, Allocation], bool]) -> None:
        pages = self.allocator._pages
        for i in range(len(pages) - 1, self._immovable, -1):
            self._prev_free = 0
            if self._walk(pages[i], handler):
                return

    def _measure(self) -> tuple[float, float]:
        blocks = self.allocator
        ranges = sum(len(p.free) for p in blocks._pages)
        free = sum(p.free_bytes for p in blocks._pages)
        return blocks._bytes / max(blocks._count, 1), free / max(ranges, 1)

    def _balanced(self, page: Page, a: Allocation) -> bool:
        moved, ended = self._to_earlier(page, a)
        if moved:
            return ended
        avg_alloc, avg_free = self._averages or (0.0, 0.0)
        next_free = page.free.get(a.offset + a.size + self.allocator.margin, 0)
        prev_free, self._prev_free = self._prev_free, next_free
        if (prev_free >= avg_free / 2 or next_free >= avg_free / 2 or a.size <= avg_free
                or a.size <= avg_alloc):
            return self._within(page, a)
        return False

    def _walk(self, page: Page, handler: Callable[[Page, Allocation], bool]) -> bool:
        """Offer each allocation of ``page`` (highest offset first) to ``handler``; True ends the pass."""
        for off in sorted(page.allocs, reverse=True):
            a = page.allocs[off]
            if self._pass_bytes + a.size > self.max_bytes_per_pass:
                self._skipped += 1
                if self._skipped >= MAX_SKIPS:
                    return True
                continue
            self._skipped = 0
            if handler(page, a):
                return True
        return False

    def _reserve(self, a: Allocation, src: Page, dst: Page, found: tuple[int, int, int]) -> bool:
        """Reserve the destination and record the move; True when a maximum is reached."""
        at, off, _ = found
        dst.take(off, at, a.size + self.allocator.margin)
        move = Move(a, a.size, src.index, a.offset, dst.index, at, _dst=dst)
        a._move = move
        self._moves.append(move)  # type: ignore[union-attr]
        self._pass_bytes += a.size
        self._pass_count += 1
        return self._pass_count >= self.max_allocations_per_pass or self._pass_bytes >= self.max_bytes_per_pass

    def _to_earlier(self, page: Page, a: Allocation) -> tuple[bool, bool]:
        """Move ``a`` to the first earlier page with room: ``(moved, pass ended)``."""
        need = a.size + self.allocator.margin
        for dst in self.allocator._pages[: page.index]:
            if dst.free_bytes >= need:
                found = dst.find(need, a.align, "min_offset")
                if found is not None:
                    return True, self._reserve(a, page, dst, found)
        return False, False

    def _fast(self, page: Page, a: Allocation) -> bool:
        return self._to_earlier(page, a)[1]

    def _full(self, page: Page, a: Allocation) -> bool:
        moved, ended = self._to_earlier(page, a)
        if moved:
            return ended
        return self._within(page, a)

    def _within(self, page: Page, a: Allocation) -> bool:
        need = a.size + self.allocator.margin
        if a.offset == 0 or page.free_bytes < need:
            return False
        found = page.find(need, a.align, "min_offset")
        if found is not None and found[0] < a.offset:
            return self._reserve(a, page, page, found)
        return False

    # ------------------------------------------------------------------ end
    def end_pass(self) -> bool:
        """Carry out the pass's moves by their ``op``; True when the pass had none (defragmentation done)."""
        blocks = self.allocator
        moves = self._moves
        if moves is None:
            raise self._error("end_pass() called with no pass begun (call begin_pass() first)")
        for m in moves:
            if m.op not in OPS:
                raise ValueError(f"move of allocation #{m.allocation.serial}: op must be one of {', '.join(OPS)}, "
                                 f"got {m.op!r}")
        if blocks.observes("memguard_defrag_pass"):
            blocks.notify("memguard_defrag_pass", context=self, phase="apply", moves=tuple(moves))
        stats = self._stats
        moved = moved_bytes = freed = freed_bytes = 0
        with blocks.hold_errors(), blocks._lock:
            self._moves = None
            blocks._usable()
            immovable: list[Page] = []
            margin = blocks.margin
            for m in moves:
                a, dst = m.allocation, m._dst
                assert dst is not None
                a._move = None
                src = a._page
                if src is None:
                    dst.give(m.dst_offset, m.size + margin)
                    blocks.emit([self._freed_report(m)])
                    continue
                if m.op == "copy":
                    self._copy(m, a, src, dst)
                    moved += 1
                    moved_bytes += m.size
                elif m.op == "ignore":
                    dst.give(m.dst_offset, m.size + margin)
                    immovable.append(src)
                else:
                    dst.give(m.dst_offset, m.size + margin)
                    blocks._free(a)
            # As VMA at the end of a pass: every empty page behind the immovable ones goes
            # back to the heap, from the last one, while more than one page is left.
            for page in reversed(blocks._pages[self._immovable:]):
                if not page.allocs and page.free_bytes == page.size and len(blocks._pages) > 1:
                    freed += 1
                    freed_bytes += page.size
                    blocks._release_page(page)
            for page in immovable:
                if page.index >= self._immovable:
                    blocks._swap(page.index, self._immovable)
                    self._immovable += 1
            self._stats = DefragStats(
                stats.bytes_moved + moved_bytes, stats.allocations_moved + moved, stats.bytes_freed + freed_bytes,
                stats.pages_freed + freed, stats.passes + 1,
            )
        if blocks.observes("memguard_defrag_pass"):
            blocks.notify("memguard_defrag_pass", context=self, phase="end", moves=tuple(moves))
        return not moves

    def _copy(self, m: Move, a: Allocation, src: Page, dst: Page) -> None:
        blocks = self.allocator
        old = src.address + a.offset
        new = dst.address + m.dst_offset
        note = (
            f"moved to 0x{new:x}, page {dst.index} offset {m.dst_offset}, from page {src.index} offset {a.offset} "
            f"by pass {self._pass} of the defragmentation of {blocks.name!r}"
        )
        blocks.mempool.move(old, new, note=note)
        del src.allocs[a.offset]
        src.give(a.offset, a.size + blocks.margin)
        a._page = dst
        a.offset = m.dst_offset
        dst.allocs[m.dst_offset] = a

    def _freed_report(self, m: Move) -> Report:
        a = m.allocation
        table = StackTable(self.allocator.heap.stack_depth)
        alloc_stack, free_stack = a._gone or ((), ())
        return Report(
            kind="defrag-moved-freed", size=a.size, serial=a.serial, alloc_stack=alloc_stack, free_stack=free_stack,
            stack=table.get(table.capture(_getframe(2))),
            message=(
                f"pass {self._pass} of the defragmentation of {self.allocator.name!r} was moving allocation "
                f"#{a.serial} ({a.size} bytes, page {m.src_page} offset {m.src_offset} to page {m.dst_page} offset "
                f"{m.dst_offset}), which was freed before end_pass(): the move is dropped"
            ),
            extra={"pool": self.allocator.name, "pass": self._pass},
        )

    def __repr__(self) -> str:
        state = f"pass {self._pass} in progress" if self._moves is not None else f"{self._pass} pass(es)"
        return f"<Defragmenter of {self.allocator.name!r}: {self.algorithm}, {state}>"
