"""BuddyAllocator: hcsshim's pool allocator tests, the refusals it lacked, threads, a model, backed mode."""

from __future__ import annotations

import ctypes
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import memguard
from memguard import (
    BuddyAllocator,
    BuddyError,
    EmptyPoolError,
    GuardedHeap,
    InvalidMemoryClassError,
    MemguardError,
    NotAllocatedError,
    NotEnoughSpaceError,
)

MiB = 1 << 20
GiB = 1 << 30


def snapshot(b: BuddyAllocator) -> tuple[list[list[int]], ...]:
    return tuple([f(c) for c in range(b.classes)] for f in (b.free_offsets, b.busy_offsets, b.split_offsets))


# ----------------------------------------------------------------------------- upstream
@pytest.mark.parametrize(("size", "expected"), [(MiB, 0), (6 * MiB, 2), (2 * GiB, 6), (4 * GiB + 1, 7)])
def test_memory_class(size: int, expected: int) -> None:
    assert memguard.memory_class(size) == expected


def test_class_size() -> None:
    assert memguard.class_size(0) == MiB
    assert memguard.class_size(6) == 4 * GiB
    with pytest.raises(InvalidMemoryClassError, match="^invalid memory class$"):
        memguard.class_size(7)


def test_larger_than_max_is_invalid_class() -> None:
    b = BuddyAllocator()
    with pytest.raises(InvalidMemoryClassError, match="^invalid memory class$") as info:
        b.allocate(4 * GiB + 1)
    assert info.value.size == 4 * GiB + 1
    with pytest.raises(InvalidMemoryClassError):
        b.allocate(0)
    assert b.free_offsets(6) == [0]


def test_new_allocator_has_one_free_region_of_the_largest_class() -> None:
    b = BuddyAllocator()
    assert b.free_offsets(6) == [0]
    assert all(b.free_offsets(c) == [] for c in range(6))


def test_allocate_splits_and_release_merges() -> None:
    b = BuddyAllocator()
    r = b.allocate(MiB)
    assert (r.offset, r.size_class, r.size, r.address) == (0, 0, MiB, None)
    assert b.free_offsets(0) == [MiB, 2 * MiB, 3 * MiB]
    assert b.free_offsets(1) == [4 * MiB, 8 * MiB, 12 * MiB]
    assert b.split_offsets(6) == [0] and b.free_offsets(6) == []
    s = b.allocate(6 * MiB)
    assert (s.offset, s.size_class, s.size) == (16 * MiB, 2, 16 * MiB)
    b.release(r)
    # Class 0 merges into class 1, class 1 into class 2; class 2 stops at the busy s.
    assert b.free_offsets(0) == [] and b.free_offsets(1) == []
    assert b.free_offsets(2) == [0, 32 * MiB, 48 * MiB] and b.split_offsets(3) == [0]
    b.release(s)
    assert b.free_offsets(6) == [0] and all(b.free_offsets(c) == [] for c in range(6))


def test_max_out_4096_then_not_enough_space_then_coalesce() -> None:
    b = BuddyAllocator()
    start = time.perf_counter()
    regions = [b.allocate(MiB) for _ in range(4096)]
    assert [r.offset for r in regions] == [i * MiB for i in range(4096)]
    assert b.busy_offsets(0) == [i * MiB for i in range(4096)]
    with pytest.raises(NotEnoughSpaceError, match="^not enough space$"):
        b.allocate(MiB)
    for r in regions:
        b.release(r)
    assert time.perf_counter() - start < 1.0
    assert b.free_offsets(6) == [0]
    assert all(b.free_offsets(c) == [] for c in range(6))
    assert all(b.busy_offsets(c) == [] and b.split_offsets(c) == [] for c in range(7))


def test_release_lowest_offset_is_reused() -> None:
    b = BuddyAllocator()
    rs = [b.allocate(MiB) for _ in range(3)]
    b.release(rs[1])
    assert b.allocate(MiB).offset == MiB


# ----------------------------------------------------------------------------- refusals
def test_release_into_never_created_pool_is_empty_pool() -> None:
    a, b = BuddyAllocator(), BuddyAllocator()
    r = a.allocate(MiB)
    before = snapshot(b)
    with pytest.raises(EmptyPoolError, match="^operation on empty pool$") as info:
        b.release(r)
    assert (info.value.size_class, info.value.offset) == (0, 0)
    assert snapshot(b) == before


