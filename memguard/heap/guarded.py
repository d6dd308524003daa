"""The guarded heap: canary redzones, fill patterns, quarantine, double/invalid free, leaks.

Block layout (every block, small or large)::

    [pad][header 32][front redzone R][user region n][rear redzone: pad to 16 + R]

The header holds a seal (the sum of the block's offset, size and serial and a per-heap
secret), the size, the serial number, the allocation stack id, the state and the free
stack id.  Redzone bytes are keyed per block (see :mod:`memguard.canary`).

Small blocks (up to :data:`SMALL_MAX` bytes, natural alignment) live in per-size-class
arenas: native chunks of :data:`ARENA_SIZE` bytes, aligned to their size, so the arena of
any address is found with one shift and one dict lookup and a pointer is validated
against memguard's own tables before a single byte of it is read.  Freed blocks wait in
a FIFO quarantine; a slot is reused only after it leaves the quarantine with its poison
verified.  Large and over-aligned blocks get a native allocation each.

Speed: ``malloc`` and ``free`` of small blocks run as per-heap closures (see
:meth:`GuardedHeap._build_paths`) that write a block with one ``struct`` call, read it back
with one and poison it with one; the lock is a token in a list (:mod:`memguard.mutex`)
and blocks leave the quarantine without it.  Everything unusual falls back to the
general methods, which do the same work step by step and write the reports.

Native memory is owned by memoryviews (:func:`memguard.native.owned_buffer`), so a view
handed out by :meth:`GuardedHeap.view` keeps its memory alive even after
:meth:`GuardedHeap.close`: memguard never frees memory something can still write to.
"""

from __future__ import annotations

import operator
import os
import struct
import sys
import threading
from collections import deque
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Literal

from memguard import native
from memguard.heap.canary import MAX_PAD, Canaries
from memguard.checker import ON_ERROR, Checker
from memguard.seams import Seams
from memguard.errors import HeapClosedError, MemguardError
from memguard.kinds import error_for
from memguard.heap.mutex import Mutex
from memguard.leaks import BlockRecord, LeakGroup, Snapshot, group_records
from memguard.report import Report
from memguard.stacks import Stack, StackTable, is_user_frame

if TYPE_CHECKING:
    from memguard.heap.c_allocator import CAllocator

__all__ = [
    "GuardedHeap",
    "BlockInfo",
    "HeapStats",
    "InvalidAddressError",
    "SMALL_MAX",
    "ARENA_SIZE",
    "HEADER_SIZE",
    "MAX_BLOCK",
    "ON_ERROR",
]

_getframe = sys._getframe

#: Largest block served from a size-class arena.
SMALL_MAX = 4096
ARENA_SHIFT = 18
#: Size (and alignment) of a size-class arena.
ARENA_SIZE = 1 << ARENA_SHIFT
_ARENA_MASK = ARENA_SIZE - 1
_HDR = struct.Struct("<QIQIII")  # seal, size, serial, alloc stack, state, free stack
#: Bytes of block header in front of the front redzone.
HEADER_SIZE = _HDR.size
_STATE = struct.Struct("<I")
_STATE_OFFSET = 24
_M32 = 0xFFFFFFFF
#: Largest block (the header holds the size in 32 bits).
MAX_BLOCK = _M32
_SIZE_MAX = native.SIZE_MAX

LIVE = 0xA110C8ED
QUARANTINED = 0xDEADF4EE
RETIRED = 0xBADB10C5
#: Arenas are filled with 0xDD, so a slot that was never handed out reads as this state.
NEVER = 0xDDDDDDDD
_STATE_NAMES = {LIVE: "live", QUARANTINED: "quarantined", RETIRED: "corrupt"}
#: Quarantine entries are ``address << 13 | size``; this size marks a large block.
_LARGE_MARK = 0x1FFF
#: The low byte of ``LIVE`` as stored (little-endian): unique among the states.
_LIVE_LOW = LIVE & 0xFF
#: Poison spans up to this size are verified by unpacking; larger ones by ``startswith``.
_UNPACK_MAX = 256

_FILL_NEW = b"\xcd" * SMALL_MAX
_FILL_FREED = b"\xdd" * SMALL_MAX
_FREED_FILLS: list[bytes | None] = [None] * (SMALL_MAX + 1)


def _freed_fill(n: int) -> bytes:
    fill = _FREED_FILLS[n] = _FILL_FREED[:n]
    return fill


_POISON_CHUNK = 1 << 20
_poison_buffer: tuple[int, memoryview] | None = None


def _poison_address() -> int:
    """Address of a 1 MiB buffer of 0xDD bytes (for memcmp against large blocks)."""
    global _poison_buffer
    if _poison_buffer is None:
        address, view = native.owned_buffer(_POISON_CHUNK)
        native.memset(address, 0xDD, _POISON_CHUNK)
        _poison_buffer = (address, view)
    return _poison_buffer[0]


def _read_header(view: memoryview, hoff: int) -> tuple[int, int, int, int, int, int]:
    """A block header as ``(seal, alloc stack, size, serial, state, free stack)``."""
    seal, n, serial, asid, state, fsid = _HDR.unpack_from(view, hoff)
    return seal, asid, n, serial, state, fsid


#: Size class (user bytes rounded up to 16, over 16) and padding of every small size.
_CLASS_OF = [(n + 15) >> 4 for n in range(SMALL_MAX + 1)]
_PAD_OF = [-n & 15 for n in range(SMALL_MAX + 1)]


#: ``_PADS[pad]`` writes ``pad`` bytes (the rear redzone's part inside a 16-byte span).
_PADS = [struct.Struct(f"{pad}s").pack_into for pad in range(16)]

_struct_cache: dict[str, struct.Struct] = {}


def _struct(fmt: str) -> struct.Struct:
    s = _struct_cache.get(fmt)
    if s is None:
        if len(_struct_cache) > 65536:  # pragma: no cover - bounded for huge odd sizes
            _struct_cache.clear()
        s = _struct_cache[fmt] = struct.Struct(fmt)
    return s


class InvalidAddressError(MemguardError, ValueError):
    """An address given to :meth:`GuardedHeap.view` or :meth:`GuardedHeap.block` is not a block."""


