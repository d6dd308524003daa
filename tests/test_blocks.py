"""BlockAllocator and its defragmenter: placement, findings, vkngwrapper's cases, verification, a model."""

from __future__ import annotations

import ctypes
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import memguard
from memguard import Allocation, BlockAllocator, DefragmentationError, GuardedHeap, Move, hookimpl
from memguard.allocators.blocks import class_floor, size_class
from memguard_plugins import defrag_verifier

pytest_plugins = ["pytester"]


def build(pages: list[tuple[int, list[tuple[object, int]]]], on_error: str = "raise",
          margin: int = 0, plugins: list[object] | None = None) -> tuple[BlockAllocator, dict[object, Allocation]]:
    """Pages laid out as vkngwrapper's tests write them: ``("_", n)`` is n free bytes, ``(k, n)`` allocation k."""
    heap = GuardedHeap(on_error=on_error, plugins=plugins or [])
    blocks = BlockAllocator(heap=heap, margin=margin)
    named: dict[object, Allocation] = {}
    for index, (size, layout) in enumerate(pages):
        blocks.add_page(size)
        holes = []
        for key, n in layout:
            a = blocks.allocate(n, strategy="min_offset", page=index)
            a.view()[:] = bytes([hash(key) & 0xFF]) * n
            (holes.append(a) if key == "_" else named.__setitem__(key, a))
        for a in holes:
            blocks.free(a)
    return blocks, named


def one_pass(blocks: BlockAllocator, algorithm: str, max_bytes: int, max_allocs: int) -> list[tuple[object, ...]]:
    """The moves of the first pass as ``(serial, src page, src offset, dst page, dst offset)``."""
    ctx = blocks.defragmenter(algorithm, max_bytes, max_allocs)
    moves = ctx.begin_pass()
    ctx.end_pass()
    return [(m.allocation.serial, m.src_page, m.src_offset, m.dst_page, m.dst_offset) for m in moves]


def close(blocks: BlockAllocator) -> None:
    with blocks.heap.reporting():
        blocks.close()
    blocks.heap.close()


# ----------------------------------------------------------------------------- the allocator
def test_size_classes_are_monotonic_and_exact_at_their_floor() -> None:
    previous = -1
    for n in range(1, 5000):
        c = size_class(n)
        assert c >= previous and class_floor(c) <= n
        previous = c
        assert size_class(class_floor(c)) == c


def test_strategies_place_as_documented() -> None:
    blocks, named = build([(1000, [("_", 100), (1, 10), ("_", 40), (2, 10), ("_", 60), (3, 10)])])
    # free: [0,100) [110,150) [160,220) [230,1000)
    assert blocks.allocate(30, strategy="min_offset").offset == 0
    assert blocks.allocate(35, strategy="min_memory").offset == 110     # the 40-byte range: the best fit
    a = blocks.allocate(50, strategy="min_time")
    assert a.page == 0 and a.offset in (160, 230)
    b = blocks.allocate(8, align=64, strategy="min_offset")
    assert b.address % 64 == 0
    close(blocks)