@pytest.mark.parametrize("case", ["twice", "foreign", "split-parent", "wrong-class", "stale", "moved"])
def test_refused_releases_change_nothing(case: str) -> None:
    b = BuddyAllocator()
    r = b.allocate(MiB)
    keep = b.allocate(16 * MiB)
    if case == "twice":
        b.release(r)
        bad = r
    elif case == "foreign":
        other = BuddyAllocator()
        other.allocate(MiB)
        bad = other.allocate(MiB)  # offset 1 MiB: free in b's class 0, busy in other
        b.allocate(MiB)  # now b holds a region at the same offset and class
    elif case == "split-parent":
        bad = memguard.BuddyRegion(0, 1, 4 * MiB, None, r.serial, r.owner)
    elif case == "wrong-class":
        bad = memguard.BuddyRegion(keep.offset, 1, 4 * MiB, None, keep.serial, keep.owner)
    elif case == "stale":
        b.release(r)
        assert b.allocate(MiB).offset == r.offset
        bad = r
    else:
        bad = memguard.BuddyRegion(MiB, 0, MiB, None, r.serial, r.owner)
    before = snapshot(b)
    with pytest.raises(NotAllocatedError, match="^no memory allocated at the given offset$"):
        b.release(bad)
    assert snapshot(b) == before


def test_errors_share_the_root() -> None:
    for cls in (NotEnoughSpaceError, NotAllocatedError, InvalidMemoryClassError, EmptyPoolError):
        assert issubclass(cls, BuddyError) and issubclass(cls, MemguardError)


