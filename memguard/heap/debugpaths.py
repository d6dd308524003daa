"""The heap's entry points when a debugging option is set: guard pages, ``check_every``, ``break_on``.

With none of these options a heap's ``malloc``/``free`` are its fast paths, untouched: the
options cost nothing unless asked for.  With one, :func:`install` wraps the heap's
``malloc``, ``calloc``, ``memalign`` and ``realloc`` (and ``free``, for ``check_every``)
as instance attributes, at construction, so the heap's own paths stay as they are:

* **guard pages** (:mod:`memguard.heap.guardpages`): one allocation in ``guard_sample``
  (at random, GWP-ASan's model) or every one (``guard="all"``/``"underflow"``) is placed
  against a guard page; faults recorded since the last call become findings first;
* ``check_every=N``: a full check of the heap every N operations (allocations, frees,
  reallocations), so a corruption is reported within N operations of the write, with
  the window it happened in: the two operations, by number, allocation serial and line;
* ``break_on=SERIAL``: just before allocation number SERIAL is made, raise
  :class:`~memguard.errors.BreakOnAllocation` (``break_on_action="raise"``) or enter
  ``pdb`` in the caller's frame (``"pdb"``), MSVC's ``_CrtSetBreakAlloc``.
"""

from __future__ import annotations

import dataclasses
import sys
from types import FrameType
from typing import TYPE_CHECKING, Callable, NamedTuple

from memguard._location import PACKAGE_DIR
from memguard.arguments import int_arg
from memguard.errors import BreakOnAllocation
from memguard.heap.guardpages import GUARD_MODES, GuardPages
from memguard.heap.layout import FILL_NEW
from memguard.report import Report
from memguard.stacks import Frame, frame_record

if TYPE_CHECKING:
    from memguard.heap.guarded import GuardedHeap

__all__ = ["DebugOptions", "Operation", "install"]

_getframe = sys._getframe
BREAK_ACTIONS = ("raise", "pdb")


class DebugOptions(NamedTuple):
    """The debugging options of a heap, checked."""

    guard: str | None
    guard_sample: int
    guard_max: int
    check_every: int
    break_on: int
    break_on_action: str

    @property
    def active(self) -> bool:
        """Whether any option is set (the heap's entry points are wrapped)."""
        return bool(self.guard or self.guard_sample or self.check_every or self.break_on)

    @classmethod
    def checked(
        cls, guard: object, guard_sample: object, guard_max: object, check_every: object,
        break_on: object, break_on_action: object,
    ) -> DebugOptions:
        """The options, each checked (a clear ``TypeError``/``ValueError`` for a bad one)."""
        if guard not in GUARD_MODES:
            raise ValueError(f"guard must be None, 'off', 'all' or 'underflow'; got {guard!r}")
        if break_on_action not in BREAK_ACTIONS:
            raise ValueError(f"break_on_action must be 'raise' or 'pdb'; got {break_on_action!r}")
        return cls(
            None if guard == "off" else guard,  # type: ignore[arg-type]
            int_arg(guard_sample, "guard_sample"),
            int_arg(guard_max, "guard_max"),
            int_arg(check_every, "check_every"),
            int_arg(break_on, "break_on"),
            str(break_on_action),
        )


class Operation(NamedTuple):
    """One heap operation, as a ``check_every`` window names it."""

    #: its number among the heap's operations since it was made (1 for the first)
    index: int
    #: ``"malloc"``, ``"free"`` …
    what: str
    #: the serial of the block it made or freed (0: none)
    serial: int
    #: the user's line that called it (None: no Python frame)
    frame: Frame | None

    def __str__(self) -> str:
        block = f" of allocation #{self.serial}" if self.serial else ""
        return f"operation #{self.index} ({self.what}{block} at {self.frame or '<unknown>'})"


def user_frame(frame: FrameType | None) -> Frame | None:
    """The first frame at or above ``frame`` outside memguard, as a :class:`Frame`."""
    while frame is not None and frame.f_code.co_filename.startswith(PACKAGE_DIR):
        frame = frame.f_back
    return None if frame is None else frame_record(frame)


def install(heap: GuardedHeap, options: DebugOptions) -> GuardPages | None:
    """Wrap ``heap``'s entry points for ``options``; return its guard pages (None: no guarding)."""
    guard: GuardPages | None = None
    if options.guard or options.guard_sample:
        mode = "underflow" if options.guard == "underflow" else "overflow"
        sample = options.guard_sample if options.guard != "all" else 0
        guard = GuardPages(heap, mode, sample, options.guard_max)  # type: ignore[arg-type]
    _Wrapper(heap, guard, options).install()
    return guard


