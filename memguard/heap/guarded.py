"""The guarded heap: canary redzones, fill patterns, quarantine, double/invalid free, leaks.

The heap is built from parts, each in its own module:

* :mod:`memguard.heap.layout`: block and arena layout, header states, fills, and the
  values the heap hands out (:class:`BlockInfo`, :class:`HeapStats`, the
  :class:`HeapRegion` and :class:`HeapSlot` of :meth:`GuardedHeap.walk`);
* :mod:`memguard.heap.fastpaths`: ``malloc`` and ``free`` of small blocks as per-heap
  closures, and the counters;
* :mod:`memguard.heap.verify`: verifying blocks (seal, redzones, poison) and writing
  the reports;
* :mod:`memguard.heap.canary` (the redzone patterns) and :mod:`memguard.heap.mutex` (the lock).

This module holds the tables (arenas, large blocks, free lists, quarantine) and the
general paths, which do step by step what the fast paths do in one go and handle
everything unusual: large and aligned blocks, findings, contention.

Small blocks (up to :data:`SMALL_MAX` bytes, natural alignment) live in per-size-class
arenas: native chunks of :data:`ARENA_SIZE` bytes, aligned to their size, so the arena of
any address is found with one shift and one dict lookup and a pointer is validated
against memguard's own tables before a single byte of it is read.  Freed blocks wait in
a FIFO quarantine; a slot is reused only after it leaves the quarantine with its poison
verified.  Large and over-aligned blocks get a native allocation each.

Native memory is owned by memoryviews (:func:`memguard.native.owned_buffer`), so a view
handed out by :meth:`GuardedHeap.view` keeps its memory alive even after
:meth:`GuardedHeap.close`: memguard never frees memory something can still write to.
Nor does it release memory that holds a block nobody freed, whether the heap is closed
or collected as garbage (a C object may free the block later, even during interpreter
shutdown): that memory stays allocated, and a free after the heap is closed is refused
without reading it.
"""

from __future__ import annotations

import gc
import os
import sys
from functools import partial
from itertools import islice
from operator import itemgetter
from collections import deque
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Container, Iterator, Literal

from memguard import native
from memguard.arguments import int_arg
from memguard.checker import ON_ERROR, Checker
from memguard.errors import HeapClosedError, MemguardError
from memguard.heap.canary import Canaries
from memguard.heap.fastpaths import PathInputs, build_paths
from memguard.heap.layout import (
    ARENA_SHIFT,
    ARENA_SIZE,
    FILL_FREED,
    FILL_NEW,
    FREE_MARK,
    HDR,
    HEADER_SIZE,
    LIVE,
    MAX_BLOCK,
    QUARANTINED,
    RETIRED,
    SEAL_OFFSET,
    SIZE_MAX,
    SMALL_MAX,
    STATE,
    STATE_NAMES,
    STATE_OFFSET,
    Arena,
    BlockInfo,
    HeapRegion,
    HeapSlot,
    HeapStats,
    LargeBlock,
    cached_struct,
    header_seal,
    read_header,
    round16,
)
from memguard.findings import thread_label
from memguard.heapmaps import DEFAULT_WIDTH, HeapMap, MapBlock, render_svg, site_text
from memguard.kinds import error_for
from memguard.seams import Seams
from memguard.heap import fork
from memguard.heap.mutex import Mutex
from memguard.heap.verify import BlockVerifier
from memguard.heap.debugpaths import DebugOptions
from memguard.heap.debugpaths import install as install_debug_paths
from memguard.heap.guardpages import GuardPages
from memguard.heap.walk import LargeCopy, WalkSnapshot, copy_arena, heap_map, iter_regions
from memguard.leaks import BlockRecord, LeakGroup, Snapshot, group_records
from memguard.report import Report
from memguard.stacks import StackTable

if TYPE_CHECKING:
    from memguard.heap.c_allocator import CAllocator

__all__ = [
    "GuardedHeap",
    "BlockInfo",
    "HeapStats",
    "HeapRegion",
    "HeapSlot",
    "InvalidAddressError",
    "SMALL_MAX",
    "ARENA_SIZE",
    "HEADER_SIZE",
    "MAX_BLOCK",
    "ON_ERROR",
]

_getframe = sys._getframe
# (Bound at module level: CPython 3.11 calls a method of an imported name through a
# bound method object.)
_pack_header = HDR.pack_into
#: ``_new_tuple(LargeBlock, fields)`` makes a record at half the cost of ``LargeBlock(*fields)``.
_new_tuple = tuple.__new__
_serial_of = itemgetter(2)
#: ``_block_record(row)``: a :class:`BlockRecord` from a tuple in its order.
_block_record = partial(tuple.__new__, BlockRecord)


class InvalidAddressError(MemguardError, ValueError):
    """An address given to :meth:`GuardedHeap.view` or :meth:`GuardedHeap.block` is not a block."""


class _Closed:
    """Stands in for the heap's tables after close(): any use raises HeapClosedError."""

    def __getitem__(self, key: object) -> Any:
        raise HeapClosedError("the heap is closed")

    get = __getitem__


class _Carving:
    """The arena a size class carves its new slots from, and how far it has carved
    (advanced under the lock, by the fast malloc or by :meth:`GuardedHeap._carve`)."""

    __slots__ = ("arena", "user0", "stride", "carved")

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.user0 = arena.user0
        self.stride = arena.stride
        #: bytes of the arena carved into slots so far (the rest was never used)
        self.carved = 0