@dataclass(frozen=True)
class BlockInfo:
    """What memguard knows about one block.

    :ivar state: ``"live"``, ``"quarantined"`` (freed and still poisoned: in the quarantine,
        or out of it and waiting for its slot to be reused) or ``"corrupt"`` (its header was
        found damaged; never reused).
    """

    address: int
    size: int
    serial: int
    state: str
    alloc_stack: Stack
    free_stack: Stack


@dataclass(frozen=True)
class HeapStats:
    """Counters of a heap (all sizes are user bytes)."""

    live_blocks: int
    live_bytes: int
    peak_bytes: int
    total_allocs: int
    total_frees: int
    quarantined_blocks: int
    quarantined_bytes: int
    arena_bytes: int
    large_blocks: int


class _Closed:
    """Stands in for the heap's tables after close(): any use raises HeapClosedError."""

    def __getitem__(self, key: object) -> Any:
        raise HeapClosedError("the heap is closed")

    get = __getitem__


def _round16(n: int) -> int:
    return (n + 15) & ~15


class _Seam:
    """A hook seam of the heap that its fast paths keep in their closure.

    Reading it gives the function set (or None); setting it also hands the function to
    the fast paths, which pay one ``is not None`` test per call for it.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, heap: Any, owner: type | None = None) -> Any:
        if heap is None:
            return self
        return heap.__dict__.get(self.name)

    def __set__(self, heap: Any, fn: Callable[[Any, int], None] | None) -> None:
        heap.__dict__[self.name] = fn
        heap._set_seam(self.name, fn)


class GuardedHeap(Checker):
    """A debug heap over the platform allocator.

    :param redzone: bytes of canary on each side of every block (a multiple of 16).
    :param quarantine_bytes: freed bytes kept poisoned before their memory is reused.
    :param stack_depth: Python frames recorded per allocation and free.
    :param on_error: ``"raise"`` (record the report and raise), ``"report"`` (record and
        carry on) or ``"abort"`` (print the report to stderr and abort the process).
    :param canary: ``"keyed"`` (per-block patterns, the default) or ``"fixed"`` (0xFD).
    :param plugins: objects implementing memguard hooks, registered on this heap.
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
        self._stacks = StackTable(stack_depth)
        self._lock = Mutex()
        #: Held by the one thread taking blocks out of the quarantine (and by close()).
        self._evictor = Mutex()
        self._arenas: dict[int, tuple[Any, ...]] | _Closed = {}
        self._arena_count = 0
        self._bump: list[list[Any] | None] = [None] * (SMALL_MAX // 16 + 1)
        #: arena base -> its ``[view, base, stride, carved bytes]`` bump record
        self._bump_of: dict[int, list[Any]] = {}
        self._free_slots: list[list[int]] | _Closed = [[] for _ in range(SMALL_MAX // 16 + 1)]
        self._large: dict[int, tuple[memoryview, int, int]] | _Closed = {}
        #: Freed blocks, oldest first, as ``address << 13 | size`` (``_LARGE_MARK`` for a large block).
        self._quarantine: deque[int] = deque()
        self._closed = False
        self._build_paths()
        if plugins:
            for plugin in plugins:
                self.plugins.register(plugin)

    # ------------------------------------------------------------------ plugins
    def set_seams(self, seams: Seams) -> None:
        """Install the hook seams; the allocation and free seams also reach the fast paths."""
        super().set_seams(seams)
        self._on_alloc = seams.on_alloc
        self._on_free = seams.on_free

    def c_allocator(self) -> CAllocator:
        """C-callable allocator functions on this heap (see :mod:`memguard.callbacks`).

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

    # ------------------------------------------------------------------ arenas
    def _carve(self, cls: int) -> int:
        """Take a never-used slot of size class ``cls`` (user size ``16 * cls``); under the lock."""
        if self._closed:
            raise HeapClosedError("the heap is closed")
        bump = self._bump[cls]
        if bump is None or bump[3] + bump[2] > ARENA_SIZE:
            uoff, rz = self._uoff, self.redzone
            stride = uoff + 16 * cls + rz
            # The buffer runs one slot past ARENA_SIZE so that reading the header of the
            # partial slot at the end reads bytes memguard owns.
            address, view = native.owned_buffer(ARENA_SIZE + stride, ARENA_SIZE)
            native.memset(address, 0xDD, ARENA_SIZE + stride)
            body = 16 * cls
            # Reading a slot at free: seal, size, serial, state, front redzone, the last 16
            # bytes of the user region (where the padding is), the tail redzone.
            last = min(body, 16)
            reader = _struct(f"<QIQ4xI4x{rz}s{body - last}x{last}s{rz}s")
            # Freeing it: state, free stack, front redzone (rewritten as is), 0xDD fill.
            freer = _struct(f"<II{rz}s{body}s")
            # (view, base, stride, user address of slot 0, reader, freer); the canary key
            # of a slot is its offset & 0xFF0 (the patterns are drawn from the heap's secret).
            self._arenas[address >> ARENA_SHIFT] = (
                view, address, stride, address + uoff, reader.unpack_from, freer.pack_into
            )
            self._arena_count += 1
            bump = self._bump[cls] = self._bump_of[address] = [view, address, stride, 0]
        hoff = bump[3]
        bump[3] = hoff + bump[2]
        return bump[1] + hoff + self._uoff

    def _find(self, p: int) -> tuple[memoryview, int] | None:
        """``(view, header offset)`` of the block whose user region starts at ``p``."""
        arena = self._arenas.get(p >> ARENA_SHIFT)
        if arena is not None:
            view, base, stride = arena[:3]
            hoff = p - base - self._uoff
            if hoff >= 0 and hoff % stride == 0 and hoff + stride <= ARENA_SIZE:
                return view, hoff
            return None
        large = self._large.get(p)
        if large is not None:
            return large[0], large[1]
        return None

    def _containing(self, p: int) -> tuple[memoryview, int, int] | None:
        """``(view, header offset, user address)`` of a block whose slot contains ``p``."""
        arena = self._arenas.get(p >> ARENA_SHIFT)
        if arena is not None:
            view, base, stride = arena[:3]
            index = (p - base) // stride
            if (index + 1) * stride > ARENA_SIZE:
                return None
            hoff = index * stride
            return view, hoff, base + hoff + self._uoff
        for user, (view, hoff, n) in self._large.items():
            if user - self._uoff <= p < user + _round16(n) + self.redzone:
                return view, hoff, user
        return None

    # ------------------------------------------------------------------ fast paths
    def _build_paths(self) -> None:
        """Build the counters and the malloc/free fast paths of this heap, as closures.

        A guarded malloc+free pair has to cost only a few times two ctypes calls, so the
        common case (a small block, no finding, no contention) runs as a closure over the
        heap's tables: cell and local variables instead of attribute lookups, per-size
        tables of bound ``struct`` methods built on first use, one ``struct`` call to
        write a block, one to read it back at free and one to poison it.  Everything else
        falls back to the general methods (:meth:`_alloc`, :meth:`_free_slow`).

        The counters live here too; the methods reach them through ``_counts``,
        ``_count_alloc``, ``_retire`` and ``_forget_quarantine``.  Like bound methods, the
        fast paths keep their heap alive.

        While a fast path holds the lock token it allocates nothing the garbage collector
        tracks and calls no code outside memguard (see :mod:`memguard.mutex`): a block is
        read and verified before the token is taken.  Blocks leave the quarantine without
        the lock, in :func:`evict`, which one thread at a time runs (it has a token of its
        own); the quarantined bytes are ``qin - qout``, each counter with a single writer
        (``qin`` under the lock, ``qout`` under the evictor's token).
        """
        heap = self
        uoff, rz = self._uoff, self.redzone
        arenas = self._arenas
        free_slots = self._free_slots
        quarantine = self._quarantine
        q_append, q_popleft = quarantine.append, quarantine.popleft
        ev_take, ev_give = self._evictor.take, self._evictor.give
        memory = native.address_space()
        budget = self.quarantine_bytes
        low = budget - (budget >> 4)  # eviction takes the quarantine down to 15/16 of its budget
        seal_key = self._seal_key
        front_l, tails_l, pads_l = self._front, self._tails, self._canaries.pads
        stacks = self._stacks
        capture = stacks.capture
        take, give = self._lock.take, self._lock.give
        # Tables by user size, built on first use; the entries are per size class (few and
        # small, so they stay in cache) and shared by the sizes of the class:
        #: (pack_into writing a whole slot, the class's free list)
        writers: list[tuple[Any, ...] | None] = [None] * (SMALL_MAX + 1)
        #: (a reader of a freed block's poison and what it reads when the poison is intact,
        #: or None and the poisoned span; push onto the class's free list)
        checkers: list[tuple[Any, ...] | None] = [None] * (SMALL_MAX + 1)
        serial = live = peak = qin = qout = evicted = 0
        # The last call site of each fast path, ``(frame, f_lasti, stack id)``: a loop that
        # allocates or frees at one line costs one comparison instead of a stack walk.
        # Only user frames are kept (a wrapper inside memguard is one frame for many
        # callers); the tuple is replaced whole, so threads never see half of one.
        malloc_site: tuple[FrameType | None, int, int] = (None, -1, 0)
        free_site: tuple[FrameType | None, int, int] = (None, -1, 0)
        on_alloc: Callable[[GuardedHeap, int], None] | None = None
        on_free: Callable[[GuardedHeap, int], None] | None = None

        def size_class(size: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
            """Build the tables of ``size``'s class; return its (writer, checker)."""
            cls = _CLASS_OF[size]
            span = cls << 4
            slots = free_slots[cls]
            if span <= _UNPACK_MAX:  # small poison: unpacked and compared (no memoryview slice)
                checker = (_struct(f"{span}s").unpack_from, (_FILL_FREED[:span],), slots.append)
            else:  # compared in place, by evict()
                checker = (None, span, slots.append)
            # Header, front redzone, 0xCD over the whole span, tail redzone; the padding
            # between the block's end and the span's end is written after it (_PADS).
            writer = (_struct(f"<QIQIII{rz}s{span}s{rz}s").pack_into, slots)
            for n in range(max(span - 15, 0), span + 1):
                writers[n] = writer
                checkers[n] = checker
            return writer, checker

        def malloc(size: int) -> int:
            nonlocal serial, live, peak, malloc_site
            if type(size) is not int or not 0 <= size <= SMALL_MAX:
                return heap._alloc(heap._size_arg(size, "size"), 16, _FILL_NEW, _getframe(1))
            f = _getframe(1)
            site = malloc_site
            if site[0] is f and site[1] == f.f_lasti:
                sid = site[2]
            else:
                sid = capture(f)
                if is_user_frame(f):
                    malloc_site = (f, f.f_lasti, sid)
            pack, slots = writers[size] or size_class(size)[0]
            try:
                take()
            except IndexError:  # another thread holds the lock
                return heap._alloc(size, 16, _FILL_NEW, f)
            if not slots:  # (only this lock's holder pops) the general path carves a slot
                give(True)
                return heap._alloc(size, 16, _FILL_NEW, f)
            try:
                p = slots.pop()
                hoff = (p & _ARENA_MASK) - uoff  # arenas are aligned to their size
                serial += 1
                k = hoff & 0xFF0
                pad = _PAD_OF[size]
                # A slot on a free list belongs to a live arena, so it is written by address.
                pack(
                    memory, p - uoff, serial + size + hoff + seal_key, size, serial, sid, LIVE, 0,
                    front_l[k], _FILL_NEW, tails_l[k + pad],
                )
                if pad:
                    _PADS[pad](memory, p + size, pads_l[k + pad])
                live += size
                if live > peak:
                    peak = live
            finally:
                give(True)
            if on_alloc is not None:
                on_alloc(heap, p)
            return p

        def free(address: int) -> None:
            nonlocal live, qin, free_site
            p = address
            f = _getframe(1)
            if type(p) is not int:
                return heap._free_slow(p, f)
            try:
                view, _, _, ubase, read, poison = arenas[p >> ARENA_SHIFT]
            except KeyError:  # not in an arena (also 0 and negative addresses)
                return heap._free_slow(p, f)
            hoff = p - ubase
            # Read and verify the block before taking the lock (this allocates).  An address
            # that is not the start of a slot reads bytes of the arena that fail the seal
            # (it covers the block's offset), and the general path reports it.
            try:
                seal, n, ser, state, front, last, tail = read(view, hoff)
            except struct.error:  # just after the arena's start: no slot begins there
                return heap._free_slow(p, f)
            if not (state == LIVE and seal == ser + n + hoff + seal_key):
                return heap._free_slow(p, f)
            k = hoff & 0xFF0
            kp = k + _PAD_OF[n]
            if not (front == front_l[k] and tail == tails_l[kp] and (kp == k or last.endswith(pads_l[kp]))):
                return heap._free_slow(p, f)
            site = free_site
            if site[0] is f and site[1] == f.f_lasti:
                sid = site[2]
            else:
                sid = capture(f)
                if is_user_frame(f):
                    free_site = (f, f.f_lasti, sid)
            try:
                take()
            except IndexError:  # another thread holds the lock
                return heap._free_slow(p, f)
            try:
                # Not freed by another thread meanwhile.  (Were it freed, evicted and handed
                # to a third thread in that time, the state reads live again: the race needs
                # the whole quarantine to go by, and is not guarded against.)
                freed = view[hoff + _STATE_OFFSET] == _LIVE_LOW
                if freed:
                    poison(view, hoff + _STATE_OFFSET, QUARANTINED, sid, front, _FILL_FREED)
                    live -= n
                    q_append(p << 13 | n)
                    qin += n
            finally:
                give(True)
            if not freed:
                return heap._free_slow(p, f)
            if on_free is not None:
                on_free(heap, p)
            if qin - qout > budget:
                reports = evict()
                if reports:
                    __tracebackhide__ = True
                    heap.emit(reports)

        def evict() -> list[Report] | None:
            """Take the oldest blocks out of the quarantine until it is under budget.

            Blocks leave in batches (down to 15/16 of the budget), each with its poison
            verified: a small block's slot goes back to its size class (still poisoned,
            and still verified by ``check()``, until it is reused); a large block's memory
            goes back to the native allocator.  Runs without the lock, in one thread at a
            time: a thread that finds another evicting (or itself, re-entered from a
            finalizer) leaves the work to it.
            """
            nonlocal qout, evicted
            if qin - qout <= budget:
                return None
            try:
                ev_take()
            except IndexError:
                return None
            reports = None
            out, goal, count = qout, qin - low, 0
            try:
                # close() takes this token before it releases the arenas: while it is held,
                # the blocks of an open heap can be read by address.
                if heap._closed:
                    return None
                while out < goal:
                    try:
                        e = q_popleft()
                    except IndexError:  # pragma: no cover - only after a concurrent close()
                        break
                    n = e & _LARGE_MARK
                    p = e >> 13
                    if n != _LARGE_MARK:
                        # (a block the general path made may be the first of its class here)
                        check, intact, push = checkers[n] or size_class(n)[1]
                        if (
                            check(memory, p) != intact
                            if check is not None
                            else not _FILL_FREED.startswith(memory[p : p + intact])
                        ):
                            found = heap._evict_small_slow(p)
                            if found:
                                reports = (reports or []) + found
                        push(p)
                    else:
                        n, found = heap._evict_large(p)
                        if found:
                            reports = (reports or []) + found
                    out += n
                    count += 1
            finally:
                qout = out
                evicted += count
                ev_give(True)
            return reports

        def retire(p: int, n: int, is_large: bool) -> None:
            """Put a freed block in the quarantine (lock held); :func:`evict` follows."""
            nonlocal live, qin
            live -= n
            q_append(p << 13 | (_LARGE_MARK if is_large else n))
            qin += n

        def count_alloc(size: int) -> int:
            """Count a new block (lock held); return its serial number."""
            nonlocal serial, live, peak
            serial += 1
            live += size
            if live > peak:
                peak = live
            return serial

        def counts() -> tuple[int, int, int, int, int]:
            """``(serial, live bytes, peak bytes, quarantined bytes, evicted blocks)``."""
            return serial, live, peak, qin - qout, evicted

        def forget_quarantine() -> None:
            """Empty the quarantine without verifying it, forget call sites (``close``; lock held)."""
            nonlocal qin, evicted, malloc_site, free_site
            malloc_site = free_site = (None, -1, 0)
            evicted += len(quarantine)
            quarantine.clear()
            qin = qout

        def set_seam(name: str, fn: Callable[[GuardedHeap, int], None] | None) -> None:
            nonlocal on_alloc, on_free
            if name == "_on_alloc":
                on_alloc = fn
            else:
                on_free = fn

        self._count_alloc = count_alloc
        self._counts = counts
        self._retire = retire
        self._evict = evict
        self._forget_quarantine = forget_quarantine
        self._set_seam = set_seam
        # The fast paths shadow the general methods, unless a subclass overrides them.
        if type(self).malloc is GuardedHeap.malloc:
            malloc.__doc__, malloc.__qualname__ = GuardedHeap.malloc.__doc__, "GuardedHeap.malloc"
            self.malloc = malloc  # type: ignore[method-assign]
        if type(self).free is GuardedHeap.free:
            free.__doc__, free.__qualname__ = GuardedHeap.free.__doc__, "GuardedHeap.free"
            self.free = free  # type: ignore[method-assign]

    #: Hook seams: called after every allocation, and after every successful free (set by
    #: the plugin manager; None when no plugin implements the hook).
    _on_alloc = _Seam()
    _on_free = _Seam()

    # ------------------------------------------------------------------ allocation
    def malloc(self, size: int) -> int:
        """Allocate ``size`` bytes filled with 0xCD; return the user address."""
        return self._alloc(self._size_arg(size, "size"), 16, _FILL_NEW, _getframe(1))

    def calloc(self, count: int, size: int) -> int:
        """Allocate ``count * size`` zeroed bytes; ``MemoryError`` when the product overflows."""
        count = self._size_arg(count, "count")
        size = self._size_arg(size, "size")
        total = count * size
        if total > _SIZE_MAX:
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
        return self._alloc(self._size_arg(size, "size"), alignment, _FILL_NEW, _getframe(1))

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
            return self._alloc(size, 16, _FILL_NEW, frame)
        with self._lock:
            found = self._find(address)
            hdr = self._header(found) if found is not None else None
            if found is None or hdr is None or hdr[4] != LIVE or not self._seal_ok(address, hdr, found[1]):
                reports = [self._bad_free_report(address, found, frame, "realloc")]
                new = 0
            else:
                new = self._alloc(size, 16, _FILL_NEW, frame)
                nfound = self._find(new)
                assert nfound is not None
                keep = min(hdr[2], size)
                u = found[1] + self._uoff
                nu = nfound[1] + self._uoff
                nfound[0][nu : nu + keep] = found[0][u : u + keep]
                reports = self._free_found(found[0], found[1], address, self._stacks.capture(frame))
                if reports and self.on_error != "report":
                    # The caller will not get the new block: give it back rather than leak it.
                    reports += self._free_found(nfound[0], nfound[1], new, self._stacks.capture(frame))
                    new = 0
        self.emit(reports)
        if new and self._on_free is not None:
            self._on_free(self, address)
        return new

    def _size_arg(self, value: object, what: str) -> int:
        if type(value) is not int:
            if isinstance(value, (float, complex, str, bytes)) or not hasattr(value, "__index__"):
                raise TypeError(f"{what} must be an int, got {type(value).__name__}")
            value = operator.index(value)
        if value < 0:
            raise ValueError(f"{what} must be >= 0, got {value}")
        if value > _SIZE_MAX:
            raise MemoryError(f"cannot allocate {value} bytes: larger than SIZE_MAX")
        return value

    def _address_arg(self, value: object) -> int:
        if type(value) is not int:
            if value is None:
                return 0
            if isinstance(value, (float, complex, str, bytes)) or not hasattr(value, "__index__"):
                raise TypeError(f"address must be an int, got {type(value).__name__}")
            value = operator.index(value)
        if value < 0:
            raise ValueError(f"address must be >= 0, got {value}")
        return value

    def _alloc(self, size: int, alignment: int, fill: bytes | None, frame: FrameType | None) -> int:
        """General allocation path: any size, any alignment, 0xCD or zero fill."""
        sid = self._stacks.capture(frame)
        uoff = self._uoff
        with self._lock:
            if self._closed:
                raise HeapClosedError("the heap is closed")
            if size <= SMALL_MAX and alignment <= 16:
                slots = self._free_slots[(size + 15) >> 4]
                p = slots.pop() if slots else self._carve((size + 15) >> 4)
                view, base = self._arenas[p >> ARENA_SHIFT][:2]
                hoff = p - base - uoff
            else:
                if size > MAX_BLOCK:
                    raise MemoryError(f"cannot allocate {size} bytes: memguard's blocks hold at most {MAX_BLOCK} bytes")
                pre = -uoff % alignment
                total = pre + uoff + _round16(size) + self.redzone
                try:
                    address, view = native.owned_buffer(total, max(alignment, 16))
                except MemoryError:
                    raise MemoryError(
                        f"cannot allocate {size} bytes (alignment {alignment}): the native allocator returned NULL"
                    ) from None
                hoff = pre
                p = address + pre + uoff
                self._large[p] = (view, hoff, size)
            if True:
                serial = self._count_alloc(size)
                front, rear = self._expected(p, size)
                _HDR.pack_into(view, hoff, serial + size + hoff + self._seal_key, size, serial, sid, LIVE, 0)
                u = hoff + uoff
                view[u - self.redzone : u] = front
                if size <= SMALL_MAX:
                    view[u : u + size] = fill[:size] if fill is not None else bytes(size)
                else:
                    native.memset(p, 0xCD if fill is not None else 0, size)
                view[u + size : u + size + len(rear)] = rear
        if self._on_alloc is not None:
            self._on_alloc(self, p)
        return p

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
        with self._lock:
            reports, freed = self._free_other(p, self._stacks.capture(frame), frame)
        if freed and self._on_free is not None:
            self._on_free(self, p)
        __tracebackhide__ = True
        self.emit(reports)

    def _free_other(self, p: int, sid: int, frame: FrameType | None) -> tuple[list[Report], bool]:
        """Free ``p`` under the lock: large blocks, findings, bad pointers.

        Returns the findings and whether a block was freed.
        """
        found = self._find(p)
        state = self._header(found)[4] if found is not None else None
        if state == RETIRED:
            return [], False  # reported when its header was found damaged; never reused
        if state != LIVE:
            return [self._bad_free_report(p, found, frame, "free")], False
        assert found is not None
        reports = self._free_found(found[0], found[1], p, sid)
        return reports, self._header(found)[4] == QUARANTINED

    def _free_found(self, view: memoryview, hoff: int, p: int, sid: int) -> list[Report]:
        """Free the live block ``p`` (header at ``hoff``), reporting corruption first."""
        hdr = self._header((view, hoff))
        n = hdr[2]
        reports: list[Report] = []
        if not self._seal_ok(p, hdr, hoff):
            reports.append(self._header_report(view, hoff, p, hdr, "free"))
            _STATE.pack_into(view, hoff + _STATE_OFFSET, RETIRED)
            return reports
        reports.extend(self._verify_redzones(view, hoff, p, hdr, repair=True))
        u = hoff + self._uoff
        _struct("<II").pack_into(view, hoff + _STATE_OFFSET, QUARANTINED, sid)
        if n <= SMALL_MAX:
            view[u : u + _round16(n)] = _FILL_FREED[: _round16(n)]
        else:
            native.memset(p, 0xDD, _round16(n))
        self._retire(p, n, p in self._large)
        reports.extend(self._evict() or ())
        return reports

    def _evict_small_slow(self, p: int) -> list[Report]:
        """A small block left the quarantine with damaged poison: report it, repaired."""
        with self._lock:
            found = self._find(p)
            if found is None:  # pragma: no cover - the heap was closed meanwhile
                return []
            view, hoff = found
            hdr = _read_header(view, hoff)
            if hdr[4] == RETIRED:
                return []
            if not self._seal_ok(p, hdr, hoff) or hdr[4] != QUARANTINED:
                return [self._header_report(view, hoff, p, hdr, "quarantine eviction")]
            return self._verify_freed(view, hoff, p, hdr, repair=True)

    def _evict_large(self, p: int) -> tuple[int, list[Report]]:
        """A large block left the quarantine: verify it and return its memory.

        Returns the block's size and the findings.
        """
        with self._lock:
            large = self._large.get(p) if not self._closed else None
            if large is None:  # pragma: no cover - the heap was closed meanwhile
                return 0, []
            view, hoff, n = large
            hdr = _read_header(view, hoff)
            if hdr[4] == RETIRED:
                reports = []
            elif not self._seal_ok(p, hdr, hoff) or hdr[4] != QUARANTINED:
                reports = [self._header_report(view, hoff, p, hdr, "quarantine eviction")]
            else:
                reports = self._verify_freed(view, hoff, p, hdr, repair=False)
            # Dropping the entry drops the view, and with it the native memory (unless a
            # user's memoryview still holds it).
            del self._large[p]
            return n, reports

    def _slot_capacity(self, p: int) -> int:
        arena = self._arenas.get(p >> ARENA_SHIFT)
        return arena[2] - self._uoff - self.redzone if arena is not None else 0

    # ------------------------------------------------------------------ verification
    def _header(self, found: tuple[memoryview, int]) -> tuple[int, int, int, int, int, int]:
        return _read_header(found[0], found[1])

    def _key16(self, p: int) -> int:
        """The canary key of the block at ``p`` (arena blocks: from the arena's key and offset)."""
        arena = self._arenas.get(p >> ARENA_SHIFT)
        if arena is not None:
            return (p - arena[1] - self._uoff) & 0xFF0
        return self._canaries.key16(p)

    def _expected(self, p: int, n: int) -> tuple[bytes, bytes]:
        """``(front, rear)`` redzone bytes of the ``n``-byte block at ``p``."""
        k = self._key16(p)
        return self._front[k], self._rear[k | (-n & MAX_PAD)]

    def _seal_ok(self, p: int, hdr: tuple[int, ...], hoff: int) -> bool:
        """Whether a header is intact: the seal matches and the size fits the slot."""
        seal, _, n, serial, state, _ = hdr
        if seal != serial + n + hoff + self._seal_key or state not in _STATE_NAMES:
            return False
        large = self._large.get(p)
        if large is not None:
            return large[2] == n
        return n <= self._slot_capacity(p)

    def _diff(
        self, kind: str, view: memoryview, hoff: int, p: int, hdr: tuple[int, ...],
        start: int, expected: bytes, repair: bool,
    ) -> list[Report]:
        """Compare the block's bytes at user offset ``start`` with ``expected``; report a mismatch.

        The report covers the run from the first to the last bad byte, and the bytes are
        restored afterwards when ``repair`` is set, so each corruption is reported once.
        """
        u = hoff + self._uoff
        found = bytes(view[u + start : u + start + len(expected)])
        if found == expected:
            return []
        bad = [i for i in range(len(expected)) if found[i] != expected[i]]
        first, last = bad[0], bad[-1]
        report = self._corruption_report(
            kind, view, hoff, p, hdr, start + first, last - first + 1, expected[first : last + 1], found[first : last + 1]
        )
        if repair:
            view[u + start : u + start + len(expected)] = expected
        return [report]

    def _verify_redzones(self, view: memoryview, hoff: int, p: int, hdr: tuple[int, ...], repair: bool) -> list[Report]:
        """Front and rear redzones of a live block."""
        n = hdr[2]
        front, rear = self._expected(p, n)
        return self._diff("heap-buffer-underflow", view, hoff, p, hdr, -self.redzone, front, repair) + self._diff(
            "heap-buffer-overflow", view, hoff, p, hdr, n, rear, repair
        )

    def _poison_intact(self, view: memoryview, u: int, p: int, span: int) -> bool:
        if span <= SMALL_MAX:
            return _FILL_FREED.startswith(view[u : u + span])
        dd = _poison_address()
        memcmp = native.memcmp
        for start in range(0, span, _POISON_CHUNK):
            if memcmp(p + start, dd, min(_POISON_CHUNK, span - start)):
                return False
        return True

    def _verify_freed(self, view: memoryview, hoff: int, p: int, hdr: tuple[int, ...], repair: bool) -> list[Report]:
        """A freed block: front redzone, 0xDD over the user region and padding, tail redzone."""
        n = hdr[2]
        span = _round16(n)
        k = self._key16(p)
        kp = k | (-n & MAX_PAD)
        uaf = "heap-use-after-free"
        reports = self._diff(uaf, view, hoff, p, hdr, -self.redzone, self._front[k], repair)
        if not self._poison_intact(view, hoff + self._uoff, p, span):
            if span <= SMALL_MAX:
                reports += self._diff(uaf, view, hoff, p, hdr, 0, _FILL_FREED[:span], repair)
            else:
                for start in range(0, span, _POISON_CHUNK):
                    size = min(_POISON_CHUNK, span - start)
                    reports += self._diff(uaf, view, hoff, p, hdr, start, b"\xdd" * size, repair)
        reports += self._diff(uaf, view, hoff, p, hdr, span, self._tails[kp], repair)
        return reports

    # ------------------------------------------------------------------ reports
    def _thread(self) -> str:
        t = threading.current_thread()
        return f"{t.name} (T{t.ident})"

    def _memory(self, view: memoryview, hoff: int, p: int, n: int, bad: int) -> tuple[bytes, int]:
        """Up to 64 bytes of the block's own slot around address ``bad``."""
        slot_start = p - self._uoff
        slot_end = p + _round16(n) + self.redzone
        lo = max(slot_start, (bad - 32) & ~15)
        hi = min(slot_end, lo + 64)
        return bytes(view[hoff + (lo - slot_start) : hoff + (hi - slot_start)]), lo

    def _corruption_report(
        self, kind: str, view: memoryview, hoff: int, p: int, hdr: tuple[int, ...],
        offset: int, count: int, expected: bytes, found: bytes,
    ) -> Report:
        _, asid, n, serial, state, fsid = hdr
        memory, start = self._memory(view, hoff, p, n, p + offset)
        if state != LIVE and not 0 <= offset < n:
            what = f"{count} byte(s) written {'past the end' if offset >= n else 'before the start'} of a freed {n}-byte block"
        elif kind == "heap-buffer-overflow":
            what = f"{count} byte(s) corrupted {offset - n} byte(s) past the end of a {n}-byte block"
        elif kind == "heap-buffer-underflow":
            what = f"{count} byte(s) corrupted {-offset} byte(s) before the start of a {n}-byte block"
        else:
            what = f"{count} byte(s) written at offset {offset} of a freed {n}-byte block"
        return Report(
            kind=kind, address=p, size=n, offset=offset,
            alloc_stack=self._stacks.get(asid),
            free_stack=self._stacks.get(fsid) if state == QUARANTINED else (),
            stack=self._stacks.get(self._stacks.here()),
            expected=expected, found=found, thread=self._thread(), message=what,
            serial=serial, memory=memory, memory_start=start, count=count,
        )

    def _header_report(self, view: memoryview, hoff: int, p: int, hdr: tuple[int, ...], when: str) -> Report:
        raw = bytes(view[hoff : hoff + HEADER_SIZE])
        return Report(
            kind="heap-buffer-underflow", address=p, size=0, offset=-self._uoff, count=HEADER_SIZE,
            stack=self._stacks.get(self._stacks.here()), thread=self._thread(), found=raw,
            message=f"the block header was overwritten (detected at {when}); size and stacks are unknown",
            memory=raw + bytes(view[hoff + HEADER_SIZE : hoff + self._uoff]), memory_start=p - self._uoff,
        )

    def _bad_free_report(self, p: int, found: tuple[memoryview, int] | None, frame: FrameType | None, op: str) -> Report:
        stack = self._stacks.get(self._stacks.capture(frame))
        thread = self._thread()
        if found is not None:
            hdr = self._header(found)
            if self._seal_ok(p, hdr, found[1]) and hdr[4] == QUARANTINED:
                _, asid, n, serial, state, fsid = hdr
                return Report(
                    kind="double-free", address=p, size=n, stack=stack, thread=thread, serial=serial,
                    alloc_stack=self._stacks.get(asid), free_stack=self._stacks.get(fsid),
                    message=f"attempting {op} on 0x{p:x}, a {n}-byte block that was already freed",
                )
            if hdr[4] != NEVER:
                return self._header_report(found[0], found[1], p, hdr, op)
        inside = self._containing(p)
        if inside is not None:
            view, hoff, user = inside
            hdr = self._header((view, hoff))
            if hdr[4] in (LIVE, QUARANTINED) and self._seal_ok(user, hdr, hoff):
                _, asid, n, serial, state, fsid = hdr
                off = p - user
                where = f"{off} bytes inside of" if 0 <= off < n else (f"{-off} bytes to the left of" if off < 0 else f"{off - n} bytes to the right of")
                return Report(
                    kind="bad-free", address=user, size=n, offset=off, stack=stack, thread=thread, serial=serial,
                    alloc_stack=self._stacks.get(asid),
                    free_stack=self._stacks.get(fsid) if state == QUARANTINED else (),
                    message=f"attempting {op} on address which was not malloc()-ed: 0x{p:x} is located {where} {n}-byte region [0x{user:x},0x{user + n:x})",
                )
        return Report(
            kind="bad-free", address=p, stack=stack, thread=thread,
            message=f"attempting {op} on address which was not malloc()-ed: 0x{p:x}",
        )

    # ------------------------------------------------------------------ inspection
    def view(self, address: int) -> memoryview:
        """A writable 1-D ``'B'`` memoryview of exactly the user bytes of a live block."""
        p = self._address_arg(address)
        with self._lock:
            found = self._find(p) if p else None
            if found is None or self._header(found)[4] != LIVE or not self._seal_ok(p, self._header(found), found[1]):
                raise InvalidAddressError(f"0x{p:x} is not a live block of this heap")
            n = self._header(found)[2]
            u = found[1] + self._uoff
            return found[0][u : u + n]

    def block(self, address: int) -> BlockInfo:
        """What memguard knows about the block at ``address`` (live, quarantined or released)."""
        p = self._address_arg(address)
        with self._lock:
            found = self._find(p) if p else None
            hdr = self._header(found) if found is not None else None
            if hdr is None or found is None or not self._seal_ok(p, hdr, found[1]):
                raise InvalidAddressError(f"0x{p:x} is not a block of this heap")
            _, asid, n, serial, state, fsid = hdr
            return BlockInfo(
                address=p, size=n, serial=serial, state=_STATE_NAMES[state],
                alloc_stack=self._stacks.get(asid),
                free_stack=self._stacks.get(fsid) if state != LIVE else (),
            )

    def _carved(self, base: int, stride: int) -> int:
        """Bytes of an arena that have been carved into slots (the rest was never used)."""
        return self._bump_of[base][3]

    def _check_arena(self, view: memoryview, base: int, stride: int) -> list[Report]:
        """Verify every slot of one arena; an intact slot costs a few comparisons.

        The arena is copied once and compared in place (``bytes.startswith`` at an offset),
        so no per-slot byte strings are made; a slot that fails is re-read and reported by
        :meth:`_check_one`.
        """
        reports: list[Report] = []
        uoff = self._uoff
        front_l, rear_l, tails = self._front, self._rear, self._tails
        seal_key = self._seal_key
        fills = _FREED_FILLS
        carved = self._carved(base, stride)
        data = view[:carved].tobytes()
        starts = data.startswith
        hoff = -stride
        for seal, n, serial, _, state, _ in _struct(f"<QIQIII{stride - HEADER_SIZE}x").iter_unpack(data):
            hoff += stride
            if state == NEVER:
                continue
            k = hoff & 0xFF0
            u = hoff + uoff
            if seal == serial + n + hoff + seal_key and n <= stride and starts(front_l[k], u - self.redzone):
                if state == LIVE:
                    if starts(rear_l[k | (-n & 15)], u + n):
                        continue
                elif state == QUARANTINED:
                    span = (n + 15) & -16
                    if starts(fills[span] or _freed_fill(span), u) and starts(tails[k | (-n & 15)], u + span):
                        continue
                elif state == RETIRED:
                    continue
            elif state == RETIRED:
                continue
            reports.extend(self._check_one(view, hoff, base + u))
        return reports

    def _check_one(self, view: memoryview, hoff: int, p: int) -> list[Report]:
        """Verify one block in detail (the slow path of :meth:`check`)."""
        hdr = _read_header(view, hoff)
        state = hdr[4]
        if state == RETIRED:
            return []
        if not self._seal_ok(p, hdr, hoff):
            _STATE.pack_into(view, hoff + _STATE_OFFSET, RETIRED)
            return [self._header_report(view, hoff, p, hdr, "check()")]
        if state == LIVE:
            return self._verify_redzones(view, hoff, p, hdr, repair=True)
        return self._verify_freed(view, hoff, p, hdr, repair=True)

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
                for view, base, stride, *_ in list(self._arenas.values()):
                    reports.extend(self._check_arena(view, base, stride))
                for p, (view, hoff, _) in list(self._large.items()):
                    reports.extend(self._check_one(view, hoff, p))
            else:
                q = self._quarantine
                freed = min(len(q), self._counts()[4] + len(q) - since.frees)
                young = [q[i] >> 13 for i in range(len(q) - freed, len(q))]
                if not self._young_all_freed(since.serial, since.frees):
                    young += [r.address for r in self._live_records(since.serial)]
                for p in young:
                    found = self._find(p)
                    if found is not None:
                        reports.extend(self._check_one(found[0], found[1], p))
        reports.extend(self.verify_registered())
        on_check = self.seams.on_check
        if on_check is not None:
            reports.extend(on_check(self))
        return self.settle(reports)

    def _live_records(self, since: int = 0) -> list[BlockRecord]:
        """Live blocks with a serial above ``since``, oldest first."""
        records = []
        uoff = self._uoff
        for view, base, stride, *_ in list(self._arenas.values()):
            walker = _struct(f"<QIQIII{stride - HEADER_SIZE}x")
            hoff = -stride
            for seal, n, serial, asid, state, fsid in walker.iter_unpack(view[: self._carved(base, stride)]):
                hoff += stride
                hdr = (seal, asid, n, serial, state, fsid)
                if hdr[4] == LIVE and hdr[3] > since and self._seal_ok(base + hoff + uoff, hdr, hoff):
                    records.append(BlockRecord(base + hoff + uoff, hdr[2], hdr[3], hdr[1]))
        for p, (view, hoff, _) in list(self._large.items()):
            hdr = _read_header(view, hoff)
            if hdr[4] == LIVE and hdr[3] > since and self._seal_ok(p, hdr, hoff):
                records.append(BlockRecord(p, hdr[2], hdr[3], hdr[1]))
        records.sort(key=lambda r: r.serial)
        return records

    def snapshot(self) -> Snapshot:
        """An immutable snapshot of the live blocks."""
        with self._lock:
            if self._closed:
                raise HeapClosedError("the heap is closed")
            serial, _, _, _, evicted = self._counts()
            return Snapshot(serial, tuple(self._live_records()), self._stacks, evicted + len(self._quarantine))

    @property
    def serial(self) -> int:
        """Allocations made so far: a cheap mark for ``leaks(since=heap.serial)``."""
        return self._counts()[0]

    def mark(self) -> Snapshot:
        """A cheap :class:`Snapshot` with no block records, for ``leaks(since=mark)``.

        Taking it costs a few counter reads, and ``leaks(since=mark)`` answers without walking
        the heap when every block allocated since the mark has already been freed.
        """
        with self._lock:
            serial, _, _, _, evicted = self._counts()
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
            if self._header(found)[3] > serial:
                young += 1
        return young == allocated

    def leaks(self, since: Snapshot | int | None = None) -> list[LeakGroup]:
        """Blocks still live that were allocated after ``since`` (all when ``None``).

        ``since`` is a :class:`Snapshot` or an allocation count (:attr:`serial`).  Grouped by
        allocation stack, largest total first.
        """
        if since is None:
            mark = 0
        elif isinstance(since, Snapshot):
            mark = since.serial
        elif type(since) is int:
            mark = since
        else:
            raise TypeError(f"since must be a Snapshot, an int or None, got {type(since).__name__}")
        with self._lock:
            if self._closed:
                raise HeapClosedError("the heap is closed")
            if isinstance(since, Snapshot) and since.frees >= 0 and self._young_all_freed(mark, since.frees):
                return []
            records = self._live_records(mark)
        return group_records(records, self._stacks)

    def stats(self) -> HeapStats:
        """Counters: live and peak bytes, allocations, frees, quarantine."""
        with self._lock:
            serial, live, peak, qbytes, evicted = self._counts()
            return HeapStats(
                live_blocks=serial - evicted - len(self._quarantine),
                live_bytes=live,
                peak_bytes=peak,
                total_allocs=serial,
                total_frees=evicted + len(self._quarantine),
                quarantined_blocks=len(self._quarantine),
                quarantined_bytes=qbytes,
                arena_bytes=self._arena_count * ARENA_SIZE,
                large_blocks=len(self._large) if not self._closed else 0,
            )

    # ------------------------------------------------------------------ lifetime
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def close(self, check: bool = True) -> list[Report]:
        """Verify the heap one last time (unless ``check=False``) and release its memory.

        Memory still viewed through a :meth:`view` memoryview is released only when that
        view is gone.  Further calls raise :class:`HeapClosedError`; closing twice is a no-op.
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
                self._bump = [None] * len(self._bump)
                self._bump_of = {}
                self._forget_quarantine()
                self._stacks.forget_frame()
            if self.has_plugins:
                self.plugins.heap_closed()
        if reports and self.on_error == "raise":
            raise error_for(reports[0])
        return reports

    def __repr__(self) -> str:
        s = self.stats() if not self._closed else None
        state = "closed" if s is None else f"{s.live_blocks} live blocks, {s.live_bytes} bytes"
        return f"<GuardedHeap {self.name!r}: {state}, {len(self.reports)} report(s)>"
