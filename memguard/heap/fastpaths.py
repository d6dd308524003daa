"""The guarded heap's fast paths: ``malloc`` and ``free`` of small blocks as per-heap closures.

A guarded malloc+free pair has to cost only a few times two ctypes calls, so the common
case (a small block, no finding, no contention) runs as a closure over the heap's
tables: cell and local variables instead of attribute lookups, per-size tables of bound
``struct`` methods built on first use, one ``struct`` call to write a block, one to read
it back at free and one to poison it.  Everything else falls back to the heap's general
methods (``_alloc``, ``_free_slow``), which do the same work step by step and write the
reports.

The heap's counters live here too, in the same closures; the heap reads and updates
them through :class:`Paths` (``counts``, ``count_alloc``, ``retire``, ``release``).  Like
bound methods, the fast paths keep their heap alive.

While a fast path holds the lock token it allocates nothing the garbage collector
tracks and calls no code outside memguard (see :mod:`memguard.heap.mutex`): a block is
read and verified before the token is taken.  Blocks leave the quarantine without the
lock, in ``evict``, which one thread at a time runs (it has a token of its own); the
quarantined bytes are ``qin - qout``, each counter with a single writer (``qin`` under
the lock, ``qout`` under the evictor's token).

Hot-path values are plain tuples, unpacked: CPython unpacks and indexes an exact tuple
faster than any subclass of it (a ``NamedTuple`` among them), so the fast free reads
its own table of arenas rather than the heap's :class:`~memguard.heap.layout.Arena`
records.
"""

from __future__ import annotations

import struct
import sys
from types import FrameType
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from memguard import native
from memguard.heap.mutex import Mutex
from memguard.heap.layout import (
    ARENA_MASK,
    ARENA_SHIFT,
    CLASS_OF,
    FILL_FREED,
    FILL_NEW,
    FREE_DELTA,
    HDR,
    LARGE_MARK,
    LIVE,
    LIVE_LOW,
    PAD_OF,
    PADS,
    QUARANTINED,
    SEAL_OFFSET,
    SMALL_MAX,
    STATE_OFFSET,
    UNPACK_MAX,
    Arena,
    cached_struct,
)
from memguard.report import Report
from memguard.stacks import is_user_frame

if TYPE_CHECKING:
    from memguard.heap.guarded import GuardedHeap

__all__ = ["Paths", "PathInputs", "Hook", "build_paths"]

_getframe = sys._getframe

#: A hook called after an allocation or a free: ``hook(heap, address)``.
Hook = Callable[[Any, int], None]


class Paths(NamedTuple):
    """What :func:`build_paths` makes for one heap (closures sharing its counters)."""

    #: the fast ``malloc(size)``
    malloc: Callable[[int], int]
    #: the fast ``free(address)``
    free: Callable[[int], None]
    #: take the oldest blocks out of the quarantine while it is over budget; the findings
    evict: Callable[[], list[Report] | None]
    #: count a freed block and put it in the quarantine (lock held): ``retire(p, n, is_large)``
    retire: Callable[[int, int, bool], None]
    #: count a new block (lock held); returns its serial number
    count_alloc: Callable[[int], int]
    #: ``(serial, live bytes, peak bytes, quarantined bytes, evicted blocks)``
    counts: Callable[[], tuple[int, int, int, int, int]]
    #: make a new arena's slots freeable by the fast free (lock held)
    add_arena: Callable[[Arena], None]
    #: forget the arenas, the quarantine (unverified) and the call sites (close; lock held)
    release: Callable[[], None]
    #: set the hooks called after each allocation and each free (None: no call)
    set_hooks: Callable[[Hook | None, Hook | None], None]