class GuardedHeap(BlockVerifier, Checker):
    """A debug heap over a native allocator (the platform's, or another backend).

    :param redzone: bytes of canary on each side of every block (a multiple of 16).
    :param quarantine_bytes: freed bytes kept poisoned before their memory is reused.
    :param stack_depth: Python frames recorded per allocation and free.
    :param on_error: ``"raise"`` (record the report and raise), ``"report"`` (record and
        carry on) or ``"abort"`` (print the report to stderr and abort the process).
    :param canary: ``"keyed"`` (per-block patterns, the default) or ``"fixed"`` (0xFD).
    :param plugins: objects implementing memguard hooks, registered on this heap.
    :param backend: the native allocator every arena and large block comes from and goes
        back to: a name (``"libc"``, the platform default; ``"windows"``, ``"mimalloc"``,
        ``"jemalloc"``) or a :class:`memguard.native.Backend`.  An unknown name raises
        :class:`~memguard.errors.BackendError`, a backend whose library cannot be loaded
        :class:`~memguard.errors.BackendUnavailableError`; there is no fallback.
    :param guard_sample: guard one allocation in N, at random, with a guard page (0: none;
        see :mod:`memguard.heap.guardpages` and ``docs/guard-pages.md``).
    :param guard: ``"all"`` (guard every allocation), ``"underflow"`` (the guard page
        before the block; every allocation, or one in ``guard_sample``), or None.
    :param guard_max: the most guarded blocks live at once (beyond: ordinary blocks).
    :param check_every: a full check every N heap operations (0: never).
    :param break_on: stop just before allocation number SERIAL is made (0: never), by
        raising :class:`~memguard.errors.BreakOnAllocation` (``break_on_action="raise"``)
        or entering ``pdb`` (``"pdb"``).
    """

    def __init__(
        self,
        redzone: int = 16,
        quarantine_bytes: int = 64 << 20,
        stack_depth: int = 8,
        on_error: Literal["raise", "report", "abort"] = "raise",
        canary: Literal["keyed", "fixed"] = "keyed",
        plugins: tuple[object, ...] | list[object] = (),
        name: str = "heap",
        backend: str | native.Backend | None = None,
        guard_sample: int = 0,
        guard: Literal["all", "underflow", "off"] | None = None,
        guard_max: int = 4096,
        check_every: int = 0,
        break_on: int = 0,
        break_on_action: Literal["raise", "pdb"] = "raise",
    ) -> None:
        for arg, value in (("redzone", redzone), ("quarantine_bytes", quarantine_bytes), ("stack_depth", stack_depth)):
            if type(value) is not int:
                raise TypeError(f"{arg} must be an int, got {type(value).__name__}")
        if redzone < 16 or redzone % 16 or redzone > 2048:
            raise ValueError(f"redzone must be a multiple of 16 between 16 and 2048, got {redzone}")
        if quarantine_bytes < 0:
            raise ValueError(f"quarantine_bytes must be >= 0, got {quarantine_bytes}")
        if not 0 <= stack_depth <= 256:
            raise ValueError(f"stack_depth must be between 0 and 256, got {stack_depth}")
        debug = DebugOptions.checked(guard, guard_sample, guard_max, check_every, break_on, break_on_action)
        #: The native allocator of this heap's arenas and large blocks.
        self.backend: native.Backend = native.get_backend(backend)
        secret = int.from_bytes(os.urandom(8), "little")
        super().__init__(name=name, on_error=on_error)
        self.redzone = redzone
        self.quarantine_bytes = quarantine_bytes
        self.stack_depth = stack_depth
        self.canary = canary
        self._canaries = Canaries(redzone, secret, canary)
        self._front = self._canaries.front
        self._rear = self._canaries.rear
        self._seal_key = secret >> 2  # seals are sums: this keeps them below 2**64
        self._tails = self._canaries.tails
        self._uoff = HEADER_SIZE + redzone
        self._images = {}
        self._stacks = StackTable(stack_depth, through=2 if debug.active else 0)
        self._lock = Mutex()
        #: Held by the one thread taking blocks out of the quarantine (and by close()).
        self._evictor = Mutex()
        #: arena number (``address >> ARENA_SHIFT``) -> the arena
        self._arenas: dict[int, Arena] | _Closed = {}
        self._arena_count = 0
        #: size class -> the arena its new slots are carved from
        self._bump: list[_Carving | None] = [None] * (SMALL_MAX // 16 + 1)
        #: arena base -> how far it has been carved
        self._carvings: dict[int, _Carving] = {}
        self._free_slots: list[list[int]] | _Closed = [[] for _ in range(SMALL_MAX // 16 + 1)]
        #: user address -> the large (or over-aligned) block
        self._large: dict[int, LargeBlock] | _Closed = {}
        #: Native allocations (arenas, large blocks) the heap may still read or hand out:
        #: their memory is never released behind its back (see _release_native).
        self._mapped: set[int] = set()
        #: The last large block that left the quarantine: ``(address, size, native bytes)``.
        self._last_large: tuple[int, int, int] = (0, 0, 0)
        #: Freed blocks, oldest first, as ``address << 13 | size`` (``LARGE_MARK`` for a large block).
        self._quarantine: deque[int] = deque()
        self._closed = False
        #: Set in a forked child: allocations made and findings recorded in the parent.
        self._inherited_serial = 0
        self._inherited_reports = 0
        paths = build_paths(self, PathInputs(
            uoff=self._uoff, redzone=redzone, free_slots=self._free_slots, bump=self._bump, quarantine=self._quarantine,
            quarantine_bytes=quarantine_bytes, seal_key=self._seal_key, front=self._front, tails=self._tails,
            pads=self._canaries.pads, capture=self._stacks.capture, lock=self._lock, evictor=self._evictor,
            alloc=self._alloc, free_slow=self._free_slow, size_arg=self._size_arg,
            evict_small=self._evict_small_slow, evict_large=self._evict_large, is_closed=lambda: self._closed,
            discard=self._discard, stale_free=self._stale_free,
        ))
        self._count_alloc = paths.count_alloc
        self._counts = paths.counts
        self._retire = paths.retire
        self._evict = paths.evict
        self._add_arena = paths.add_arena
        self._release = paths.release
        self._set_hooks = paths.set_hooks
        self._settle = paths.settle
        self._queued = paths.queued
        self._reset_peak = paths.reset_peak
        self._slot_bytes = paths.slot_bytes
        self._start_log = paths.start_log
        self._allocated_since = paths.allocated_since
        # The fast paths shadow the general methods, unless a subclass overrides them.
        if type(self).malloc is GuardedHeap.malloc:
            malloc = paths.malloc
            malloc.__doc__, malloc.__qualname__ = GuardedHeap.malloc.__doc__, "GuardedHeap.malloc"
            self.malloc = malloc  # type: ignore[method-assign,assignment]
        if type(self).free is GuardedHeap.free:
            free = paths.free
            free.__doc__, free.__qualname__ = GuardedHeap.free.__doc__, "GuardedHeap.free"
            self.free = free  # type: ignore[method-assign,assignment]
        #: The guarded blocks (None: no guard option set).
        self._guard: GuardPages | None = None
        if debug.active:
            self._guard = install_debug_paths(self, debug)
        if plugins:
            for plugin in plugins:
                self.plugins.register(plugin)
        fork.track(self)

    # ------------------------------------------------------------------ plugins
    def set_seams(self, seams: Seams) -> None:
        """Install the hook seams; the allocation and free seams also reach the fast paths."""
        super().set_seams(seams)
        self._set_hooks(seams.on_alloc, seams.on_free)

    def c_allocator(self) -> CAllocator:
        """C-callable allocator functions on this heap (see :mod:`memguard.clibs.callbacks`).

        The returned object holds ctypes callbacks (``malloc``, ``calloc``, ``realloc``,
        ``free``, ``opaque_alloc``, ``opaque_free``) usable as fields of ctypes structures.
        There is one per heap, kept alive by the heap, so C may keep the pointers.
        """
        with self._lock:
            alloc = self.__dict__.get("_c_allocator")
            if alloc is None:
                from memguard.heap.c_allocator import CAllocator

                alloc = self._c_allocator = CAllocator(self)
        return alloc

    def array(self, ctype: Any, count: int) -> Any:
        """A zeroed ctypes array ``ctype * count`` over a new block, freed when the array is garbage.

        See :func:`memguard.heap.arrays.array`.
        """
        from memguard.heap.arrays import array

        return array(self, ctype, count)

    # ------------------------------------------------------------------ arenas
    def _new_arena(self, cls: int) -> _Carving:
        """A new arena for size class ``cls`` (user size ``16 * cls``); under the lock."""
        uoff, rz = self._uoff, self.redzone
        body = 16 * cls
        stride = uoff + body + rz
        # The buffer runs one slot past ARENA_SIZE so that reading the header of the
        # partial slot at the end reads bytes memguard owns.
        address, view = native.owned_buffer(ARENA_SIZE + stride, ARENA_SIZE, self._release_native, self.backend)
        self._mapped.add(address)
        native.memset(address, 0xDD, ARENA_SIZE + stride)
        # Reading a slot at free: size, serial, alloc stack, seal, state, front redzone, the
        # last 16 bytes of the user region (where the padding is), the tail redzone.
        last = min(body, 16)
        reader = cached_struct(f"<IQIQI4x{rz}s{body - last}x{last}s{rz}s")
        # Freeing it (from the seal on): seal, state, free stack, front redzone (rewritten
        # as is), 0xDD fill.
        freer = cached_struct(f"<QII{rz}s{body}s")
        arena = Arena(view, address, stride, address + uoff, reader.unpack_from, freer.pack_into)
        carving = _Carving(arena)
        # Registered in one line with no call: an interrupt finds both tables or neither.
        self._carvings[address] = carving; self._arenas[address >> ARENA_SHIFT] = arena; self._arena_count += 1  # noqa: E702
        self._add_arena(arena)
        return carving

    def _carve(self, cls: int) -> int:
        """Take a never-used slot of size class ``cls`` (user size ``16 * cls``); under the lock."""
        if self._closed:
            raise HeapClosedError("the heap is closed")
        carving = self._bump[cls]
        if carving is None or carving.carved + carving.stride > ARENA_SIZE:
            carving = self._bump[cls] = self._new_arena(cls)
        hoff = carving.carved
        carving.carved = hoff + carving.stride
        return carving.user0 + hoff

    def _carved(self, base: int) -> int:
        """Bytes of the arena at ``base`` that have been carved into slots."""
        return self._carvings[base].carved

    def _find(self, p: int) -> tuple[memoryview, int] | None:
        """``(view, header offset)`` of the block whose user region starts at ``p``."""
        arena = self._arenas.get(p >> ARENA_SHIFT)
        if arena is not None:
            stride = arena.stride
            hoff = p - arena.user0
            if hoff >= 0 and hoff % stride == 0 and hoff + stride <= ARENA_SIZE:
                return arena.view, hoff
            return None
        large = self._large.get(p)
        if large is not None:
            return large.view, large.hoff
        return None

    def _containing(self, p: int) -> tuple[memoryview, int, int] | None:
        """``(view, header offset, user address)`` of a block whose slot contains ``p``."""
        arena = self._arenas.get(p >> ARENA_SHIFT)
        if arena is not None:
            stride = arena.stride
            index = (p - arena.base) // stride
            if (index + 1) * stride > ARENA_SIZE:
                return None
            hoff = index * stride
            return arena.view, hoff, arena.user0 + hoff
        for user, (view, hoff, n) in self._large.items():
            if user - self._uoff <= p < user + round16(n) + self.redzone:
                return view, hoff, user
        return None

    # ------------------------------------------------------------------ allocation
    def malloc(self, size: int) -> int:
        """Allocate ``size`` bytes filled with 0xCD; return the user address."""
        return self._alloc(self._size_arg(size, "size"), 16, FILL_NEW, _getframe(1))

    def calloc(self, count: int, size: int) -> int:
        """Allocate ``count * size`` zeroed bytes; ``MemoryError`` when the product overflows."""
        count = self._size_arg(count, "count")
        size = self._size_arg(size, "size")
        total = count * size
        if total > SIZE_MAX:
            raise MemoryError(f"calloc({count}, {size}): {count} * {size} overflows size_t")
        return self._alloc(total, 16, None, _getframe(1))

    def memalign(self, alignment: int, size: int) -> int:
        """Allocate ``size`` bytes at an address that is a multiple of ``alignment``."""
        if type(alignment) is not int:
            raise TypeError(f"alignment must be an int, got {type(alignment).__name__}")
        if alignment < native.POINTER_SIZE or alignment & (alignment - 1) or alignment > (1 << 30):
            raise ValueError(
                f"alignment must be a power of two >= {native.POINTER_SIZE} (sizeof(void*)), got {alignment}"
            )
        return self._alloc(self._size_arg(size, "size"), alignment, FILL_NEW, _getframe(1))

    def realloc(self, address: int, size: int) -> int:
        """Resize a block: a new block with the old contents up to ``min(old, new)`` bytes.

        Like AddressSanitizer, the block always moves, so a stale pointer to the old block
        is caught by the quarantine.  ``realloc(0, n)`` is ``malloc(n)``.  On a bad address
        (freed, interior, foreign) the finding is reported and 0 is returned (as C's
        ``realloc`` returns NULL) unless ``on_error="raise"``.
        """
        address = self._address_arg(address)
        size = self._size_arg(size, "size")
        frame = _getframe(1)
        if not address:
            return self._alloc(size, 16, FILL_NEW, frame)
        sid = self._stacks.capture(frame)
        new = 0
        try:
            with self._lock:
                found = self._find(address)
                hdr = read_header(*found) if found is not None else None
                if found is None or hdr is None or hdr.state != LIVE or not self._seal_ok(address, hdr, found[1]):
                    reports = [self._bad_free_report(address, found, frame, "realloc")]
                else:
                    view, hoff = found
                    new = self._place(size, 16, FILL_NEW, sid)
                    nfound = self._find(new)
                    assert nfound is not None
                    nview, nhoff = nfound
                    keep = min(hdr.size, size)
                    u = hoff + self._uoff
                    nu = nhoff + self._uoff
                    nview[nu : nu + keep] = view[u : u + keep]
                    reports = self._free_found(view, hoff, address, sid)
                    if reports and self.on_error != "report":
                        # The caller will not get the new block: give it back rather than leak it.
                        reports += self._free_found(nview, nhoff, new, sid)
                        new = 0
                # (the block's views go now: a finalizer's Ctrl-C is raised below)
                found = nfound = view = nview = None  # type: ignore[assignment]
            self._raise_caught(reports)
            self.emit(reports)
            # The hooks run after the lock is released, as on every path.
            if new:
                on_alloc, on_free = self.seams.on_alloc, self.seams.on_free
                if on_alloc is not None:
                    on_alloc(self, new)
                if on_free is not None:
                    on_free(self, address)
        except BaseException:
            # Interrupted, or a hook raised: the caller will not get the new block.
            if new:
                self._discard(new, sid)
            raise
        return new

    def _size_arg(self, value: object, what: str) -> int:
        size = int_arg(value, what)
        if size > SIZE_MAX:
            raise MemoryError(f"cannot allocate {size} bytes: larger than SIZE_MAX")
        return size

    def _address_arg(self, value: object) -> int:
        return 0 if value is None else int_arg(value, "address")

    def _alloc(self, size: int, alignment: int, fill: bytes | None, frame: FrameType | None) -> int:
        """General allocation path: any size, any alignment, 0xCD or zero fill.

        The ``memguard_alloc`` hook runs after the lock is released.  Interrupted (or
        when the hook raises), the block the caller will not get is freed; see
        :meth:`_place` for an interrupt inside the lock.
        """
        sid = self._stacks.capture(frame)
        p = 0
        try:
            with self._lock:
                p = self._place(size, alignment, fill, sid)
            on_alloc = self.seams.on_alloc
            if on_alloc is not None:
                on_alloc(self, p)
        except BaseException:
            if p:
                self._discard(p, sid)
            raise
        return p

    def _place(self, size: int, alignment: int, fill: bytes | None, sid: int) -> int:
        """Make a live block (lock held); return its user address.

        Interrupted after a slot or a native block was claimed, the block is written
        whole (so nothing reads half a block) and freed at once, without hooks.
        """
        if self._closed:
            raise HeapClosedError("the heap is closed")
        uoff = self._uoff
        p = serial = 0
        before: int | None = None
        try:
            if size <= SMALL_MAX and alignment <= 16:
                slots = self._free_slots[(size + 15) >> 4]
                p = slots.pop() if slots else self._carve((size + 15) >> 4)
                arena = self._arenas[p >> ARENA_SHIFT]
                view = arena.view
                hoff = p - arena.user0
            else:
                if size > MAX_BLOCK:
                    raise MemoryError(f"cannot allocate {size} bytes: memguard's blocks hold at most {MAX_BLOCK} bytes")
                pre = -uoff % alignment
                total = pre + uoff + round16(size) + self.redzone
                try:
                    address, native_view = native.owned_buffer(total, max(alignment, 16), self._release_native, self.backend)
                except MemoryError:
                    raise MemoryError(
                        f"cannot allocate {size} bytes (alignment {alignment}): the native allocator returned NULL"
                    ) from None
                record = _new_tuple(LargeBlock, (native_view, pre, size))
                self._mapped.add(address)
                # Registered and known here in one line with no call (see memguard.heap.mutex).
                self._large[address + pre + uoff] = record; p = address + pre + uoff  # noqa: E702
                view, hoff = native_view, pre
            before = self._counts()[0]
            serial = self._count_alloc(size, p)
            self._write_block(view, hoff, p, size, serial, sid, fill)
        except BaseException:
            found = self._find(p) if p else None
            if found is not None:
                # Write it whole, then free it: the caller never gets it.
                if not serial:  # counted (the call returned) or not
                    now = self._counts()[0]
                    serial = now if before is not None and now != before else self._count_alloc(size, p)
                view, hoff = found
                self._write_block(view, hoff, p, size, serial, sid, fill)
                self._free_found(view, hoff, p, sid)
            raise
        return p

    def _write_block(
        self, view: memoryview, hoff: int, p: int, size: int, serial: int, sid: int, fill: bytes | None,
    ) -> None:
        """Write a live block: redzones and fill first, the header last (lock held)."""
        uoff = self._uoff
        front, rear = self._expected(p, size)
        u = hoff + uoff
        view[u - self.redzone : u] = front
        if size <= SMALL_MAX:
            view[u : u + size] = fill[:size] if fill is not None else bytes(size)
        else:
            native.memset(p, 0xCD if fill is not None else 0, size)
        view[u + size : u + size + len(rear)] = rear
        _pack_header(view, hoff, size, serial, sid, header_seal(self._seal_key, hoff, size, serial, sid, LIVE, 0), LIVE, 0)

    def _discard(self, p: int, sid: int) -> None:
        """Free the live block ``p`` that its caller never got, without hooks.

        For an allocation cut short (an interrupt, a hook that raised): the block is
        poisoned and quarantined like any freed block; findings are deferred to the
        next ``check()``.
        """
        with self._lock:
            found = self._find(p) if not self._closed else None
            if found is None:
                return
            view, hoff = found
            if read_header(view, hoff).state != LIVE:
                return
            reports = self._free_found(view, hoff, p, sid)
        with self.deferred_errors():
            self.emit(reports)

    def _stale_free(self, p: int, n: int, serial: int, frame: FrameType | None) -> None:
        """A fast free of block ``serial`` at ``p`` that did not free it under the lock.

        When the block is still there, the general free decides (a double free, mostly).
        When another block is: another thread freed this one after the fast free read it,
        and the heap handed its memory out again; this free is the double free, and the
        new block is not touched.
        """
        __tracebackhide__ = True
        with self._lock:
            found = self._find(p)
            hdr = read_header(*found) if found is not None else None
            if hdr is not None and hdr.serial == serial:
                still = True
            else:
                still = False
                report = Report(
                    kind="double-free", address=p, size=n, serial=serial,
                    stack=self._stacks.get(self._stacks.capture(frame)), thread=thread_label(),
                    message=(
                        f"attempting free on 0x{p:x}, a {n}-byte block that was already freed "
                        "(by another thread, meanwhile; its memory is in use again)"
                    ),
                )
        if still:
            self._free_slow(p, frame)
            return
        self.emit([report])

    # ------------------------------------------------------------------ free
    def free(self, address: int) -> None:
        """Free a block: verify its redzones, poison it with 0xDD and quarantine it.

        ``free(0)`` is a no-op.  A double free, a free of an interior pointer or of an
        address memguard never handed out is reported (``double-free``/``bad-free``) and
        never touches memory memguard does not own.
        """
        __tracebackhide__ = True
        self._free_slow(address, _getframe(1))

    def _free_slow(self, address: object, frame: FrameType | None) -> None:
        """The general free: any block, any finding (the fast path's fallback)."""
        p = self._address_arg(address)
        if not p:
            return
        guard = self._guard
        if guard is not None and p in guard.blocks:
            guard.free(p, frame)
            return
        with self._lock:
            reports, freed = self._free_other(p, self._stacks.capture(frame), frame)
        self._raise_caught(reports)
        on_free = self.seams.on_free
        if freed and on_free is not None:
            on_free(self, p)
        __tracebackhide__ = True
        self.emit(reports)

    def _raise_caught(self, reports: list[Report]) -> None:
        """Raise the Ctrl-C a dropped buffer's finalizer caught (``reports`` kept for ``check()``).

        An exception cannot leave a finalizer, so a ``KeyboardInterrupt`` that lands in
        the one releasing a large block's memory is kept (see
        :func:`memguard.native.raise_caught_interrupt`) and goes on from here.
        """
        try:
            native.raise_caught_interrupt()
        except KeyboardInterrupt:
            with self.deferred_errors():
                self.emit(reports)
            raise

    def _free_other(self, p: int, sid: int, frame: FrameType | None) -> tuple[list[Report], bool]:
        """Free ``p`` under the lock: large blocks, findings, bad pointers.

        Returns the findings and whether a block was freed.
        """
        found = self._find(p)
        state = read_header(*found).state if found is not None else None
        if state == RETIRED:
            return [], False  # reported when its header was found damaged; never reused
        if state != LIVE:
            return [self._bad_free_report(p, found, frame, "free")], False
        assert found is not None
        view, hoff = found
        reports = self._free_found(view, hoff, p, sid)
        return reports, read_header(view, hoff).state == QUARANTINED

    def _free_found(self, view: memoryview, hoff: int, p: int, sid: int) -> list[Report]:
        """Free the live block ``p`` (header at ``hoff``), reporting corruption first."""
        hdr = read_header(view, hoff)
        n = hdr.size
        reports: list[Report] = []
        if not self._seal_ok(p, hdr, hoff):
            reports.append(self._header_report(view, hoff, p, hdr, "free"))
            STATE.pack_into(view, hoff + STATE_OFFSET, RETIRED)
            return reports
        reports.extend(self._verify_redzones(view, hoff, p, hdr, repair=True))
        u = hoff + self._uoff
        span = round16(n)
        large = self._large.get(p)
        is_large = large is not None
        slot = len(large.view) if large is not None else 0
        # The user bytes are poisoned first (a live block's are not verified), then the
        # state, the padding (a live block's rear redzone) and the quarantine: an
        # interrupt anywhere leaves a block that verifies, live or freed, and a freed
        # one always reaches the quarantine.
        if n <= SMALL_MAX:
            view[u : u + n] = FILL_FREED[:n]
        else:
            native.memset(p, 0xDD, n)
        queued = self._queued()
        try:
            FREE_MARK.pack_into(
                view, hoff + SEAL_OFFSET,
                header_seal(self._seal_key, hoff, n, hdr.serial, hdr.alloc_stack, QUARANTINED, sid), QUARANTINED, sid,
            )
            view[u + n : u + span] = FILL_FREED[: span - n]
            self._retire(p, n, is_large, slot)
        except BaseException:
            if read_header(view, hoff).state == QUARANTINED:
                view[u + n : u + span] = FILL_FREED[: span - n]
                self._settle(p, n, is_large, queued, slot)
            raise
        reports.extend(self._evict() or ())
        return reports

    def _evict_small_slow(self, p: int) -> list[Report]:
        """A small block left the quarantine with damaged poison: report it, repaired."""
        with self._lock:
            found = self._find(p)
            if found is None:  # pragma: no cover - the heap was closed meanwhile
                return []
            view, hoff = found
            hdr = read_header(view, hoff)
            if hdr.state == RETIRED:
                return []
            if not self._seal_ok(p, hdr, hoff) or hdr.state != QUARANTINED:
                return [self._header_report(view, hoff, p, hdr, "quarantine eviction")]
            return self._verify_freed(view, hoff, p, hdr, repair=True)

    def _evict_large(self, p: int, again: bool = False) -> tuple[int, int, list[Report]]:
        """A large block left the quarantine: verify it and return its memory.

        Returns the block's size, the native bytes it occupied and the findings.  ``again``: an interrupted eviction
        asks once more, and the block may be gone already (its size is then the one
        recorded when it went) or its address may be a new block's (left alone).
        """
        found = self._release_large(p, again)
        self._raise_caught(found[2])
        return found

    def _release_large(self, p: int, again: bool) -> tuple[int, int, list[Report]]:
        """The work of :meth:`_evict_large`, under the lock."""
        with self._lock:
            large = self._large.get(p) if not self._closed else None
            if again and (large is None or read_header(large.view, large.hoff).state != QUARANTINED):
                last = self._last_large
                return (last[1], last[2], []) if last[0] == p else (0, 0, [])
            if large is None:  # pragma: no cover - the heap was closed meanwhile
                return 0, 0, []
            view, hoff, n = large
            hdr = read_header(view, hoff)
            if hdr.state == RETIRED:
                reports = []
            elif not self._seal_ok(p, hdr, hoff) or hdr.state != QUARANTINED:
                reports = [self._header_report(view, hoff, p, hdr, "quarantine eviction")]
            else:
                reports = self._verify_freed(view, hoff, p, hdr, repair=False)
            # Dropping the entry drops the view, and with it the native memory (unless a
            # user's memoryview still holds it).  Gone and recorded: one line, no call.
            self._mapped.discard(p - self._uoff - hoff)
            total = len(view)
            del self._large[p]; self._last_large = (p, n, total)  # noqa: E702
            return n, total, reports

    # ------------------------------------------------------------------ inspection
    def view(self, address: int) -> memoryview:
        """A writable 1-D ``'B'`` memoryview of exactly the user bytes of a live block."""
        p = self._address_arg(address)
        with self._lock:
            if self._guard is not None and p in self._guard.blocks:
                guarded = self._guard.view(p)
                if guarded is None:
                    raise InvalidAddressError(f"0x{p:x} is not a live block of this heap")
                return guarded
            found = self._find(p) if p else None
            if found is not None:
                view, hoff = found
                hdr = read_header(view, hoff)
                if hdr.state == LIVE and self._seal_ok(p, hdr, hoff):
                    u = hoff + self._uoff
                    return view[u : u + hdr.size]
            raise InvalidAddressError(f"0x{p:x} is not a live block of this heap")

    def block(self, address: int) -> BlockInfo:
        """What memguard knows about the block at ``address`` (live, quarantined or released)."""
        p = self._address_arg(address)
        with self._lock:
            guarded = self._guard.info(p) if self._guard is not None else None
            if guarded is not None:
                return guarded
            found = self._find(p) if p else None
            hdr = read_header(*found) if found is not None else None
            if hdr is None or found is None or not self._seal_ok(p, hdr, found[1]):
                raise InvalidAddressError(f"0x{p:x} is not a block of this heap")
            n, serial, asid, _, state, fsid = hdr
            return BlockInfo(
                address=p, size=n, serial=serial, state=STATE_NAMES[state],
                alloc_stack=self._stacks.get(asid),
                free_stack=self._stacks.get(fsid) if state != LIVE else (),
            )

    def live_serial(self, address: int) -> int:
        """The allocation serial of the live block at ``address``; 0 when no live block starts there.

        The cheap form of :meth:`block` (no stacks, no record, no seal check) for a checker
        that keeps using a block and must notice, on each operation, that it was freed or
        that its memory now belongs to another block (a pool's chunk): the same address
        with another serial is another block.
        """
        if type(address) is not int or address <= 0:
            return 0
        # No lock: the header is read by one C call (as the fast paths write it), from a
        # view that keeps its memory alive; a block freed meanwhile is the caller's race.
        found = self._find(address)
        if found is None:
            block = self._guard.blocks.get(address) if self._guard is not None else None
            return block.serial if block is not None and not block.freed else 0
        _, serial, _, _, state, _ = HDR.unpack_from(*found)
        return serial if state == LIVE else 0  # type: ignore[no-any-return]

    def walk(self) -> Iterator[HeapRegion]:
        """Every region of the heap and every slot handed out in it, by address.

        Yields a :class:`HeapRegion` per size-class arena (``kind="arena"``) and per large
        or over-aligned block (``kind="large"``), each with its :class:`HeapSlot` values
        (user address, size, state, serial): ``"live"``, ``"quarantined"`` (freed, in the
        quarantine), ``"free"`` (freed, out of the quarantine, poisoned and waiting for
        reuse) or ``"corrupt"`` (a damaged header).  Space of an arena that no slot covers
        was never handed out.

        The heap is read once, under its lock, when ``walk()`` is called; the regions are
        made and yielded after the lock is released, so the loop's body may use the heap
        (it sees the heap as it was at the call).  Nothing is verified or reported: a
        damaged header shows as ``"corrupt"``, and ``check()`` says what is wrong.
        Raises :class:`HeapClosedError` after :meth:`close`.
        """
        # The evictor's token too: no block is between the quarantine and its free list.
        with self._evictor, self._lock:
            if self._closed:
                raise HeapClosedError("the heap is closed")
            arenas = [copy_arena(arena, self._carved(arena.base)) for arena in self._arenas.values()]
            uoff = self._uoff
            large = [
                LargeCopy(p - uoff - hoff, len(view), p, n, hoff, HDR.unpack_from(view, hoff))
                for p, (view, hoff, n) in self._large.items()
            ]
            snap = WalkSnapshot(arenas, large, list(self._quarantine), self._seal_key, uoff, self.redzone)
        return iter_regions(snap)

    def layout_map(self, leaked: Container[int] = (), width: int | None = None) -> HeapMap:
        """The heap as a :class:`~memguard.heapmaps.HeapMap` (from one :meth:`walk`).

        A row per arena size class and one for the large blocks; live blocks whose address
        is in ``leaked`` are drawn as leaked.  With ``width``, blocks narrower than a pixel
        at that width are merged into runs and the blocks left on their own carry their
        allocation site.
        """
        m = heap_map(self.walk(), self._uoff, f"guarded heap {self.name!r}", leaked)
        return m if width is None else m.aggregated(width, self._site_of)

    def heapmap(self, width: int = DEFAULT_WIDTH) -> str:
        """The heap map as SVG text (see :mod:`memguard.heapmaps` and ``docs/heapmap.md``)."""
        return render_svg(self.layout_map(), width, site=self._site_of)

    def _site_of(self, b: MapBlock) -> str:
        try:
            stack = self.block(b.address).alloc_stack
        except (InvalidAddressError, HeapClosedError, ValueError):
            return ""
        return site_text(stack)

    def check(self, since: Snapshot | None = None) -> list[Report]:
        """Verify every live block's redzones and every freed block's poison.

        Each corruption is reported once (the damaged canary or poison is restored after
        the report).  Plugins' ``memguard_check`` results are included.  Returns the new
        findings; with ``on_error="raise"`` the first one is raised.

        With ``since`` (a :meth:`mark` or :meth:`snapshot`), only the blocks allocated or
        freed after it are verified: a cheap check for the end of a test, to be completed
        by a full ``check()`` later (the pytest plugin runs one at the end of the session).
        """
        __tracebackhide__ = True
        if since is not None and not isinstance(since, Snapshot):
            raise TypeError(f"since must be a Snapshot or None, got {type(since).__name__}")
        reports: list[Report] = []
        with self._lock:
            if self._closed:
                raise HeapClosedError("the heap is closed")
            if since is None or since.frees < 0:
                reports = self._verify_blocks()
            else:
                q = self._quarantine
                _, _, _, _, evicted = self._counts()
                freed = min(len(q), evicted + len(q) - since.frees)
                # (from the right end: indexing a deque in the middle costs its length)
                young = [e >> 13 for e in islice(reversed(q), freed)]
                young.reverse()
                if not self._young_all_freed(since.serial, since.frees):
                    young += [row[0] for row in self._young_rows(since.serial)]
                for p in young:
                    reports.extend(self._check_block(p))
        reports.extend(self.verify_registered())
        on_check = self.seams.on_check
        if on_check is not None:
            reports.extend(on_check(self))
        return self.settle(reports)

    def _verify_blocks(self) -> list[Report]:
        """Verify every block of the arenas and every large block (lock held or taken); the findings."""
        reports: list[Report] = []
        with self._lock:
            if self._closed:
                raise HeapClosedError("the heap is closed")
            for arena in list(self._arenas.values()):
                reports.extend(self._check_arena(arena))
            for p, (view, hoff, _) in list(self._large.items()):
                reports.extend(self._check_one(view, hoff, p))
        return reports

    def _live_records(self, since: int = 0) -> list[BlockRecord]:
        """Live blocks with a serial above ``since``, oldest first."""
        rows = self._live_rows(since)
        rows.sort(key=_serial_of)
        # A million new records the collector tracks would trigger full collections
        # that each traverse all of them: it is paused while they are made.
        paused = gc.isenabled()
        gc.disable()
        try:
            return list(map(_block_record, rows))
        finally:
            if paused:
                gc.enable()

    def _young_rows(self, since: int) -> list[tuple[int, int, int, int]]:
        """:meth:`_live_rows` of the blocks allocated after ``since``: from the allocation
        log when it holds them all (the cost of what was allocated since), else by a walk."""
        young = self._allocated_since(since)
        if young is None:
            return self._live_rows(since)
        rows = []
        add = rows.append
        seen: set[int] = set()
        arenas = self._arenas
        key = self._seal_key + LIVE
        rim = self._uoff + self.redzone
        unpack = HDR.unpack_from
        for p in young:
            if p in seen:  # (a slot freed and handed out again: its header is the last block's)
                continue
            seen.add(p)
            arena = arenas.get(p >> ARENA_SHIFT)
            if arena is not None:  # (the log holds slot addresses only: p starts a slot)
                hoff = p - arena.user0
                n, serial, asid, seal, state, fsid = unpack(arena.view, hoff)
                if state == LIVE and serial > since and seal == key + hoff + n + serial + asid + fsid and n <= arena.stride - rim:
                    add((p, n, serial, asid))
                continue
            found = self._find(p)
            if found is not None:
                hdr = read_header(*found)
                if hdr.state == LIVE and hdr.serial > since and self._seal_ok(p, hdr, found[1]):
                    add((p, hdr.size, hdr.serial, hdr.alloc_stack))
        if self._guard is not None:
            rows.extend(self._guard.live_records(since))
        return rows

    def _live_rows(self, since: int = 0) -> list[tuple[int, int, int, int]]:
        """Live blocks with a serial above ``since`` as ``(address, size, serial, alloc
        stack)`` tuples (:class:`BlockRecord`'s order), in no particular order.

        An arena's headers are read in one pass (``iter_unpack`` over its memory, the rest
        of each slot skipped) and checked inline: the state, the seal, the size against
        the slot.
        """
        rows: list[tuple[int, int, int, int]] = []
        add = rows.append
        rim = self._uoff + self.redzone
        for arena in list(self._arenas.values()):
            stride = arena.stride
            capacity = stride - rim
            walker = cached_struct(f"{HDR.format}{stride - HEADER_SIZE}x")
            # The seal of a live block, less its serial, is its key plus its offset and fields.
            keyed = self._seal_key + LIVE - stride
            p = arena.user0 - stride
            # (the rows are headers in Header's order)
            for n, serial, asid, seal, state, fsid in walker.iter_unpack(arena.view[: self._carved(arena.base)]):
                keyed += stride; p += stride  # noqa: E702
                if state == LIVE and serial > since and seal - serial == keyed + n + asid + fsid and n <= capacity:
                    add((p, n, serial, asid))
        for p, (view, hoff, _) in list(self._large.items()):
            hdr = read_header(view, hoff)
            if hdr.state == LIVE and hdr.serial > since and self._seal_ok(p, hdr, hoff):
                add((p, hdr.size, hdr.serial, hdr.alloc_stack))
        if self._guard is not None:
            rows.extend(self._guard.live_records(since))
        return rows

    def snapshot(self) -> Snapshot:
        """An immutable snapshot of the live blocks."""
        with self._lock:
            if self._closed:
                raise HeapClosedError("the heap is closed")
            serial, _, _, _, evicted = self._counts()
            return Snapshot(serial, tuple(self._live_records()), self._stacks, evicted + len(self._quarantine))

    @property
    def serial(self) -> int:
        """Allocations made so far: a cheap mark for ``leaks(since=heap.serial)`` (still
        readable after :meth:`close`, like :meth:`stats`)."""
        return self._counts()[0]

    def mark(self) -> Snapshot:
        """A cheap :class:`Snapshot` with no block records, for ``leaks(since=mark)`` and
        ``check(since=mark)``.

        Taking it costs a few counter reads and starts the heap's allocation log afresh
        (the addresses of the blocks allocated from now on, up to a million), so that
        ``leaks(since=mark)`` and ``check(since=mark)`` cost what was allocated and freed
        since the mark, not the heap's size.  A newer ``mark()`` restarts the log: an
        older mark still works, by walking the heap.
        Raises :class:`HeapClosedError` after :meth:`close`, like :meth:`snapshot`.
        """
        with self._lock:
            if self._closed:
                raise HeapClosedError("the heap is closed")
            serial, _, _, _, evicted = self._counts()
            self._start_log()
            return Snapshot(serial, (), self._stacks, evicted + len(self._quarantine))

    def _young_all_freed(self, serial: int, frees: int) -> bool:
        """Whether every block allocated after ``serial`` was freed, judged from the
        quarantine alone (False when that cannot be told cheaply)."""
        now, _, _, _, evicted = self._counts()
        allocated = now - serial
        freed = evicted + len(self._quarantine) - frees
        q = self._quarantine
        if freed < allocated or freed > len(q) or freed > 256:
            return False
        young = 0
        for i in range(len(q) - freed, len(q)):
            p = q[i] >> 13
            found = self._find(p)
            if found is None:
                return False
            if read_header(*found).serial > serial:
                young += 1
        return young == allocated

    def leaks(self, since: Snapshot | int | None = None, inherited: bool = False) -> list[LeakGroup]:
        """Blocks still live that were allocated after ``since`` (all when ``None``).

        ``since`` is a :class:`Snapshot` or an allocation count (:attr:`serial`).  Grouped by
        allocation stack, largest total first.  In a forked child, the blocks inherited from
        the parent (:attr:`inherited_serial`) are left out unless ``inherited=True``.
        """
        if since is None:
            mark = 0
        elif isinstance(since, Snapshot):
            mark = since.serial
        elif type(since) is int:
            if since < 0:
                raise ValueError(f"since must be >= 0 (an allocation count), got {since}")
            mark = since
        else:
            raise TypeError(f"since must be a Snapshot, an int or None, got {type(since).__name__}")
        if type(inherited) is not bool:
            raise TypeError(f"inherited must be a bool, got {type(inherited).__name__}")
        if not inherited:
            mark = max(mark, self._inherited_serial)
        with self._lock:
            if self._closed:
                raise HeapClosedError("the heap is closed")
            if isinstance(since, Snapshot) and since.frees >= 0 and self._young_all_freed(mark, since.frees):
                return []
            rows = self._young_rows(mark)
        return group_records(rows, self._stacks)

    def stats(self) -> HeapStats:
        """Counters: live and peak bytes, allocations, frees, quarantine.

        After :meth:`close` they are the heap's final counters: the quarantine was emptied
        (its blocks count as freed) and no arena or large block is held any more.
        """
        with self._lock:
            serial, live, peak, qbytes, evicted = self._counts()
            g = self._guard
            g_bytes, g_frees = (g.live_bytes, g.frees) if g is not None else (0, 0)
            return HeapStats(
                live_blocks=serial - evicted - len(self._quarantine) - g_frees,
                live_bytes=live + g_bytes,
                peak_bytes=max(peak, live + g_bytes),
                total_allocs=serial,
                total_frees=evicted + len(self._quarantine) + g_frees,
                quarantined_blocks=len(self._quarantine),
                quarantined_bytes=qbytes,
                arena_bytes=self._arena_count * ARENA_SIZE if not self._closed else 0,
                large_blocks=len(self._large) if not self._closed else 0,
                quarantined_slot_bytes=self._slot_bytes(),
            )

    def reset_peak(self) -> int:
        """Start a new peak window at the live bytes now; return the peak live bytes of the
        window it ends (the first window starts when the heap is made).

        ``stats().peak_bytes`` stays the heap's all-time peak.  The pytest plugin starts a
        window per test, so a test's peak is its own.
        """
        with self._lock:
            return self._reset_peak()

    @property
    def allocated_bytes(self) -> int:
        """User bytes allocated so far, freed or not (0 after :meth:`close`)."""
        with self._lock:
            if self._closed:
                return 0
            guarded = self._guard.total_bytes if self._guard is not None else 0
            return self._counts()[1] + self._queued() + guarded

    # ------------------------------------------------------------------ fork
    @property
    def inherited_serial(self) -> int:
        """In a forked child, the allocations made before the fork (in the parent); else 0.

        Blocks with a serial up to it were inherited: :meth:`leaks` and the exit report
        leave them out unless asked (see :mod:`memguard.heap.fork`).
        """
        return self._inherited_serial

    @property
    def inherited_reports(self) -> int:
        """In a forked child, how many of :attr:`reports` the parent had recorded; else 0."""
        return self._inherited_reports

    def fork_locks(self) -> list[Any]:
        """The locks :mod:`memguard.heap.fork` holds across a ``fork()``, in the order the heap takes them."""
        return [self._registered_lock, self._evictor, self._lock, self._stacks.lock]

    def mark_inherited(self) -> None:
        """In a forked child (its locks reset): mark the parent's blocks and findings as inherited."""
        self._inherited_serial = self._counts()[0]
        self._inherited_reports = len(self.reports)

    # ------------------------------------------------------------------ lifetime
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def close(self, check: bool = True) -> list[Report]:
        """Verify the heap one last time (unless ``check=False``) and release its memory.

        Memory still viewed through a :meth:`view` memoryview is released only when that
        view is gone; memory holding a block that was never freed (a leak, or a block a C
        object still uses) is never released.  Further calls raise
        :class:`HeapClosedError` (a ``free`` too, without reading the block), except
        :meth:`stats`, :attr:`serial`, :attr:`closed` and ``reports`` (the final state);
        closing twice is a no-op.
        """
        if self._closed:
            return []
        reports: list[Report] = []
        try:
            if check:
                with self.reporting():
                    reports = self.check()
        finally:
            with self._evictor, self._lock:
                self._detach()
                if self._guard is not None:
                    self._guard.release()
            if self.has_plugins:
                self.plugins.heap_closed()
        self._raise_caught([])  # (the memory went: a finalizer's Ctrl-C goes on from here)
        if reports and self.on_error == "raise":
            raise error_for(reports[0])
        return reports

    def _detach(self) -> None:
        """Close the tables (both tokens held, or the heap is garbage); keep occupied memory.

        The native allocations that still hold a block nobody freed stay mapped: their
        memory is never released (a C object may still use the block, and free it later).
        """
        if self._closed:
            return
        self._mapped = self._occupied()
        self._closed = True
        # The fast paths hold these tables: empty them in place, so that every
        # call falls back to a general method, which raises HeapClosedError.
        self._arenas.clear()
        self._large.clear()
        for slots in self._free_slots:
            slots.clear()
        self._arenas = _Closed()
        self._large = _Closed()
        self._free_slots = _Closed()
        self._bump[:] = [None] * len(self._bump)  # (in place: the fast malloc holds it)
        self._carvings = {}
        self._release()

    def _occupied(self) -> set[int]:
        """The native allocations (arenas, large blocks) holding a block that was never
        freed: live, or with a damaged header (read from the state bytes alone)."""
        held: set[int] = set()
        freed = QUARANTINED & 0xFF
        for arena in self._arenas.values():
            # The low byte of every carved slot's state: all freed, or the arena is held.
            states = arena.view[STATE_OFFSET : self._carved(arena.base) : arena.stride].tobytes()
            if states.count(freed) != len(states):
                held.add(arena.base)
        for p, (view, hoff, _) in self._large.items():
            if read_header(view, hoff).state != QUARANTINED:
                held.add(p - self._uoff - hoff)
        return held

    def _release_native(self, address: int, free: Callable[[int], None]) -> None:
        """Release one of the heap's native allocations, unless a block in it is still in use.

        Called when the last view over the memory is gone, or when the garbage collector
        finalizes it: then the heap is garbage too, and whatever else is being collected
        (a C object holding a block, whose destructor frees it through
        :meth:`c_allocator`) may still call the heap, in any order.  So memory that
        still holds a block is never released (it stays allocated until the process
        ends), and memory is released only once the heap's tables no longer point at it.
        When in doubt, the memory is kept: a leak is harmless, a free under a live block
        is not.
        """
        try:
            if address in self._mapped:
                if self._closed or self._occupied():
                    return
                # Collected while open, with no block in use: close the tables, then
                # release (later calls raise HeapClosedError without reading memory).
                self._detach()
                if address in self._mapped:  # pragma: no cover - occupied meanwhile
                    return
        except Exception:  # noqa: BLE001 - a finalizer: keep the memory rather than guess
            return
        free(address)

    def __repr__(self) -> str:
        s = self.stats() if not self._closed else None
        state = "closed" if s is None else f"{s.live_blocks} live blocks, {s.live_bytes} bytes"
        return f"<GuardedHeap {self.name!r}: {state}, {len(self.reports)} report(s)>"
