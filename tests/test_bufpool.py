"""The budgeted buffer pool (``memguard.BufPool``): budget, backpressure, findings, plugin."""

from __future__ import annotations

import ctypes
import gc
import inspect
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import memguard
from memguard import BufPool, GuardedHeap, hookimpl
from memguard.errors import BufPoolClosedError, BufPoolTimeoutError
from memguard_plugins import bufpool_budget

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


def line_of(marker: str, fn: Callable[..., object]) -> int:
    """The line number of the line holding ``marker`` in ``fn``'s source."""
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, text in enumerate(lines) if marker in text)


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def start(target: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


@pytest.fixture
def pool(heap: GuardedHeap) -> BufPool:
    return BufPool(buffer_size=64, max_memory=64 * 4, heap=heap, name="bufs")


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, error, words", [
    ({"buffer_size": 7}, ValueError, "power of two from 8 to 16384, got 7"),
    ({"buffer_size": 24}, ValueError, "got 24"),
    ({"buffer_size": 32768}, ValueError, "got 32768"),
    ({"buffer_size": 4}, ValueError, "got 4"),
    ({"buffer_size": True}, TypeError, "buffer_size must be an int, got bool"),
    ({"buffer_size": 64.0}, TypeError, "got float"),
    ({"buffer_size": 64, "max_memory": 64}, ValueError, "max_memory (64) must be larger than buffer_size (64)"),
    ({"max_memory": False}, TypeError, "max_memory must be an int, got bool"),
    ({"heap": object()}, TypeError, "heap must be a GuardedHeap"),
])
def test_bad_configurations_are_refused(kwargs: dict, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as info:
        BufPool(**kwargs)
    assert words in str(info.value)


@pytest.mark.parametrize("n, timeout, error, words", [
    (0, None, ValueError, "n must be between 1 and 65535, got 0"),
    (65536, None, ValueError, "got 65536"),
    (True, None, TypeError, "n must be an int, got bool"),
    (5, None, ValueError, "5 buffers of 64 bytes (320) exceed max_memory (256)"),
    (1, -1, ValueError, "timeout must be >= 0"),
    (1, True, TypeError, "timeout must be a number"),
    (1, float("nan"), ValueError, "timeout must be >= 0"),
])
def test_bad_requests_are_refused(pool: BufPool, n: object, timeout: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as info:
        pool.allocate(n, timeout=timeout)  # type: ignore[arg-type]
    assert words in str(info.value)
    assert pool.stats().used_bytes == 0 and pool.stats().total_allocations == 0


def test_a_full_u16_request_fits_when_the_budget_allows(heap: GuardedHeap) -> None:
    pool = BufPool(buffer_size=8, max_memory=8 * 65535, heap=heap)
    with pool.allocate(65535) as a:
        assert a.length == 65535 and a.allocated_bytes == 8 * 65535


# ----------------------------------------------------------------------------- layout and stats
def test_one_contiguous_block_with_strided_buffers_and_writable_views(pool: BufPool, heap: GuardedHeap) -> None:
    a = pool.allocate(3)
    assert a.length == len(a) == 3 and a.allocated_bytes == 192
    assert list(a) == [a.address, a.address + 64, a.address + 128]
    assert heap.block(a.address).size == 192 and heap.block(a.address).state == "live"
    a.buffer(1)[:] = b"\x11" * 64
    a.buffer(2)[63] = 0x22
    assert ctypes.string_at(a.address + 64, 64) == b"\x11" * 64
    assert ctypes.string_at(a.address + 191, 1) == b"\x22"
    whole = a.view()
    assert len(whole) == 192 and whole[64] == 0x11
    with pytest.raises(IndexError):
        a.buffer(3)
    a.release()
    with pytest.raises(ValueError, match="was released"):
        a.view()
    assert heap.check() == []


def test_stats_count_what_happened(pool: BufPool) -> None:
    a = pool.allocate(2)
    b = pool.allocate(1)
    s = pool.stats()
    assert (s.buffer_size, s.max_memory, s.used_bytes, s.peak_bytes, s.active_allocations) == (64, 256, 192, 192, 2)
    assert (s.waiting, s.total_allocations, s.total_waits, s.total_timeouts) == (0, 2, 0, 0)
    a.release()
    with pytest.raises(TimeoutError):
        pool.allocate(4, timeout=0.01)
    s = pool.stats()
    assert (s.used_bytes, s.peak_bytes, s.active_allocations, s.total_waits, s.total_timeouts) == (64, 192, 1, 1, 1)
    b.release()
    assert pool.stats().used_bytes == 0
    with pytest.raises(AttributeError):
        s.used_bytes = 1  # type: ignore[misc]


def test_with_block_releases(pool: BufPool, heap: GuardedHeap) -> None:
    with pool.allocate(2) as a:
        address = a.address
        assert pool.stats().used_bytes == 128
    assert a.released and pool.stats().used_bytes == 0
    assert heap.block(address).state != "live"


def test_garbage_collected_allocation_is_released(pool: BufPool, heap: GuardedHeap) -> None:
    a = pool.allocate(4)
    address = a.address
    del a
    gc.collect()
    assert pool.stats().used_bytes == 0 and pool.stats().active_allocations == 0
    assert heap.block(address).state != "live"
    with pool.allocate(4):  # the budget is back
        pass
    assert heap.reports == []


def test_collection_after_the_heap_closed_is_harmless(monkeypatch: pytest.MonkeyPatch) -> None:
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    heap = GuardedHeap(on_error="report")
    pool = BufPool(buffer_size=64, max_memory=1024, heap=heap)
    a = pool.allocate(1)
    heap.close(check=False)
    del a
    gc.collect()
    assert unraisable == [] and pool.stats().used_bytes == 0


def test_interpreter_exit_with_live_allocations_is_clean(tmp_path: Path) -> None:
    script = tmp_path / "exit.py"
    script.write_text(textwrap.dedent("""
        import memguard
        POOL = memguard.BufPool(buffer_size=64, max_memory=4096)
        KEPT = [POOL.allocate(2), POOL.allocate(1)]
        LOST = POOL.allocate(1)
        print("done")
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                            env={**__import__("os").environ, "PYTHONPATH": ":".join(sys.path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done" and "Exception" not in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- backpressure
def test_second_thread_waits_until_the_first_releases(heap: GuardedHeap) -> None:
    pool = BufPool(buffer_size=16, max_memory=32, heap=heap)
    first = pool.allocate(1)
    got: list[memguard.BufAllocation] = []
    t = start(lambda: got.append(pool.allocate(2)))
    assert wait_for(lambda: pool.stats().waiting == 1)
    time.sleep(0.1)
    assert got == [] and pool.stats().used_bytes == 16
    first.release()
    t.join(5)
    assert len(got) == 1 and got[0].length == 2 and pool.stats().used_bytes == 32
    assert pool.stats().total_waits == 1
    got[0].release()


def test_waiters_are_served_first_come_first_served(pool: BufPool) -> None:
    held = pool.allocate(3)  # 1 buffer of room left
    order: list[tuple[int, str]] = []

    def ask(name: str, n: int) -> None:
        a = pool.allocate(n, timeout=5)
        order.append((a.serial, name))
        time.sleep(0.02)
        a.release()

    big = start(lambda: ask("big", 2))
    assert wait_for(lambda: pool.stats().waiting == 1)
    small = start(lambda: ask("small", 1))  # fits now, but queues behind "big"
    assert wait_for(lambda: pool.stats().waiting == 2)
    time.sleep(0.1)
    assert order == []
    held.release()
    big.join(5)
    small.join(5)
    assert sorted(order) == [(2, "big"), (3, "small")]  # served in the order they asked


def test_one_release_wakes_every_waiter_it_makes_room_for(heap: GuardedHeap) -> None:
    pool = BufPool(buffer_size=64, max_memory=128, heap=heap)
    held = pool.allocate(2)
    got: list[memguard.BufAllocation] = []
    threads = [start(lambda: got.append(pool.allocate(1, timeout=5))) for _ in range(2)]
    assert wait_for(lambda: pool.stats().waiting == 2)
    time.sleep(0.05)
    held.release()
    t0 = time.monotonic()
    for t in threads:
        t.join(5)
    # Woken by the release itself, not by a waiter's periodic re-check (a second apart).
    assert time.monotonic() - t0 < 0.5
    assert len(got) == 2 and pool.stats().used_bytes == 128 and pool.stats().total_timeouts == 0
    for a in got:
        a.release()


def test_timeout_raises_and_leaves_the_queue(pool: BufPool) -> None:
    held = pool.allocate(4)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        pool.allocate(1, timeout=0.05)
    assert 0.04 <= time.monotonic() - t0 < 2
    assert isinstance(info.value, BufPoolTimeoutError) and info.value.pool == "bufs"
    assert "no room for 1 buffer(s)" in str(info.value)
    assert pool.stats().waiting == 0 and pool.stats().total_timeouts == 1
    held.release()
    pool.allocate(4, timeout=0).release()


def test_interrupted_waiter_leaves_the_queue(pool: BufPool) -> None:
    held = pool.allocate(4)
    caught: list[BaseException] = []

    def waiter() -> None:
        try:
            pool.allocate(2)
        except BaseException as exc:  # the KeyboardInterrupt this test sends
            caught.append(exc)

    t = start(waiter)
    assert wait_for(lambda: pool.stats().waiting == 1)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(t.ident), ctypes.py_object(KeyboardInterrupt))
    t.join(5)
    assert [type(e) for e in caught] == [KeyboardInterrupt]
    s = pool.stats()
    assert s.waiting == 0 and s.used_bytes == 256 and s.active_allocations == 1
    held.release()
    pool.allocate(4, timeout=0).release()  # nobody stale ahead in the queue


# ----------------------------------------------------------------------------- close
def test_close_waits_for_every_release(pool: BufPool) -> None:
    a = pool.allocate(1)
    closer = start(lambda: pool.close())
    time.sleep(0.1)
    assert closer.is_alive() and not pool.closed
    a.release()
    closer.join(5)
    assert pool.closed


def test_close_timeout_names_live_allocations_with_their_stacks(pool: BufPool) -> None:
    def make() -> memguard.BufAllocation:
        return pool.allocate(2)  # allocating line

    a = make()
    with pytest.raises(TimeoutError) as info:
        pool.close(timeout=0.05)
    err = info.value
    assert isinstance(err, BufPoolTimeoutError) and len(err.live) == 1
    live = err.live[0]
    assert (live.address, live.length, live.nbytes) == (a.address, 2, 128)
    assert live.alloc_stack[0].lineno == line_of("allocating line", make)
    assert f"test_bufpool.py:{live.alloc_stack[0].lineno}" in str(err)
    assert not pool.closed
    b = pool.allocate(1)  # still open
    a.release()
    b.release()
    pool.close(timeout=1)
    assert pool.closed


def test_allocate_after_close_raises_a_structured_error(pool: BufPool) -> None:
    pool.close()
    pool.close()  # a no-op
    with pytest.raises(BufPoolClosedError) as info:
        pool.allocate(1)
    assert isinstance(info.value, memguard.MemguardError) and isinstance(info.value, memguard.HeapClosedError)
    assert (info.value.pool, info.value.requested) == ("bufs", 1)
    assert "'bufs' is closed" in str(info.value)


def test_waiters_get_the_closed_error_when_close_begins(pool: BufPool) -> None:
    held = pool.allocate(4)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            pool.allocate(1)
        except BaseException as exc:
            errors.append(exc)

    waiters = [start(waiter) for _ in range(3)]
    assert wait_for(lambda: pool.stats().waiting == 3)
    closer = start(lambda: pool.close())
    for t in waiters:
        t.join(5)
    assert [type(e) for e in errors] == [BufPoolClosedError] * 3
    assert pool.stats().waiting == 0 and not pool.closed
    held.release()
    closer.join(5)
    assert pool.closed


def test_leaving_a_pool_with_block_reports_live_allocations_as_leaks(heap: GuardedHeap) -> None:
    kept = []
    with BufPool(buffer_size=32, max_memory=1024, heap=heap, name="scoped") as p:
        kept.append(p.allocate(3))  # leaked line
        p.allocate(1).release()
    assert p.closed
    leaks = [r for r in heap.reports if r.kind == "memory-leak"]
    assert len(leaks) == 1 and leaks[0].size == 96 and leaks[0].extra == {"pool": "scoped"}
    line = line_of("leaked line", test_leaving_a_pool_with_block_reports_live_allocations_as_leaks)
    assert leaks[0].alloc_stack[0].lineno == line and f"test_bufpool.py:{line}" in leaks[0].message
    kept[0].release()  # still fine afterwards
    assert heap.check() == [] and heap.block(kept[0].address).state != "live"


def test_clean_with_block_reports_nothing(heap: GuardedHeap) -> None:
    with BufPool(buffer_size=32, max_memory=1024, heap=heap) as p:
        with p.allocate(2) as a:
            a.view()[:] = bytes(64)
    assert heap.reports == [] and heap.check() == []


def test_private_heap_is_closed_with_the_pool() -> None:
    p = BufPool(buffer_size=32, max_memory=1024)
    p.allocate(1).release()
    assert p.close() == [] and p.heap.closed


# ----------------------------------------------------------------------------- findings
def test_double_release_is_reported_with_both_release_stacks(pool: BufPool, heap: GuardedHeap) -> None:
    def scenario() -> memguard.BufAllocation:
        a = pool.allocate(2)  # alloc here
        a.release()  # first release
        a.release()  # second release
        return a

    a = scenario()
    (report,) = heap.reports
    assert report.kind == "bufpool-double-release" and report.address == a.address and report.size == 128
    assert report.alloc_stack[0].lineno == line_of("alloc here", scenario)
    assert report.free_stack[0].lineno == line_of("first release", scenario)
    assert report.stack[0].lineno == line_of("second release", scenario)
    assert "double release" in report.message and pool.stats().used_bytes == 0
    assert memguard.kinds.get_kind("bufpool-double-release").error is memguard.PoolError


def test_double_release_raises_under_on_error_raise() -> None:
    heap = GuardedHeap(on_error="raise")
    pool = BufPool(buffer_size=32, max_memory=1024, heap=heap)
    a = pool.allocate(1)
    a.release()
    with pytest.raises(memguard.PoolError) as info:
        a.release()
    assert info.value.kind == "bufpool-double-release"
    assert pool.stats().used_bytes == 0
    pool.close()
    heap.close()


def test_write_after_release_is_a_heap_use_after_free(pool: BufPool, heap: GuardedHeap) -> None:
    a = pool.allocate(1)
    stale = a.view()
    address = a.address
    a.release()
    stale[10] = 0x41  # through a view kept too long
    reports = heap.check()
    assert [r.kind for r in reports] == ["heap-use-after-free"]
    assert reports[0].address == address and reports[0].offset == 10


def test_overflow_past_the_last_buffer_is_a_heap_overflow(pool: BufPool, heap: GuardedHeap) -> None:
    a = pool.allocate(2)
    ctypes.memset(a.address + a.allocated_bytes, 0, 1)
    a.release()
    assert [r.kind for r in heap.reports] == ["heap-buffer-overflow"]


def test_the_pool_is_a_checker_registered_with_its_heap(pool: BufPool, heap: GuardedHeap) -> None:
    assert isinstance(pool, memguard.Checker) and pool in heap.registered()
    pool.close()
    assert pool not in heap.registered()


# ----------------------------------------------------------------------------- the budget plugin
def test_budget_plugin_reports_a_snapshot_that_breaks_the_budget() -> None:
    heap = GuardedHeap(on_error="report", plugins=[bufpool_budget])
    pool = BufPool(buffer_size=64, max_memory=128, heap=heap)
    info = memguard.BufAllocationInfo(0x1000, 3, 192, 1, (), "bufpool")
    bad = memguard.BufPoolStats(64, 128, 192, 100, 2, 0, 1, 0, 0)
    problems = bufpool_budget.audit(bad, [info])
    assert problems == ["used_bytes (192) > max_memory (128)", "peak_bytes (100) < used_bytes (192)",
                        "active_allocations (2) != live allocations (1)"]
    heap.plugins.hook.memguard_bufpool_event(pool=pool, event="allocate", allocation=info, stats=bad, live=[info])
    reports = heap.check()
    assert [r.kind for r in reports] == ["bufpool-budget"] and "used_bytes (192) > max_memory (128)" in reports[0].message
    assert heap.check() == []  # reported once
    pool.allocate(2).release()
    assert heap.check() == []  # the real pool keeps its budget
    pool.close()
    heap.close()


def test_soak_sixteen_threads_under_the_budget_plugin() -> None:
    heap = GuardedHeap(on_error="report", plugins=[bufpool_budget])
    peaks: list[int] = []

    class Watch:
        @hookimpl
        def memguard_bufpool_event(self, stats):
            peaks.append(stats.used_bytes)

    heap.plugins.register(Watch())
    pool = BufPool(buffer_size=64, max_memory=64 * 6, heap=heap)
    stop = time.monotonic() + 1.5
    done: list[int] = []
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        count = 0
        try:
            while time.monotonic() < stop:
                with pool.allocate(rng.randint(1, 3), timeout=5) as a:
                    a.buffer(a.length - 1)[:] = bytes([seed]) * 64
                    assert bytes(a.buffer(a.length - 1)) == bytes([seed]) * 64
                count += 1
        except BaseException as exc:  # reported below
            errors.append(exc)
        done.append(count)

    threads = [start(lambda s=s: worker(s)) for s in range(16)]
    for t in threads:
        t.join(10)
    assert errors == [] and len(done) == 16 and all(n > 0 for n in done)
    s = pool.stats()
    assert s.used_bytes == 0 and s.waiting == 0 and s.total_timeouts == 0 and s.total_waits > 0
    assert s.peak_bytes <= s.max_memory and max(peaks) <= s.max_memory and len(peaks) >= 2 * sum(done)
    assert heap.check() == [] and heap.reports == []
    pool.close(timeout=1)
    heap.close()


# ----------------------------------------------------------------------------- a model
class BufPoolModel(RuleBasedStateMachine):
    """The pool against a list of live allocations, without waiting (``timeout=0``)."""

    def __init__(self) -> None:
        super().__init__()
        self.heap = GuardedHeap(on_error="report", plugins=[bufpool_budget])
        self.pool = BufPool(buffer_size=16, max_memory=16 * 8, heap=self.heap)
        self.live: list[memguard.BufAllocation] = []
        self.released: list[memguard.BufAllocation] = []
        self.doubles = 0
        self.made = 0

    @rule(n=st.integers(1, 8))
    def allocate(self, n: int) -> None:
        used = sum(a.length for a in self.live)
        if used + n <= 8:
            a = self.pool.allocate(n, timeout=0)
            a.view()[:] = b"\x5a" * (16 * n)
            self.live.append(a)
            self.made += 1
        else:
            with pytest.raises(TimeoutError):
                self.pool.allocate(n, timeout=0)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if self.live:
            a = self.live.pop(data.draw(st.integers(0, len(self.live) - 1)))
            a.release()
            self.released.append(a)

    @rule(data=st.data())
    def release_twice(self, data: st.DataObject) -> None:
        if self.released:
            self.released[data.draw(st.integers(0, len(self.released) - 1))].release()
            self.doubles += 1

    @rule()
    def drop(self) -> None:
        if self.live:
            self.live.pop()
            gc.collect()

    @invariant()
    def agrees(self) -> None:
        s = self.pool.stats()
        assert s.used_bytes == 16 * sum(a.length for a in self.live)
        assert s.active_allocations == len(self.live) and s.total_allocations == self.made
        assert s.used_bytes <= s.max_memory and s.waiting == 0
        kinds = [r.kind for r in self.heap.reports]
        assert kinds == ["bufpool-double-release"] * self.doubles

    def teardown(self) -> None:
        for a in self.live:
            a.release()
        self.pool.close(timeout=1)
        assert self.heap.check() == []
        self.heap.close()


TestBufPoolModel = BufPoolModel.TestCase
TestBufPoolModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


# ----------------------------------------------------------------------------- under pytest
def test_pytest_fails_a_test_that_leaves_an_allocation_live_or_releases_twice(pytester: pytest.Pytester) -> None:
    source = textwrap.dedent("""
        import memguard

        KEPT = []


        def pool():
            return memguard.BufPool(buffer_size=64, max_memory=4096, heap=memguard.install())


        def test_leaves_one_live():
            p = pool()
            KEPT.append(p.allocate(2))
            with p.allocate(1):
                pass


        def test_releases_twice():
            a = pool().allocate(1)
            a.release()
            a.release()


        def test_clean():
            p = pool()
            with p.allocate(3) as a:
                a.view()[:] = bytes(192)
            p.allocate(1)
            p.close(timeout=5)
    """).lstrip()
    pytester.makepyfile(test_x=source)
    line = 1 + source.splitlines().index("    KEPT.append(p.allocate(2))")
    result = pytester.runpytest_subprocess("--memguard", "-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=1, failed=2)
    text = result.stdout.str()
    assert f"test_x.py:{line} in test_leaves_one_live" in text  # the allocating line of the live allocation
    result.stdout.fnmatch_lines(["FAILED *test_leaves_one_live*", "FAILED *test_releases_twice*"])
    assert "bufpool-double-release" in text