class _Wrapper:
    """The wrapped entry points of one heap (bound methods installed on the heap)."""

    def __init__(self, heap: GuardedHeap, guard: GuardPages | None, options: DebugOptions) -> None:
        self.heap = heap
        self.guard = guard
        self.every = options.check_every
        self.break_on = options.break_on
        self.pdb = options.break_on_action == "pdb"
        self.sample = guard.sample if guard is not None else 0
        self.countdown = guard.next_countdown() if guard is not None and self.sample else 0
        self.ops = 0
        self.last_check: Operation = Operation(0, "heap created", 0, None)
        self.inner_malloc: Callable[[int], int] = heap.malloc
        self.inner_free: Callable[[int], None] = heap.free
        self.inner_calloc: Callable[[int, int], int] = heap.calloc
        self.inner_memalign: Callable[[int, int], int] = heap.memalign
        self.inner_realloc: Callable[[int, int], int] = heap.realloc

    def install(self) -> None:
        heap = self.heap
        for method in (_Wrapper.malloc, _Wrapper.calloc, _Wrapper.memalign, _Wrapper.realloc, _Wrapper.free):
            heap._stacks.pass_through(method.__code__)
        for name in ("malloc", "calloc", "memalign", "realloc"):
            method = getattr(self, name)
            setattr(heap, name, method)
        if self.every:
            heap.free = self.free  # type: ignore[method-assign]
        elif self.sample and not self.break_on:
            heap.malloc = self._sampled_malloc()  # type: ignore[method-assign]

    def _sampled_malloc(self) -> Callable[[int], int]:
        """``malloc`` for sampling alone: a countdown and one test before the heap's own malloc."""
        inner = self.inner_malloc
        guard = self.guard
        assert guard is not None
        faults = guard.faults  # (emptied in place, never replaced)
        countdown = self.countdown
        heap = self.heap
        allocate, size_arg, hook = guard.allocate, heap._size_arg, self._hook

        def malloc(size: int) -> int:
            """Allocate ``size`` bytes filled with 0xCD; return the user address."""
            nonlocal countdown
            countdown -= 1
            if countdown > 0 and not faults:
                return inner(size)
            if faults:
                __tracebackhide__ = True
                heap.emit(guard.drain())
            if countdown <= 0:
                countdown = guard.next_countdown()
                p = allocate(size_arg(size, "size"), 16, False, _getframe(0))
                if p:
                    hook(p)
                    return p
            return inner(size)

        self.heap._stacks.pass_through(malloc.__code__)
        return malloc

    # ------------------------------------------------------------------ the decisions
    def _guarded(self) -> bool:
        """Whether the next allocation is guarded (counts down the sampling interval)."""
        if self.guard is None:
            return False
        if not self.sample:
            return True
        self.countdown -= 1
        if self.countdown > 0:
            return False
        self.countdown = self.guard.next_countdown()
        return True

    def _before(self, frame: FrameType | None, size: object) -> None:
        """Findings of faults recorded since the last call, then ``break_on``."""
        guard = self.guard
        if guard is not None and guard.faults:
            __tracebackhide__ = True
            self.heap.emit(guard.drain())
        if self.break_on and self.heap.serial + 1 == self.break_on:
            self._break(frame, size)

    def _break(self, frame: FrameType | None, size: object) -> None:
        """Stop once, before allocation ``break_on``: raise, or enter pdb in the caller's frame."""
        serial, self.break_on = self.break_on, 0
        where = user_frame(frame)
        if self.pdb:
            import pdb

            print(
                f"memguard: break_on={serial}: allocation #{serial} ({size} bytes) on heap {self.heap.name!r} "
                f"is about to be made at {where}",
                file=sys.stderr,
            )
            caller = frame
            while caller is not None and caller.f_code.co_filename.startswith(PACKAGE_DIR):
                caller = caller.f_back
            debugger = pdb.Pdb()
            debugger.reset()
            debugger.interaction(caller, None)  # at the caller's line; `c` goes on with the allocation
            return
        __tracebackhide__ = True
        raise BreakOnAllocation(
            f"break_on={serial}: allocation #{serial} ({size} bytes) on heap {self.heap.name!r} was asked for "
            f"at {where}",
            serial=serial, size=size if isinstance(size, int) else 0, heap=self.heap.name,
        )

    def _tick(self, what: str, serial: int, frame: FrameType | None) -> None:
        """Count one operation; every ``check_every`` operations, check the whole heap."""
        if not self.every:
            return
        self.ops += 1
        if self.ops % self.every:
            return
        __tracebackhide__ = True
        now = Operation(self.ops, what, serial, user_frame(frame))
        before, self.last_check = self.last_check, now
        heap = self.heap
        reports = heap._verify_blocks() + heap.verify_registered()
        if reports:
            heap.emit([self._windowed(r, before, now) for r in reports])

    def _tick_after(self, what: str, serial: int, frame: FrameType | None, p: int) -> None:
        """:meth:`_tick` after an allocation: if its check raises, the caller never gets ``p``,
        which is freed again (without hooks; its own findings deferred to the next ``check()``)."""
        if not self.every:
            return
        try:
            self._tick(what, serial, frame)
        except BaseException:
            if p:
                heap, guard = self.heap, self.guard
                if guard is not None and p in guard.blocks:
                    with heap.deferred_errors():
                        guard.free(p, None, hooks=False)
                else:
                    heap._discard(p, 0)
            raise

    def _windowed(self, report: Report, before: Operation, now: Operation) -> Report:
        if "access" in report.extra:
            return report  # caught at the access by a guard page: its line is known
        window = f"corrupted between {before} and {now} (check_every={self.every})"
        extra = {
            **report.extra,
            "check_window": {
                "from": {"operation": before.index, "serial": before.serial, "line": str(before.frame or "")},
                "to": {"operation": now.index, "serial": now.serial, "line": str(now.frame or "")},
            },
        }
        return dataclasses.replace(report, message=f"{report.message}; {window}" if report.message else window, extra=extra)

    def _serial_of(self, p: object) -> int:
        return self.heap.live_serial(p) if type(p) is int else 0

    # ------------------------------------------------------------------ the entry points
    def malloc(self, size: int) -> int:
        """Allocate ``size`` bytes filled with 0xCD; return the user address."""
        frame = _getframe(0)
        self._before(frame, size)
        p = 0
        if self._guarded():
            p = self.guard.allocate(self.heap._size_arg(size, "size"), 16, False, frame)  # type: ignore[union-attr]
            if p:
                self._hook(p)
        if not p:
            p = self.inner_malloc(size)
        self._tick_after("malloc", self.heap.serial if self.every else 0, frame, p)
        return p

    def calloc(self, count: int, size: int) -> int:
        """Allocate ``count * size`` zeroed bytes; ``MemoryError`` when the product overflows."""
        frame = _getframe(0)
        self._before(frame, size)
        p = 0
        if self._guarded():
            heap = self.heap
            total = heap._size_arg(count, "count") * heap._size_arg(size, "size")
            p = self.guard.allocate(total, 16, True, frame) if total < (1 << 40) else 0  # type: ignore[union-attr]
            if p:
                self._hook(p)
        if not p:
            p = self.inner_calloc(count, size)
        self._tick_after("calloc", self.heap.serial if self.every else 0, frame, p)
        return p

    def memalign(self, alignment: int, size: int) -> int:
        """Allocate ``size`` bytes at an address that is a multiple of ``alignment``."""
        frame = _getframe(0)
        self._before(frame, size)
        p = 0
        guard = self.guard
        if (
            guard is not None and type(alignment) is int and 16 <= alignment <= guard.page
            and not alignment & (alignment - 1) and self._guarded()
        ):
            p = guard.allocate(self.heap._size_arg(size, "size"), alignment, False, frame)
            if p:
                self._hook(p)
        if not p:
            p = self.inner_memalign(alignment, size)
        self._tick_after("memalign", self.heap.serial if self.every else 0, frame, p)
        return p

    def realloc(self, address: int, size: int) -> int:
        """Resize a block (it always moves); ``realloc(0, n)`` is ``malloc(n)``."""
        frame = _getframe(0)
        self._before(frame, size)
        heap = self.heap
        guard = self.guard
        old_serial = self._serial_of(address) if self.every else 0
        if guard is not None and type(address) is int and (address in guard.blocks or (address and self._guarded())):
            p = self._realloc_guarded(guard, heap._address_arg(address), heap._size_arg(size, "size"), frame)
        else:
            p = self.inner_realloc(address, size)
        self._tick_after("realloc", old_serial, frame, p)
        return p

    def _realloc_guarded(self, guard: GuardPages, address: int, size: int, frame: FrameType | None) -> int:
        """A realloc from or to a guarded block: a new block, the old bytes copied, the old block freed."""
        from memguard import native
        from memguard.heap.guarded import InvalidAddressError

        heap = self.heap
        old = guard.size_of(address)
        if old is None:
            if address in guard.blocks:  # a freed guarded block: the free reports it
                guard.free(address, frame)
                return 0
            try:
                old = len(heap.view(address))
            except InvalidAddressError:
                return self.inner_realloc(address, size)  # not a live block: the heap reports it
        new = guard.allocate(size, 16, False, frame) or heap._alloc(size, 16, FILL_NEW, frame)
        if new in guard.blocks:
            self._hook(new)
        native.memmove(new, address, min(old, size))
        if address in guard.blocks:
            guard.free(address, frame)
        else:
            heap._free_slow(address, frame)
        return new

    def free(self, address: int) -> None:
        """Free a block (``check_every`` counts it)."""
        frame = _getframe(0)
        serial = self._serial_of(address) if (self.ops + 1) % self.every == 0 else 0
        self.inner_free(address)
        self._tick("free", serial, frame)

    def _hook(self, p: int) -> None:
        """The ``memguard_alloc`` hook of a new guarded block; if it raises, the block the
        caller will not get is freed again (its findings deferred to the next ``check()``)."""
        on_alloc = self.heap.seams.on_alloc
        if on_alloc is None:
            return
        try:
            on_alloc(self.heap, p)
        except BaseException:
            with self.heap.deferred_errors():
                self.guard.free(p, None, hooks=False)  # type: ignore[union-attr]
            raise

