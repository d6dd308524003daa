"""The guarded heap's fast paths: ``malloc`` and ``free`` of small blocks as per-heap closures.

A guarded malloc+free pair has to cost only a few times two ctypes calls, so the common
case (a small block from its size class's free list or a never-used slot of the class's
arena, no finding, no contention) runs as a closure over the heap's tables: cell and local variables instead of attribute lookups, per-size tables of bound
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
quarantined bytes are ``qin - qout`` (user bytes) and ``sin - sout`` (the bytes their slots
occupy: header, redzones, padding; what the budget counts), each counter with a single
writer (``qin`` and ``sin`` under the lock, ``qout`` and ``sout`` under the evictor's token).

An interrupt (Ctrl-C, any asynchronous exception) may land at any line: each path
records what it holds and has done in locals set with no call in between (see
:mod:`memguard.heap.mutex`), and its handler finishes or undoes the block it was writing
and gives the token back.  A block is counted, written whole, then handed out; a freed
block is poisoned, then queued, then counted.

Hot-path values are plain tuples, unpacked: CPython unpacks and indexes an exact tuple
faster than any subclass of it (a ``NamedTuple`` among them), so the fast free reads
its own table of arenas rather than the heap's :class:`~memguard.heap.layout.Arena`
records.
"""

from __future__ import annotations