def test_a_new_page_when_none_has_room_and_page_restricts() -> None:
    heap = GuardedHeap(on_error="raise")
    blocks = BlockAllocator(page_size=256, heap=heap)
    a = blocks.allocate(200)
    b = blocks.allocate(200)
    big = blocks.allocate(1000)
    assert (a.page, b.page, big.page) == (0, 1, 2)
    assert [p.size for p in blocks.pages()] == [256, 256, 1000]
    with pytest.raises(MemoryError, match="page 0"):
        blocks.allocate(100, page=0)
    with pytest.raises(IndexError):
        blocks.allocate(1, page=7)
    for x in (a, b, big):
        blocks.free(x)
    close(blocks)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"size": 0}, ValueError), ({"size": -1}, ValueError), ({"size": 1.5}, TypeError), ({"size": True}, TypeError),
    ({"size": 8, "align": 3}, ValueError), ({"size": 8, "strategy": "fastest"}, ValueError),
])
def test_bad_input_is_a_clear_exception(kwargs: dict[str, object], error: type[Exception]) -> None:
    blocks = BlockAllocator()
    with pytest.raises(error):
        blocks.allocate(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        blocks.free(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        blocks.defragmenter("fastest")
    blocks.close()


def test_stats_pages_and_fragmentation() -> None:
    blocks, named = build([(1000, [("_", 100), (1, 100), ("_", 300), (2, 100)])])
    s = blocks.stats()
    assert (s.pages, s.page_bytes, s.allocations, s.allocation_bytes, s.free_ranges, s.largest_free) == (
        1, 1000, 2, 200, 3, 400)
    assert s.fragmentation == pytest.approx(1 - 400 / 800)
    (page,) = blocks.pages()
    assert (page.used, page.free, page.largest_free) == (200, 800, 400)
    assert page.allocations == (named[1], named[2])
    blocks.free(named[1])
    blocks.free(named[2])
    assert blocks.stats().fragmentation == 0.0 and blocks.stats().free_ranges == 1  # merged back into one
    close(blocks)


def test_overflow_into_the_margin_write_after_free_double_free_and_leak_are_findings() -> None:
    heap = GuardedHeap(on_error="report")
    blocks = BlockAllocator(heap=heap, margin=16)
    a = blocks.allocate(32)
    ctypes.memset(a.address, 1, 33)
    assert [r.kind for r in heap.check()] == ["pool-buffer-overflow"]
    address = a.address
    blocks.free(a)
    ctypes.memset(address, 2, 1)
    assert [r.kind for r in heap.check()] == ["pool-use-after-free"]
    blocks.free(a)
    assert heap.reports[-1].kind == "pool-double-free" and heap.reports[-1].free_stack
    kept = blocks.allocate(8)
    reports = blocks.close()
    assert [r.kind for r in reports] == ["memory-leak"]
    assert "test_blocks.py" in str(reports[0].alloc_stack[0]) and not kept.valid
    heap.close()


# ----------------------------------------------------------------------------- vkngwrapper's cases
def test_full_simple_move_within_one_page() -> None:
    blocks, n = build([(250, [("_", 100), (1, 100)])])
    assert one_pass(blocks, "full", 100, 1) == [(n[1].serial, 0, 100, 0, 0)]
    assert (n[1].page, n[1].offset) == (0, 0)
    close(blocks)


def test_fast_simple_move_between_pages() -> None:
    blocks, n = build([(250, [("_", 100), (1, 100), ("_", 50)]), (250, [(2, 99)])])
    assert one_pass(blocks, "fast", 100, 1) == [(n[2].serial, 1, 0, 0, 0)]
    assert (n[2].page, n[2].offset) == (0, 0) and blocks.stats().pages == 1  # the page left empty is released
    close(blocks)


def test_full_moves_within_a_later_page_when_no_earlier_page_has_room() -> None:
    blocks, n = build([(150, [("_", 50), (1, 100)]), (200, [("_", 100), (2, 99)])])
    assert one_pass(blocks, "full", 100, 1) == [(n[2].serial, 1, 100, 1, 0)]
    close(blocks)


def test_the_byte_budget_skips_a_move() -> None:
    blocks, _ = build([(500, [("_", 200), (1, 200)])])
    assert one_pass(blocks, "full", 100, 1) == []
    close(blocks)


@pytest.mark.parametrize("algorithm", ["full", "fast"])
def test_no_work_to_do(algorithm: str) -> None:
    blocks, _ = build([(250, [(1, 100)])] if algorithm == "full" else [(250, [("_", 100), (1, 100)])])
    assert one_pass(blocks, algorithm, 100, 1) == []  # fast never moves within a single page
    close(blocks)


def test_the_allocation_budget_ends_the_pass() -> None:
    # Upstream's mock lists #1 first; pages are walked from the highest offset down here, so #2 moves.
    blocks, n = build([(500, [("_", 200), (1, 100), (2, 100)])])
    assert one_pass(blocks, "full", 100, 1) == [(n[2].serial, 0, 300, 0, 0)]
    close(blocks)


def test_full_several_allocations_in_one_pass() -> None:
    # #2 (highest) goes to 0; #1 then finds [99, 200) free, lower than its 200.
    blocks, n = build([(500, [("_", 200), (1, 100), (2, 99)])])
    assert one_pass(blocks, "full", 200, 2) == [(n[2].serial, 0, 300, 0, 0), (n[1].serial, 0, 200, 0, 99)]
    close(blocks)


def test_fast_several_allocations_in_one_pass() -> None:
    blocks, n = build([(300, [("_", 200), (1, 100)]), (100, [(2, 50), (3, 49)])])
    assert one_pass(blocks, "fast", 200, 2) == [(n[3].serial, 1, 50, 0, 0), (n[2].serial, 1, 0, 0, 49)]
    close(blocks)


def test_full_cross_page() -> None:
    blocks, n = build([(200, [("_", 100), (1, 100)]), (100, [(2, 99)])])
    assert one_pass(blocks, "full", 100, 1) == [(n[2].serial, 1, 0, 0, 0)]
    close(blocks)


@pytest.mark.parametrize(("big", "moved"), [(15, True), (16, False)])
def test_sixteen_consecutive_skips_end_the_pass(big: int, moved: bool) -> None:
    layout: list[tuple[object, int]] = [("_", 50), ("small", 50)] + [(f"big{i}", 200) for i in range(big)]
    blocks, n = build([(100 + 200 * big, layout)])
    moves = one_pass(blocks, "full", 100, 0)
    assert moves == ([(n["small"].serial, 0, 50, 0, 0)] if moved else [])
    close(blocks)


def test_end_to_end_ten_allocations_every_other_one_freed() -> None:
    """Ten allocations of 1000 bytes fill a 10000-byte page; #0, #2, #4, #6 and #8 are freed.

    One page: "full" moves within it, highest offset first, each to the lowest free offset
    if lower.  Pass 1: #9 (9000) goes to 0, #7 (7000) to 2000, #5 (5000) to 4000 (the
    destinations are reserved as they are collected); #3 (3000) and #1 (1000) find only
    6000 and up free, not lower, so they stay.  3 moves, 3000 bytes: within both budgets
    (20000 bytes, 5 allocations).  Pass 2: the page is [#9 #1 #7 #3 #5 | 5000 free]:
    nothing can go lower, the pass is empty and the defragmentation ends: 2 passes.
    """
    heap = GuardedHeap(on_error="raise", plugins=[defrag_verifier])
    blocks = BlockAllocator(page_size=10000, heap=heap)
    allocs = [blocks.allocate(1000, strategy="min_offset") for _ in range(10)]
    for i, a in enumerate(allocs):
        a.view()[:] = bytes([i]) * 1000
    for a in allocs[0::2]:
        blocks.free(a)
    ctx = blocks.defragmenter("full", 20000, 5)
    first = ctx.begin_pass()
    assert [(allocs.index(m.allocation), m.src_offset, m.dst_offset) for m in first] == [
        (9, 9000, 0), (7, 7000, 2000), (5, 5000, 4000)]
    assert ctx.end_pass() is False
    assert ctx.begin_pass() == [] and ctx.end_pass() is True
    assert ctx.stats == memguard.DefragStats(bytes_moved=3000, allocations_moved=3, passes=2)
    assert [allocs.index(a) for a in blocks.pages()[0].allocations] == [9, 1, 7, 3, 5]
    assert all(bytes(a.view()) == bytes([i]) * 1000 for i, a in enumerate(allocs) if a.valid)
    assert blocks.stats().fragmentation == 0.0
    assert heap.check() == []
    close(blocks)


# ----------------------------------------------------------------------------- semantics
def test_destinations_are_reserved_two_moves_never_overlap() -> None:
    blocks, _ = build([(400, [("_", 100), (1, 50), ("_", 50), (2, 50), (3, 50), (4, 50), (5, 50)])])
    ctx = blocks.defragmenter("full")
    moves = ctx.begin_pass()
    assert len(moves) >= 2
    spans = [(m.dst_offset, m.dst_offset + m.size) for m in moves]
    sources = [(m.src_offset, m.src_offset + m.size) for m in moves]
    for i, (lo, hi) in enumerate(spans):
        for j, (lo2, hi2) in enumerate(spans + sources):
            if j != i:
                assert hi <= lo2 or hi2 <= lo
    ctx.end_pass()
    close(blocks)


def test_ops_ignore_destroy_copy_and_page_release() -> None:
    blocks, n = build([(300, [("_", 200), (1, 100)]), (100, [(2, 50)]), (100, [(3, 50)])])
    ctx = blocks.defragmenter("fast")
    moves = {m.allocation.serial: m for m in ctx.begin_pass()}
    assert set(moves) == {n[2].serial, n[3].serial}
    moves[n[3].serial].op = "ignore"
    moves[n[2].serial].op = "destroy"
    assert ctx.end_pass() is False
    assert not n[2].valid and n[3].valid
    # page 2 (#3) is immovable and first now; page 1, left empty by the destroy, is released.
    assert [p.size for p in blocks.pages()] == [100, 300]
    assert n[3].page == 0
    assert ctx.stats == memguard.DefragStats(bytes_freed=100, pages_freed=1, passes=1)
    assert ctx.begin_pass() == [] and ctx.end_pass()  # page 0 is immovable, page 1 is the first source
    close(blocks)


def test_an_empty_page_goes_back_at_the_end_of_a_pass_even_if_no_move_emptied_it() -> None:
    """As VMA ends a pass: every empty page behind the immovable ones is released, not only
    the pages the pass emptied (page 2 was emptied by the program before defragmenting)."""
    blocks, n = build([(200, [(1, 100)]), (200, [(2, 50)]), (200, [("_", 200)])])
    assert [p.used for p in blocks.pages()] == [100, 50, 0]
    stats = blocks.defragment("full")
    assert [p.size for p in blocks.pages()] == [200]  # #2 joined #1 on page 0; pages 1 and 2 are gone
    assert stats.pages_freed == 2 and stats.bytes_freed == 400 and stats.allocations_moved == 1
    assert n[2].page == 0 and bytes(n[2].view()) == bytes([hash(2) & 0xFF]) * 50
    close(blocks)


def test_copy_preserves_the_bytes_and_the_allocation_stack() -> None:
    blocks, n = build([(300, [("_", 200), (1, 100)])])
    n[1].view()[:] = bytes(range(100))
    stack = n[1].alloc_stack
    stats = blocks.defragment("full")
    assert stats.bytes_moved == 100 and bytes(n[1].view()) == bytes(range(100))
    assert n[1].offset == 0 and n[1].alloc_stack == stack
    close(blocks)


def test_every_move_is_announced_to_the_hooks() -> None:
    seen: list[tuple[str, object]] = []

    class Spy:
        @hookimpl
        def memguard_pool_move(self, pool: object, old: memguard.Region, new: memguard.Region) -> None:
            seen.append(("move", (old.address, new.address, old.size)))

        @hookimpl
        def memguard_defrag_pass(self, context: object, phase: str, moves: tuple[Move, ...]) -> None:
            seen.append((phase, len(moves)))

    blocks, n = build([(250, [("_", 100), (1, 100)])], plugins=[Spy()])
    old = n[1].address
    blocks.defragment("full")
    assert seen == [("begin", 1), ("apply", 1), ("move", (old, n[1].address, 100)), ("end", 1),
                    ("begin", 0), ("apply", 0), ("end", 0)]
    close(blocks)


def test_balanced_and_extensive_defragment_too() -> None:
    for algorithm in ("balanced", "extensive"):
        blocks, n = build([(300, [("_", 200), (1, 100)]), (300, [("_", 10), (2, 50), ("_", 40), (3, 50)])])
        blocks.defragment(algorithm)
        assert blocks.stats().pages == 1 and blocks.stats().fragmentation == 0.0
        close(blocks)


# ----------------------------------------------------------------------------- findings and misuse
def test_a_write_through_the_old_address_names_the_move_and_the_pass() -> None:
    blocks, n = build([(300, [("_", 100), (1, 100), (2, 50)])], on_error="report")
    old = n[2].address
    blocks.defragment("full", max_allocations_per_pass=1)
    ctypes.memset(old, 7, 4)
    (report,) = blocks.heap.check()
    assert report.kind == "pool-use-after-free"
    assert f"moved to 0x{n[2].address:x}" in report.message and "by pass 1 of the defragmentation" in report.message
    close(blocks)


def test_moving_an_allocation_that_was_freed_is_a_finding() -> None:
    blocks, n = build([(300, [("_", 100), (1, 100)])], on_error="report")
    ctx = blocks.defragmenter("full")
    (move,) = ctx.begin_pass()
    blocks.free(n[1])
    ctx.end_pass()
    report = blocks.heap.reports[-1]
    assert report.kind == "defrag-moved-freed" and "pass 1" in report.message and report.free_stack
    assert blocks.stats().free_ranges == 1  # the reserved destination was given back
    with pytest.raises(DefragmentationError, match="changed underneath"):
        ctx.begin_pass()
    close(blocks)


def test_begin_pass_twice_end_pass_alone_and_a_bad_op_are_clear_errors() -> None:
    blocks, n = build([(300, [("_", 100), (1, 100)])])
    ctx = blocks.defragmenter()
    with pytest.raises(DefragmentationError, match="no pass begun"):
        ctx.end_pass()
    (move,) = ctx.begin_pass()
    with pytest.raises(DefragmentationError, match="called twice: pass 1") as info:
        ctx.begin_pass()
    assert info.value.pass_number == 1 and info.value.allocator == "blocks"
    move.op = "teleport"
    with pytest.raises(ValueError, match="op must be one of"):
        ctx.end_pass()
    move.op = "copy"
    assert ctx.end_pass() is False
    close(blocks)


def test_a_context_used_after_its_allocator_changed_is_refused() -> None:
    blocks, n = build([(300, [("_", 100), (1, 100)])])
    ctx = blocks.defragmenter()
    extra = blocks.allocate(10)
    with pytest.raises(DefragmentationError, match="changed underneath this defragmenter .* since it was made"):
        ctx.begin_pass()
    blocks.free(extra)
    assert blocks.defragment().allocations_moved == 1  # a new context is fine
    close(blocks)


# ----------------------------------------------------------------------------- the verifier plugin
def test_the_verifier_is_quiet_on_clean_passes() -> None:
    rng = random.Random(5)
    heap = GuardedHeap(on_error="raise", plugins=[defrag_verifier])
    blocks = BlockAllocator(page_size=4096, heap=heap, margin=8)
    live = [blocks.allocate(rng.randint(1, 300), align=rng.choice([1, 8, 16])) for _ in range(200)]
    for a in live:
        a.view()[:] = bytes([a.serial & 0xFF]) * a.size
    for a in rng.sample(live, 100):
        blocks.free(a)
    stats = blocks.defragment("full", max_bytes_per_pass=2000)
    assert stats.allocations_moved > 0 and heap.check() == []
    close(blocks)


def test_the_verifier_sees_a_move_that_changes_the_bytes() -> None:
    class Saboteur:
        @hookimpl
        def memguard_pool_move(self, pool: object, old: memguard.Region, new: memguard.Region) -> None:
            ctypes.memset(new.address, 0, 1)

    blocks, n = build([(300, [("_", 100), (1, 100)])], on_error="report", plugins=[defrag_verifier, Saboteur()])
    blocks.defragment()
    kinds = [r.kind for r in blocks.heap.check()]
    assert kinds == ["defrag-verify"]
    assert "does not hold the bytes it held" in blocks.heap.reports[-1].message
    close(blocks)


def test_pytest_fails_a_test_that_keeps_a_stale_address(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=textwrap.dedent("""
        import ctypes
        import memguard


        def test_keeps_the_old_address():
            blocks = memguard.BlockAllocator(heap=memguard.install(), page_size=4096)
            hole = blocks.allocate(100)
            a = blocks.allocate(100)
            blocks.free(hole)
            old = a.address
            blocks.defragment()
            ctypes.memset(old, 1, 8)
            blocks.free(a)
            blocks.close()


        def test_clean():
            blocks = memguard.BlockAllocator(heap=memguard.install(), page_size=4096)
            hole = blocks.allocate(100)
            a = blocks.allocate(100)
            blocks.free(hole)
            blocks.defragment()
            a.view()[:8] = bytes(8)
            blocks.free(a)
            blocks.close()
    """))
    result = pytester.runpytest_subprocess("--memguard", "-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str()
    assert "pool-use-after-free" in text and "by pass 1 of the defragmentation of 'blocks'" in text


# ----------------------------------------------------------------------------- a model
class BlocksModel(RuleBasedStateMachine):
    """Random allocate/free/defragment against a dict of expected contents."""

    def __init__(self) -> None:
        super().__init__()
        self.heap = GuardedHeap(on_error="raise", plugins=[defrag_verifier])
        self.blocks = BlockAllocator(page_size=1024, heap=self.heap)
        self.live: dict[int, tuple[Allocation, bytes]] = {}

    @rule(size=st.integers(1, 700), align=st.sampled_from([1, 4, 16]),
          strategy=st.sampled_from(["min_memory", "min_time", "min_offset"]), byte=st.integers(0, 255))
    def allocate(self, size: int, align: int, strategy: str, byte: int) -> None:
        a = self.blocks.allocate(size, align=align, strategy=strategy)
        assert a.address % align == 0
        data = bytes([byte]) * size
        a.view()[:] = data
        self.live[a.serial] = (a, data)

    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        if self.live:
            serial = data.draw(st.sampled_from(sorted(self.live)))
            self.blocks.free(self.live.pop(serial)[0])

    @rule(algorithm=st.sampled_from(["fast", "full", "balanced", "extensive"]),
          max_bytes=st.sampled_from([0, 500, 5000]), max_allocs=st.sampled_from([0, 1, 3]))
    def defragment(self, algorithm: str, max_bytes: int, max_allocs: int) -> None:
        before = self.blocks.stats()
        stats = self.blocks.defragment(algorithm, max_bytes, max_allocs)
        after = self.blocks.stats()
        assert (after.allocations, after.allocation_bytes) == (before.allocations, before.allocation_bytes)
        assert after.pages == before.pages - stats.pages_freed
        assert after.page_bytes == before.page_bytes - stats.bytes_freed
        # Complete: a new defragmentation with the same settings finds nothing more to move,
        # unless this one released pages: with one page left its allocations may move within
        # it (the first page is never a source while there are several), and then one more
        # finds nothing.  (Fragmentation itself may rise a little: VMA's rule moves an
        # allocation to the lowest offset that fits, which can split a free range.)
        again = self.blocks.defragment(algorithm, max_bytes, max_allocs)
        if stats.pages_freed == 0:
            assert again.allocations_moved == 0
        else:
            assert self.blocks.defragment(algorithm, max_bytes, max_allocs).allocations_moved == 0

    @rule(data=st.data(), algorithm=st.sampled_from(["fast", "full", "balanced"]), max_allocs=st.sampled_from([0, 2]))
    def one_pass_with_ops(self, data: st.DataObject, algorithm: str, max_allocs: int) -> None:
        ctx = self.blocks.defragmenter(algorithm, 0, max_allocs)
        moves = ctx.begin_pass()
        for m in moves:
            m.op = data.draw(st.sampled_from(["copy", "ignore", "destroy"]))
            if m.op == "destroy":
                del self.live[m.allocation.serial]
        ctx.end_pass()
        copies = [m for m in moves if m.op == "copy"]
        assert ctx.stats.bytes_moved == sum(m.size for m in copies)
        for m in copies:
            assert m.allocation.offset == m.dst_offset
        for m in moves:
            assert m.allocation.valid == (m.op != "destroy")

    @invariant()
    def contents_preserved(self) -> None:
        for a, data in self.live.values():
            assert a.valid and bytes(a.view()) == data
        assert self.blocks.stats().allocations == len(self.live)
        assert self.heap.check() == []

    def teardown(self) -> None:
        for a, _ in self.live.values():
            self.blocks.free(a)
        assert self.blocks.close() == []
        self.heap.close()


TestBlocksModel = BlocksModel.TestCase
TestBlocksModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


def test_full_defragmentation_lowers_the_fragmentation_of_typical_pages() -> None:
    rng = random.Random(11)
    for _ in range(20):
        heap = GuardedHeap(on_error="raise")
        blocks = BlockAllocator(page_size=1 << 20, heap=heap)
        live = [blocks.allocate(rng.randint(16, 4096), strategy="min_offset") for _ in range(100)]
        for a in rng.sample(live, 50):
            blocks.free(a)
        before = blocks.stats().fragmentation
        blocks.defragment("full")
        assert blocks.stats().fragmentation < before
        close(blocks)


def test_benchmark_quick_run_prints_every_figure() -> None:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_blocks.py"), "--quick", "--json",
                          "--allocations=2000"], capture_output=True, text=True, env=env, timeout=120, check=True)
    figures = json.loads(out.stdout)
    assert set(figures["pairs"]) == {"heap pair", "blocks pair, min_memory", "blocks pair, min_time",
                                     "blocks pair, min_offset"}
    d = figures["defragment"]
    assert d["allocations"] == 2000 and d["live"] == 1000 and d["passes"] >= 2
    assert d["pages_after"] <= d["pages_before"] and d["fragmentation_after"] < d["fragmentation_before"]