@pytest.mark.parametrize("bad", [True, 1.0, "1", None])
def test_argument_types(bad: object) -> None:
    b = BuddyAllocator()
    with pytest.raises(TypeError):
        b.allocate(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        memguard.memory_class(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        BuddyAllocator(min_size=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        b.release(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"min_size": 0}, {"classes": 0}, {"factor": 1}, {"min_size": -1}])
def test_argument_values(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        BuddyAllocator(**kwargs)
    with pytest.raises(ValueError):
        BuddyAllocator().allocate(-1)


def test_destroyed_allocator_refuses() -> None:
    b = BuddyAllocator()
    r = b.allocate(MiB)
    assert b.destroy() == [] and b.destroyed
    with pytest.raises(memguard.HeapClosedError):
        b.allocate(MiB)
    with pytest.raises(memguard.HeapClosedError):
        b.release(r)


# ----------------------------------------------------------------------------- threads and model
def check_invariants(b: BuddyAllocator) -> None:
    """Free, busy and split regions tile [0, total) exactly, each aligned to its class."""
    spans = []
    for c in range(b.classes):
        size = b.class_size(c)
        for off in b.free_offsets(c) + b.busy_offsets(c):
            assert off % size == 0 and 0 <= off and off + size <= b.total
            spans.append((off, off + size))
        for off in b.split_offsets(c):
            assert off % size == 0
    spans.sort()
    assert spans[0][0] == 0 and spans[-1][1] == b.total
    assert all(a[1] == n[0] for a, n in zip(spans, spans[1:]))


def test_threads_keep_the_tree_consistent() -> None:
    b = BuddyAllocator(min_size=1, classes=5, factor=4)
    held: list[memguard.BuddyRegion] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        mine: list[memguard.BuddyRegion] = []
        try:
            for _ in range(2000):
                if mine and rnd.random() < 0.5:
                    b.release(mine.pop(rnd.randrange(len(mine))))
                else:
                    try:
                        mine.append(b.allocate(rnd.choice([1, 3, 4, 9, 16, 40])))
                    except NotEnoughSpaceError:
                        pass
            with lock:
                held.extend(mine)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    check_invariants(b)
    spans = sorted((r.offset, r.offset + r.size) for r in held)
    assert all(a[1] <= n[0] for a, n in zip(spans, spans[1:]))
    assert sorted(r.offset for r in held) == sorted(r.offset for r in b.regions())
    for r in held:
        b.release(r)
    assert b.free_offsets(4) == [0]


class BuddyModel(RuleBasedStateMachine):
    """The allocator against a set of busy intervals."""

    def __init__(self) -> None:
        super().__init__()
        self.b = BuddyAllocator(min_size=2, classes=4, factor=3)
        self.busy: dict[int, memguard.BuddyRegion] = {}

    @rule(size=st.integers(1, 60))
    def allocate(self, size: int) -> None:
        c = self.b.memory_class(size)
        csize = self.b.class_size(c) if c < self.b.classes else None
        if csize is None:
            with pytest.raises(InvalidMemoryClassError):
                self.b.allocate(size)
            return
        # The model: the lowest aligned offset of that size that overlaps no busy interval,
        # among blocks the buddy tree can hand out (the largest free region rule below).
        try:
            r = self.b.allocate(size)
        except NotEnoughSpaceError:
            for off in range(0, self.b.total, csize):
                assert any(o < off + csize and off < o + x.size for o, x in self.busy.items())
            return
        assert r.size == csize >= size and r.offset % csize == 0 and r.offset + csize <= self.b.total
        assert all(not (o < r.offset + csize and r.offset < o + x.size) for o, x in self.busy.items())
        self.busy[r.offset] = r

    @precondition(lambda self: self.busy)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        off = data.draw(st.sampled_from(sorted(self.busy)))
        self.b.release(self.busy.pop(off))

    @precondition(lambda self: self.busy)
    @rule(data=st.data())
    def double_release(self, data: st.DataObject) -> None:
        off = data.draw(st.sampled_from(sorted(self.busy)))
        r = self.busy.pop(off)
        self.b.release(r)
        before = snapshot(self.b)
        with pytest.raises(NotAllocatedError):
            self.b.release(r)
        assert snapshot(self.b) == before

    @invariant()
    def consistent(self) -> None:
        check_invariants(self.b)
        assert sorted(self.busy) == sorted(r.offset for r in self.b.regions())
        if not self.busy:
            assert self.b.free_offsets(self.b.classes - 1) == [0]
            assert all(self.b.free_offsets(c) == [] for c in range(self.b.classes - 1))


TestBuddyModel = BuddyModel.TestCase
TestBuddyModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


# ----------------------------------------------------------------------------- backed
@pytest.fixture
def heap() -> GuardedHeap:
    h = GuardedHeap(on_error="report")
    yield h
    h.close()


def test_backed_regions_have_addresses(heap: GuardedHeap) -> None:
    b = BuddyAllocator(min_size=64, classes=3, backing=heap)
    r, s = b.allocate(64), b.allocate(200)
    assert r.address == b.base and s.address == b.base + 256 and s.size == 256
    ctypes.memset(r.address, 7, r.size)
    ctypes.memset(s.address, 7, s.size)
    assert heap.check() == []
    b.release(r)
    b.release(s)
    assert b.destroy() == [] and heap.check() == [] and heap.leaks() == []


def test_backed_overflow_into_buddy_is_reported_with_stack(heap: GuardedHeap) -> None:
    b = BuddyAllocator(min_size=64, classes=3, backing=heap)
    r = b.allocate(64)
    ctypes.memset(r.address, 1, 65)
    reports = heap.check()
    assert [x.kind for x in reports] == ["pool-buffer-overflow"]
    assert reports[0].alloc_stack and reports[0].alloc_stack[0].name == "test_backed_overflow_into_buddy_is_reported_with_stack"
    b.release(r)
    b.destroy()


def test_backed_write_after_release_is_reported(heap: GuardedHeap) -> None:
    b = BuddyAllocator(min_size=64, classes=3, backing=heap)
    r = b.allocate(64)
    b.release(r)
    ctypes.memset(r.address + 10, 0, 1)
    reports = heap.check()
    assert [x.kind for x in reports] == ["pool-use-after-free"]
    assert reports[0].free_stack and reports[0].free_stack[0].name == "test_backed_write_after_release_is_reported"
    b.destroy()


def test_backed_live_region_at_destroy_is_a_leak(heap: GuardedHeap) -> None:
    b = BuddyAllocator(min_size=64, classes=3, backing=heap)
    r = b.allocate(100)
    reports = b.destroy()
    assert [x.kind for x in reports] == ["memory-leak"]
    assert reports[0].address == r.address and reports[0].size == 256
    assert "test_buddy.py" in reports[0].message and "Leak at" in reports[0].message
    assert heap.leaks() == []  # the backing block went back to the heap


def test_backed_raise_mode_raises_the_leak_after_returning_memory() -> None:
    heap = GuardedHeap(on_error="raise")
    b = BuddyAllocator(min_size=64, classes=2, backing=heap)
    b.allocate(64)
    with pytest.raises(memguard.LeakError):
        b.destroy()
    assert heap.leaks() == []
    heap.close()


def test_backed_refuses_huge_and_non_heap() -> None:
    with pytest.raises(ValueError):
        BuddyAllocator(backing=GuardedHeap())
    with pytest.raises(TypeError):
        BuddyAllocator(backing=True)  # type: ignore[arg-type]


def test_pytest_plugin_fails_a_test_leaving_a_backed_region_live(pytester: pytest.Pytester) -> None:
    memguard.uninstall()
    pytester.makepyfile(test_b="""
        import memguard

        def test_leaves_region():
            buddy = memguard.BuddyAllocator(min_size=64, classes=3, backing=memguard.install())
            buddy.allocate(64)
            buddy.destroy()

        def test_clean():
            buddy = memguard.BuddyAllocator(min_size=64, classes=3, backing=memguard.install())
            buddy.release(buddy.allocate(64))
            buddy.destroy()
    """)
    result = pytester.runpytest("--memguard", "-rf")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Leak at 0x* (*test_b.py:5 in test_leaves_region)*"])
    memguard.uninstall()


# ----------------------------------------------------------------------------- docs and benchmark
ROOT = Path(__file__).resolve().parent.parent


def test_docs_snippets_print_what_they_say(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "buddy.md").read_text(), re.S)
    assert len(blocks) == 3
    for block in blocks:
        exec(block, {})
    out = capsys.readouterr().out.splitlines()
    assert out == ["0 2 16777216", "[16777216, 33554432, 50331648]", "[0]", "7",
                   "no memory allocated at the given offset 0", "['pool-buffer-overflow']", "memory-leak"]


def test_benchmark_quick_run_prints_every_figure() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_buddy.py"), "--quick"],
                         capture_output=True, text=True, env=env, timeout=120, check=True).stdout
    for name in ("heap pair", "buddy pair, offsets", "buddy pair, backed", "fill+drain 4096 x 1 MiB"):
        assert name in out