import struct
import sys
from array import array
from types import FrameType
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from memguard import native
from memguard.heap.mutex import Mutex
from memguard.heap.layout import (
    ARENA_MASK,
    ARENA_SHIFT,
    ARENA_SIZE,
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

if TYPE_CHECKING:
    from memguard.heap.guarded import GuardedHeap

__all__ = ["Paths", "PathInputs", "Hook", "build_paths", "LOG_MAX"]

_getframe = sys._getframe

#: Most entries the allocation log holds (8 MiB of pointers); beyond, ``check(since=mark)``
#: and ``leaks(since=mark)`` walk the heap.
LOG_MAX = 1 << 20

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
    #: count a freed block and put it in the quarantine (lock held): ``retire(p, n, is_large,
    #: slot=0)`` (``slot``: a large block's native bytes)
    retire: Callable[..., None]
    #: count a new block (lock held): ``count_alloc(size, p=0)``; returns its serial number
    count_alloc: Callable[..., int]
    #: ``(serial, live bytes, peak bytes, quarantined bytes, evicted blocks)``
    counts: Callable[[], tuple[int, int, int, int, int]]
    #: make a new arena's slots freeable by the fast free (lock held)
    add_arena: Callable[[Arena], None]
    #: forget the arenas and the quarantine, unverified (close; lock held)
    release: Callable[[], None]
    #: set the hooks called after each allocation and each free (None: no call)
    set_hooks: Callable[[Hook | None, Hook | None], None]
    #: finish a ``retire`` an interrupt cut short (lock held): ``settle(p, n, is_large,
    #: queued_before, slot=0)``
    settle: Callable[..., None]
    #: bytes ever put in the quarantine (lock held; for ``settle``)
    queued: Callable[[], int]
    #: start a new peak window at the live bytes now; the peak of the window it ends (lock held)
    reset_peak: Callable[[], int]
    #: native bytes the quarantined blocks occupy (slots: header, redzones, padding)
    slot_bytes: Callable[[], int]
    #: start the allocation log afresh at the allocations made so far (lock held)
    start_log: Callable[[], None]
    #: ``allocated_since(serial)``: the addresses of the blocks allocated after ``serial``,
    #: in order, or None when the log does not hold all of them (lock held)
    allocated_since: Callable[[int], "array[int] | None"]


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
    #: per size class, the arena its never-used slots are carved from (``arena``,
    #: ``user0``, ``stride``, ``carved`` bytes so far), or None; emptied in place at close
    bump: list[Any]
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
    #: ``evict_large(p, again=False)``: a large block leaves the quarantine; ``(its size,
    #: the native bytes it occupied, findings)``
    evict_large: Callable[..., tuple[int, int, list[Report]]]
    #: whether the heap is closed
    is_closed: Callable[[], bool]
    #: ``discard(p, sid)``: free a complete block its caller never got (an interrupt, a
    #: hook that raised), without hooks; findings are deferred to the next ``check()``
    discard: Callable[[int, int], None]
    #: ``stale_free(p, n, serial, frame)``: a free whose block another thread freed (and
    #: the heap handed out again) between reading it and taking the lock: the double free
    stale_free: Callable[[int, int, int, Any], None]


def build_paths(heap: GuardedHeap, inputs: PathInputs) -> Paths:
    """Build the counters and the malloc/free fast paths of ``heap``, as closures.

    ``heap`` is what the hooks and :meth:`~memguard.checker.Checker.emit` are called on;
    everything else comes from ``inputs``, read once.
    """
    uoff = inputs.uoff
    rz = inputs.redzone
    free_slots = inputs.free_slots
    bump = inputs.bump
    quarantine = inputs.quarantine
    q_append, q_popleft = quarantine.append, quarantine.popleft
    ev_token, ev_give = inputs.evictor.token, inputs.evictor.give
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
    token, give = inputs.lock.token, inputs.lock.give
    general_alloc, free_slow, size_arg = inputs.alloc, inputs.free_slow, inputs.size_arg
    evict_small, evict_large, is_closed = inputs.evict_small, inputs.evict_large, inputs.is_closed
    discard, stale_free = inputs.discard, inputs.stale_free
    # Bound here: CPython 3.11 calls a method of an imported name through a bound method.
    poison_intact = FILL_FREED.startswith
    #: arena number -> ``(view, user address of slot 0, reader, freer, the view as 64-bit
    #: words)`` (see Arena; a seal is the word at ``(header offset + SEAL_OFFSET) >> 3``)
    arenas: dict[int, tuple[memoryview, int, Any, Any, memoryview]] = {}
    # Tables by user size, built on first use; the entries are per size class (few and
    # small, so they stay in cache) and shared by the sizes of the class:
    #: (pack_into writing a whole slot, the class's free list, the class)
    writers: list[tuple[Any, ...] | None] = [None] * (SMALL_MAX + 1)
    #: (a reader of a freed block's poison and what it reads when the poison is intact,
    #: or None and the poisoned span; push onto the class's free list; the slot's bytes)
    checkers: list[tuple[Any, ...] | None] = [None] * (SMALL_MAX + 1)
    #: ``slot_of[n]``: the bytes the slot of a small ``n``-byte block occupies
    slot_of = [uoff + ((n + 15) & ~15) + rz for n in range(SMALL_MAX + 1)]
    serial = live = peak = qin = qout = sin = sout = evicted = 0
    #: The allocation log: the address of every block allocated since ``log_start``
    #: allocations had been made (None: not kept).  ``start_log`` (a heap's ``mark()``)
    #: starts it; it stops growing at LOG_MAX entries.
    log: array[int] | None = None
    log_start = 0
    #: the highest peak of the windows :func:`reset_peak` ended (``peak`` is the current window's)
    peak_before = 0
    on_alloc: Hook | None = None
    on_free: Hook | None = None

    def size_class(size: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """Build the tables of ``size``'s class; return its (writer, checker)."""
        cls = CLASS_OF[size]
        span = cls << 4
        slots = free_slots[cls]
        checker: tuple[Any, ...]
        if span <= UNPACK_MAX:  # small poison: unpacked and compared (no memoryview slice)
            checker = (cached_struct(f"{span}s").unpack_from, (FILL_FREED[:span],), slots.append, slot_of[span])
        else:  # compared in place, by evict()
            checker = (None, span, slots.append, slot_of[span])
        # Header, front redzone, 0xCD over the whole span, tail redzone; the padding
        # between the block's end and the span's end is written after it (PADS).
        writer = (cached_struct(f"{HDR.format}{rz}s{span}s{rz}s").pack_into, slots, cls)
        for n in range(max(span - 15, 0), span + 1):
            writers[n] = writer
            checkers[n] = checker
        return writer, checker

    def malloc(size: int) -> int:
        nonlocal serial, live, peak
        if type(size) is not int or not 0 <= size <= SMALL_MAX:
            return general_alloc(size_arg(size, "size"), 16, FILL_NEW, _getframe(1))
        f = _getframe(1)
        sid = capture(f)
        pack, slots, cls = writers[size] or size_class(size)[0]
        # ``held``: this call holds the lock; ``p``: the block it counted (see the handlers).
        held = p = 0
        try:
            # Take the lock and say so on one line with no call: an interrupt lands
            # before both or after both (see memguard.heap.mutex).
            del token[0]; held = 1  # noqa: E702
            if slots:  # (only this lock's holder pops)
                # The slot and its counters in one statement: all or nothing.
                p, serial, live = slots.pop(), serial + 1, live + size
            else:  # a never-used slot of the class's arena, if it has one left (else the general path)
                c = bump[cls]
                if c is not None and c.carved + c.stride <= ARENA_SIZE:
                    # The slot, the arena's carved bytes and the counters in one statement.
                    p, c.carved, serial, live = c.user0 + c.carved, c.carved + c.stride, serial + 1, live + size
            if p:
                hoff = (p & ARENA_MASK) - uoff  # arenas are aligned to their size
                k = hoff & 0xFF0
                pad = PAD_OF[size]
                # A slot on a free list belongs to a live arena, so it is written by address.
                pack(
                    memory, p - uoff, size, serial, sid, serial + size + hoff + sid + live_key, LIVE, 0,
                    front_l[k], FILL_NEW, tails_l[k + pad],
                )
                if pad:
                    PADS[pad](memory, p + size, pads_l[k + pad])
                if live > peak:
                    peak = live
                if log is not None and len(log) < LOG_MAX:
                    log.append(p)
            held = 0; give(True)  # noqa: E702
            if on_alloc is not None and p:
                on_alloc(heap, p)
        except IndexError:
            if not (held or p):  # another thread holds the lock
                return general_alloc(size, 16, FILL_NEW, f)
            abandon(p, size, sid, held)  # pragma: no cover - not raised there
            raise  # pragma: no cover
        except BaseException:
            if held or p:
                abandon(p, size, sid, held)
            raise
        return p or general_alloc(size, 16, FILL_NEW, f)

    def abandon(p: int, size: int, sid: int, held: int) -> None:
        """An allocation was interrupted (or its hook raised): leave the heap consistent.

        With the lock still held, the counted block ``p`` is written whole (the same
        bytes the fast path writes, so writing twice is harmless) before the lock is
        given back; then the block, which its caller never got, is freed.
        """
        nonlocal peak
        try:
            if held and p:
                hoff = (p & ARENA_MASK) - uoff
                k = hoff & 0xFF0
                pad = PAD_OF[size]
                writers[size][0](  # type: ignore[index]
                    memory, p - uoff, size, serial, sid, serial + size + hoff + sid + live_key, LIVE, 0,
                    front_l[k], FILL_NEW, tails_l[k + pad],
                )
                if pad:
                    PADS[pad](memory, p + size, pads_l[k + pad])
                if live > peak:
                    peak = live
        finally:
            if held:
                give(True)
        if p:
            discard(p, sid)

    def free(address: int) -> None:
        nonlocal live, qin, sin
        p = address
        f = _getframe(1)
        if type(p) is not int:
            return free_slow(p, f)
        try:
            view, ubase, read, poison, words = arenas[p >> ARENA_SHIFT]
        except KeyError:  # not in an arena (also 0 and negative addresses)
            return free_slow(p, f)
        hoff = p - ubase
        # Read and verify the block before taking the lock (this allocates).  An address
        # that is not the start of a slot reads bytes of the arena that fail the seal
        # (it covers the block's offset), and the general path reports it.  ``seen``:
        # the allocations made so far; while it is unchanged no block can have been
        # handed out again, so what was read is still the block's.
        seen = serial
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
        sid = capture(f)
        # ``held``: this call holds the lock; ``mine``: the block was live under it;
        # ``freed``: it is poisoned, queued and counted (see the handler).
        held = mine = freed = 0
        try:
            del token[0]; held = 1  # noqa: E702
            # Still the block that was read (no allocation since, or the same seal: it
            # covers the serial number), and not freed by another thread meanwhile.
            mine = (serial == seen or words[(hoff + SEAL_OFFSET) >> 3] == seal) and view[hoff + STATE_OFFSET] == LIVE_LOW
            if mine:
                # Poison first (one write: state, free stack, fill), then queue, then count:
                # the evictor takes only counted bytes, so it never meets an unqueued block.
                poison(view, hoff + SEAL_OFFSET, seal + sid + free_delta, QUARANTINED, sid, front, FILL_FREED)
                q_append(p << 13 | n)
                live, qin, sin, freed = live - n, qin + n, sin + slot_of[n], 1
            held = 0; give(True)  # noqa: E702
        except IndexError:
            if not held:  # another thread holds the lock
                return free_slow(p, f)
            interrupted_free(p, n, view, hoff, mine and not freed)  # pragma: no cover - not raised there
            raise  # pragma: no cover
        except BaseException:
            if held:
                interrupted_free(p, n, view, hoff, mine and not freed)
            raise
        if not freed:  # a double free, or the block was freed and handed out again meanwhile
            return stale_free(p, n, ser, f)
        if on_free is not None:
            on_free(heap, p)
        if sin - sout > budget:
            reports = evict()
            if reports:
                __tracebackhide__ = True
                heap.emit(reports)

    def interrupted_free(p: int, n: int, view: memoryview, hoff: int, pending: object) -> None:
        """A fast free was interrupted with the lock held: finish it, then give the lock back.

        ``pending``: the block was live under the lock and its free was not counted yet.
        A block still live stays live (the free did not happen); a poisoned one is
        queued (unless it already is) and counted.
        """
        nonlocal live, qin, sin
        try:
            if pending and view[hoff + STATE_OFFSET] != LIVE_LOW:
                e = p << 13 | n
                if not (quarantine and quarantine[-1] == e):
                    q_append(e)
                live, qin, sin = live - n, qin + n, sin + slot_of[n]
        finally:
            give(True)

    def evict() -> list[Report] | None:
        """Take the oldest blocks out of the quarantine until it is under budget.

        The budget counts the bytes the blocks' slots occupy.  Blocks leave in batches
        (down to 15/16 of the budget; the newest small block stays if its own bytes fit
        in the budget), each with its poison
        verified: a small block's slot goes back to its size class (still poisoned,
        and still verified by ``check()``, until it is reused); a large block's memory
        goes back to the native allocator.  Runs without the lock, in one thread at a
        time: a thread that finds another evicting (or itself, re-entered from a
        finalizer) leaves the work to it.
        """
        nonlocal qout, sout, evicted
        if sin - sout <= budget:
            return None
        reports = None
        # ``held``: this call holds the evictor's token; ``e``: the entry being moved
        # (0 once it is counted).  No ``finally`` and no ``try`` inside this one: a
        # tracer may raise on their lines, outside every handler.
        held = count = e = 0
        out, sout_ = qout, sout
        try:
            del ev_token[0]; held = 1  # noqa: E702
            out, sout_, goal = qout, sout, sin - low
            # close() takes this token before it releases the arenas: while it is held,
            # the blocks of an open heap can be read by address.
            if is_closed():
                held = 0; ev_give(True)  # noqa: E702
                return None
            # The newest small block stays when its own bytes fit in the budget, even if its
            # slot does not (a budget smaller than a slot still quarantines a block).
            newest = quarantine[-1] & LARGE_MARK if quarantine else LARGE_MARK
            keep = 1 if budget and newest != LARGE_MARK and newest <= budget else 0
            # (only this token's holder takes from the left; empty only after a close())
            while sout_ < goal and len(quarantine) > keep:
                e = quarantine[0]
                n = e & LARGE_MARK
                p = e >> 13
                if n != LARGE_MARK:
                    # (a block the general path made may be the first of its class here)
                    check, intact, push, slot = checkers[n] or size_class(n)[1]
                    if (
                        check(memory, p) != intact
                        if check is not None
                        else not poison_intact(memory[p : p + intact])
                    ):
                        found = evict_small(p)
                        if found:
                            reports = (reports or []) + found
                    # Out of the queue, counted, then onto the free list: an interrupt
                    # never pushes a slot twice (see the handler).
                    q_popleft()
                    out, sout_, count, e = out + n, sout_ + slot, count + 1, 0
                    push(p)
                else:
                    q_popleft()
                    n, slot, found = evict_large(p)
                    out, sout_, count, e = out + n, sout_ + slot, count + 1, 0
                    if found:
                        reports = (reports or []) + found
            qout, sout, evicted, held = out, sout_, evicted + count, 0; ev_give(True)  # noqa: E702
        except IndexError:
            if not held:  # another thread is evicting (or this one, re-entered)
                return None
            release_evictor(out, sout_, count, 0)  # pragma: no cover - not raised there
            raise  # pragma: no cover
        except BaseException:
            if held:
                release_evictor(out, sout_, count, e)
            raise
        return reports

    def release_evictor(out: int, slots: int, count: int, e: int) -> None:
        """An eviction was interrupted: count what left the queue, give the token back.

        A block taken out of the queue but not counted (``e``) is counted: a small one
        goes to its free list (it was not pushed: pushing comes after counting), a
        large one is released (unless it was already).
        """
        nonlocal qout, sout, evicted
        try:
            if e and not (quarantine and quarantine[0] == e):
                n = e & LARGE_MARK
                if n != LARGE_MARK:
                    out, slots, count = out + n, slots + slot_of[n], count + 1
                    slots_of(n).append(e >> 13)
                else:
                    n, slot, found = evict_large(e >> 13, True)
                    out, slots, count = out + n, slots + slot, count + 1
                    if found:
                        with heap.deferred_errors():
                            heap.emit(found)
        finally:
            qout, sout, evicted = out, slots, evicted + count
            ev_give(True)

    def slots_of(n: int) -> list[int]:
        """The free list of the size class of an ``n``-byte block."""
        return free_slots[CLASS_OF[n]]

    def retire(p: int, n: int, is_large: bool, slot: int = 0) -> None:
        """Put a freed block in the quarantine (lock held); :func:`evict` follows.

        ``slot``: the native bytes a large block occupies (a small one's are its class's).
        Queued, then counted in one statement: :func:`settle` finishes an interrupted one.
        """
        nonlocal live, qin, sin
        q_append(p << 13 | (LARGE_MARK if is_large else n))
        live, qin, sin = live - n, qin + n, sin + (slot if is_large else slot_of[n])

    def settle(p: int, n: int, is_large: bool, counted: int, slot: int = 0) -> None:
        """Finish a :func:`retire` an interrupt may have cut short (lock held).

        ``counted``: the value of ``qin`` before it; unchanged means not counted yet.
        """
        nonlocal live, qin, sin
        if qin != counted:
            return
        e = p << 13 | (LARGE_MARK if is_large else n)
        if not (quarantine and quarantine[-1] == e):
            q_append(e)
        live, qin, sin = live - n, qin + n, sin + (slot if is_large else slot_of[n])

    def queued() -> int:
        """Bytes ever put in the quarantine (for :func:`settle`; lock held)."""
        return qin

    def count_alloc(size: int, p: int = 0) -> int:
        """Count a new block at ``p`` (lock held); return its serial number."""
        nonlocal serial, live, peak
        serial, live = serial + 1, live + size  # (one statement: all or nothing)
        if live > peak:
            peak = live
        if log is not None and len(log) < LOG_MAX:
            log.append(p)
        return serial

    def start_log() -> None:
        """Start the allocation log afresh: it holds the blocks allocated from now on (lock held)."""
        nonlocal log, log_start
        log, log_start = array("Q"), serial

    def allocated_since(since: int) -> array[int] | None:
        """The addresses of the blocks allocated after the ``since``-th allocation, in
        order; None when the log does not hold every one of them (lock held).

        A block the log missed (it was full, or an interrupt came between counting a
        block and logging it) makes the log's length disagree with the count.
        """
        if log is None or since < log_start or len(log) != serial - log_start:
            return None
        young = log[since - log_start :]
        return None if 0 in young else young

    def counts() -> tuple[int, int, int, int, int]:
        """``(serial, live bytes, peak bytes, quarantined bytes, evicted blocks)``."""
        return serial, live, max(peak, peak_before), qin - qout, evicted

    def reset_peak() -> int:
        """Start a new peak window at the live bytes now; return the peak of the one it ends (lock held).

        The allocation paths compare ``live`` with the window's ``peak`` only, so a window
        costs them nothing; :func:`counts` still gives the heap's all-time peak.
        """
        nonlocal peak, peak_before
        ended = peak
        peak_before = max(peak_before, peak)
        peak = live
        return ended

    def add_arena(arena: Arena) -> None:
        """Let the fast free find the slots of a new arena (lock held)."""
        arenas[arena.base >> ARENA_SHIFT] = (arena.view, arena.user0, arena.read, arena.poison, arena.view.cast("Q"))

    def release() -> None:
        """Forget the arenas and the quarantine, unverified (``close``; lock held).

        Every later call of a fast path falls back to the general methods.
        """
        nonlocal qin, sin, evicted
        arenas.clear()
        evicted += len(quarantine)
        quarantine.clear()
        qin, sin = qout, sout

    def slot_bytes() -> int:
        """Native bytes the quarantined blocks occupy (what the budget counts)."""
        return sin - sout

    def set_hooks(alloc_hook: Hook | None, free_hook: Hook | None) -> None:
        """Set the functions called after each allocation and each free (None: none)."""
        nonlocal on_alloc, on_free
        on_alloc, on_free = alloc_hook, free_hook

    return Paths(
        malloc, free, evict, retire, count_alloc, counts, add_arena, release, set_hooks, settle, queued, reset_peak,
        slot_bytes, start_log, allocated_since,
    )