class PathInputs(NamedTuple):
    """What the fast paths need of their heap: its geometry, tables and general paths.

    The tables are shared with the heap, not copied; the general paths are the heap's
    bound methods the fast paths fall back to (they write the reports).
    """

    #: bytes from a slot's start to its user region (header + front redzone)
    uoff: int
    redzone: int
    #: per size class, the addresses of slots ready for reuse
    free_slots: list[list[int]]
    #: freed blocks, oldest first, as ``address << 13 | size``
    quarantine: deque[int]
    quarantine_bytes: int
    seal_key: int
    #: canary patterns by key: front redzones, tail redzones, paddings
    front: list[bytes]
    tails: list[bytes]
    pads: list[bytes]
    capture: Callable[[FrameType | None], int]
    lock: Mutex
    #: held by the one thread taking blocks out of the quarantine (and by close())
    evictor: Mutex
    #: ``alloc(size, alignment, fill, frame)``: the general allocation
    alloc: Callable[..., int]
    #: ``free_slow(address, frame)``: the general free
    free_slow: Callable[[Any, FrameType | None], None]
    #: ``size_arg(value, what)``: a size argument checked and converted
    size_arg: Callable[[object, str], int]
    #: ``evict_small(p)``: the findings of a small block whose poison is damaged
    evict_small: Callable[[int], list[Report]]
    #: ``evict_large(p)``: a large block leaves the quarantine; ``(its size, findings)``
    evict_large: Callable[[int], tuple[int, list[Report]]]
    #: whether the heap is closed
    is_closed: Callable[[], bool]


