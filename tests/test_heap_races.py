"""Races between threads: a double free across threads, hooks outside the lock, hooks that raise."""

from __future__ import annotations

import inspect
import sys
import threading
from types import FrameType
from typing import Any

import pytest

import memguard
from memguard import hookimpl


def _line_of(function: Any, text: str) -> int:
    """The line number of the first line of ``function``'s source containing ``text``."""
    lines, start = inspect.getsourcelines(function)
    return start + next(i for i, line in enumerate(lines) if text in line)


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="Python 3.10 writes a traced frame's closure cells back from a stale snapshot after "
    "each call of a Python trace function, undoing the interleaved allocation this test makes",
)
def test_a_double_free_racing_a_reuse_is_reported_and_the_new_block_is_untouched() -> None:
    """With a zero quarantine: while one free has read its block (before the lock), another
    thread frees it (it leaves the quarantine at once) and a third is handed the slot.
    The first free is the double free: it is reported and the new block stays live."""
    heap = memguard.GuardedHeap(quarantine_bytes=0, on_error="report")
    p = heap.malloc(60)
    fast_free = heap.free
    # the fast free has read and verified the block, and not yet taken the lock
    line = _line_of(fast_free, "sid = capture(f)")
    got: list[int] = []

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and frame.f_lineno == line and not got:
            # (in the same thread, as another thread would between the read and the lock)
            heap.free(p)
            got.append(heap.malloc(64))
        return local

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code is fast_free.__code__:
            frame.f_trace_lines = True
            return local
        return None

    previous = sys.gettrace()  # (coverage's, under coverage)
    sys.settrace(tracer)
    try:
        heap.free(p)
    finally:
        sys.settrace(previous)
    (q,) = got
    assert q == p  # the slot was handed out again
    kinds = [r.kind for r in heap.reports]
    assert kinds == ["double-free"], kinds
    assert heap.reports[0].size == 60 and "another thread" in heap.reports[0].message
    assert heap.block(q).state == "live" and heap.block(q).size == 64
    assert heap.check() == []
    s = heap.stats()
    assert (s.live_blocks, s.live_bytes) == (1, 64)
    heap.free(q)
    heap.close()


#: Rounds of the threaded double free (each a few barrier waits).
ROUNDS = 150


def test_threads_double_freeing_while_a_third_allocates_never_lie() -> None:
    """Two threads free the same block while a third allocates, with a zero quarantine.

    Each round ends with one of two truths: the double free was reported, or the third
    thread was handed the block's memory and the late free (after the reuse, so not
    distinguishable from a free of the new block) freed it.  Never a live block freed
    behind memguard's back with stale bookkeeping: the stats stay exact.
    """
    heap = memguard.GuardedHeap(quarantine_bytes=0, on_error="report")
    barrier = threading.Barrier(3)
    box: dict[str, int] = {}
    errors: list[BaseException] = []

    def freer() -> None:
        try:
            for _ in range(ROUNDS):
                barrier.wait()
                heap.free(box["p"])
                barrier.wait()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    def allocator() -> None:
        try:
            for _ in range(ROUNDS):
                box["p"] = heap.malloc(60)
                barrier.wait()
                box["q"] = heap.malloc(64)
                barrier.wait()
                q, before = box["q"], len(heap.reports)
                if heap.block(q).state == "live":
                    heap.free(q)
                assert len(heap.reports) == before
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=freer), threading.Thread(target=freer), threading.Thread(target=allocator)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    kinds = {r.kind for r in heap.reports}
    assert kinds <= {"double-free"}, kinds
    assert heap.check() == []
    s = heap.stats()
    assert (s.live_blocks, s.live_bytes) == (0, 0)
    assert heap.leaks() == []
    heap.close()


# ---------------------------------------------------------------------------- hooks outside the lock
class _StatsInAnotherThread:
    """A memguard_alloc hook that waits for another thread calling heap.stats()."""

    def __init__(self) -> None:
        self.stalled: list[str] = []

    @hookimpl
    def memguard_alloc(self, heap: memguard.GuardedHeap, block: memguard.BlockInfo) -> None:
        t = threading.Thread(target=heap.stats, daemon=True)
        t.start()
        t.join(2)
        if t.is_alive():
            self.stalled.append(f"{block.size}")


@pytest.mark.parametrize("op", ["malloc", "large malloc", "calloc", "memalign", "realloc", "realloc(0, n)"])
def test_alloc_hooks_run_outside_the_lock_on_every_path(op: str) -> None:
    plugin = _StatsInAnotherThread()
    heap = memguard.GuardedHeap()
    old = heap.malloc(24)
    heap.plugins.register(plugin)
    p = {
        "malloc": lambda: heap.malloc(64),
        "large malloc": lambda: heap.malloc(9000),
        "calloc": lambda: heap.calloc(2, 32),
        "memalign": lambda: heap.memalign(64, 40),
        "realloc": lambda: heap.realloc(old, 100),
        "realloc(0, n)": lambda: heap.realloc(0, 100),
    }[op]()
    assert plugin.stalled == []
    heap.plugins.unregister(plugin)
    heap.free(p)
    heap.close()


# ---------------------------------------------------------------------------- a hook that raises BaseException
class _Raiser:
    def __init__(self, exc: type[BaseException]) -> None:
        self.exc = exc

    @hookimpl
    def memguard_alloc(self, heap: memguard.GuardedHeap, block: memguard.BlockInfo) -> None:
        raise self.exc()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("op", ["malloc", "large malloc", "memalign", "realloc"])
def test_a_hook_raising_keyboardinterrupt_does_not_leak_the_block(exc: type[BaseException], op: str) -> None:
    heap = memguard.GuardedHeap()
    old = heap.malloc(24)
    heap.plugins.register(_Raiser(exc))
    run = {
        "malloc": lambda: heap.malloc(64),
        "large malloc": lambda: heap.malloc(9000),
        "memalign": lambda: heap.memalign(64, 40),
        "realloc": lambda: heap.realloc(old, 100),
    }[op]
    with pytest.raises(exc):
        run()
    leaked = [a for g in heap.leaks() for a in g.addresses]
    live = heap.stats()
    if op == "realloc":
        # the old block was moved away (freed); the new one, never handed out, is freed too
        assert live.live_blocks == 0, live
    else:
        assert live.live_blocks == 1, live  # only `old`
    assert len(leaked) == live.live_blocks and (op == "realloc" or leaked == [old]), leaked
    assert heap.check() == []
    heap.close(check=False)