def build_paths(heap: GuardedHeap, inputs: PathInputs) -> Paths:
    """Build the counters and the malloc/free fast paths of ``heap``, as closures.

    ``heap`` is what the hooks and :meth:`~memguard.checker.Checker.emit` are called on;
    everything else comes from ``inputs``, read once.
    """
    uoff = inputs.uoff
    rz = inputs.redzone
    free_slots = inputs.free_slots
    quarantine = inputs.quarantine
    q_append, q_popleft = quarantine.append, quarantine.popleft
    ev_take, ev_give = inputs.evictor.take, inputs.evictor.give
    memory = native.address_space()
    budget = inputs.quarantine_bytes
    low = budget - (budget >> 4)  # eviction takes the quarantine down to 15/16 of its budget
    seal_key = inputs.seal_key
    # The seal of a live block is the key, its offset, size, serial, alloc stack, LIVE
    # and 0 summed (see layout.header_seal); freeing it adds FREE_DELTA and the free stack.
    live_key = seal_key + LIVE
    free_delta = FREE_DELTA
    front_l, tails_l, pads_l = inputs.front, inputs.tails, inputs.pads
    capture = inputs.capture
    take, give = inputs.lock.take, inputs.lock.give
    general_alloc, free_slow, size_arg = inputs.alloc, inputs.free_slow, inputs.size_arg
    evict_small, evict_large, is_closed = inputs.evict_small, inputs.evict_large, inputs.is_closed
    # Bound here: CPython 3.11 calls a method of an imported name through a bound method.
    poison_intact = FILL_FREED.startswith
    #: arena number -> ``(view, user address of slot 0, reader, freer)`` (see Arena)
    arenas: dict[int, tuple[memoryview, int, Any, Any]] = {}
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
    on_alloc: Hook | None = None
    on_free: Hook | None = None

    def size_class(size: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """Build the tables of ``size``'s class; return its (writer, checker)."""
        cls = CLASS_OF[size]
        span = cls << 4
        slots = free_slots[cls]
        checker: tuple[Any, ...]
        if span <= UNPACK_MAX:  # small poison: unpacked and compared (no memoryview slice)
            checker = (cached_struct(f"{span}s").unpack_from, (FILL_FREED[:span],), slots.append)
        else:  # compared in place, by evict()
            checker = (None, span, slots.append)
        # Header, front redzone, 0xCD over the whole span, tail redzone; the padding
        # between the block's end and the span's end is written after it (PADS).
        writer = (cached_struct(f"{HDR.format}{rz}s{span}s{rz}s").pack_into, slots)
        for n in range(max(span - 15, 0), span + 1):
            writers[n] = writer
            checkers[n] = checker
        return writer, checker

    def malloc(size: int) -> int:
        nonlocal serial, live, peak, malloc_site
        if type(size) is not int or not 0 <= size <= SMALL_MAX:
            return general_alloc(size_arg(size, "size"), 16, FILL_NEW, _getframe(1))
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
            return general_alloc(size, 16, FILL_NEW, f)
        if not slots:  # (only this lock's holder pops) the general path carves a slot
            give(True)
            return general_alloc(size, 16, FILL_NEW, f)
        try:
            p = slots.pop()
            hoff = (p & ARENA_MASK) - uoff  # arenas are aligned to their size
            serial += 1
            k = hoff & 0xFF0
            pad = PAD_OF[size]
            # A slot on a free list belongs to a live arena, so it is written by address.
            pack(
                memory, p - uoff, size, serial, sid, serial + size + hoff + sid + live_key, LIVE, 0,
                front_l[k], FILL_NEW, tails_l[k + pad],
            )
            if pad:
                PADS[pad](memory, p + size, pads_l[k + pad])
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
            return free_slow(p, f)
        try:
            view, ubase, read, poison = arenas[p >> ARENA_SHIFT]
        except KeyError:  # not in an arena (also 0 and negative addresses)
            return free_slow(p, f)
        hoff = p - ubase
        # Read and verify the block before taking the lock (this allocates).  An address
        # that is not the start of a slot reads bytes of the arena that fail the seal
        # (it covers the block's offset), and the general path reports it.
        try:
            n, ser, asid, seal, state, front, last, tail = read(view, hoff)
        except struct.error:  # just after the arena's start: no slot begins there
            return free_slow(p, f)
        if not (state == LIVE and seal == ser + n + hoff + asid + live_key):
            return free_slow(p, f)
        k = hoff & 0xFF0
        kp = k + PAD_OF[n]
        if not (front == front_l[k] and tail == tails_l[kp] and (kp == k or last.endswith(pads_l[kp]))):
            return free_slow(p, f)
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
            return free_slow(p, f)
        try:
            # Not freed by another thread meanwhile.  (Were it freed, evicted and handed
            # to a third thread in that time, the state reads live again: the race needs
            # the whole quarantine to go by, and is not guarded against.)
            freed = view[hoff + STATE_OFFSET] == LIVE_LOW
            if freed:
                poison(view, hoff + SEAL_OFFSET, seal + sid + free_delta, QUARANTINED, sid, front, FILL_FREED)
                live -= n
                q_append(p << 13 | n)
                qin += n
        finally:
            give(True)
        if not freed:
            return free_slow(p, f)
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
            if is_closed():
                return None
            while out < goal:
                try:
                    e = q_popleft()
                except IndexError:  # pragma: no cover - only after a concurrent close()
                    break
                n = e & LARGE_MARK
                p = e >> 13
                if n != LARGE_MARK:
                    # (a block the general path made may be the first of its class here)
                    check, intact, push = checkers[n] or size_class(n)[1]
                    if (
                        check(memory, p) != intact
                        if check is not None
                        else not poison_intact(memory[p : p + intact])
                    ):
                        found = evict_small(p)
                        if found:
                            reports = (reports or []) + found
                    push(p)
                else:
                    n, found = evict_large(p)
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
        q_append(p << 13 | (LARGE_MARK if is_large else n))
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

    def add_arena(arena: Arena) -> None:
        """Let the fast free find the slots of a new arena (lock held)."""
        arenas[arena.base >> ARENA_SHIFT] = (arena.view, arena.user0, arena.read, arena.poison)

    def release() -> None:
        """Forget the arenas, the quarantine (unverified) and the call sites (``close``; lock held).

        Every later call of a fast path falls back to the general methods.
        """
        nonlocal qin, evicted, malloc_site, free_site
        arenas.clear()
        malloc_site = free_site = (None, -1, 0)
        evicted += len(quarantine)
        quarantine.clear()
        qin = qout

    def set_hooks(alloc_hook: Hook | None, free_hook: Hook | None) -> None:
        """Set the functions called after each allocation and each free (None: none)."""
        nonlocal on_alloc, on_free
        on_alloc, on_free = alloc_hook, free_hook

    return Paths(malloc, free, evict, retire, count_alloc, counts, add_arena, release, set_hooks)
