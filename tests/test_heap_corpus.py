"""The bug corpus: one test per kind of memory bug, each asserting kind, offset and stacks.

Out-of-bounds writes are done with ``ctypes.memset`` only inside memory memguard owns:
at most ``redzone`` (16) bytes past the end or before the start of a block.

Known limits, documented as tests at the end of this file (``test_limit_*``): memguard
is a canary tool, so out-of-bounds *reads*, wild writes that jump over the redzone into
another block, and use-after-free writes made after the block left the quarantine and
its slot was reused are not seen.
"""

from __future__ import annotations

import ctypes
import sys

import pytest

import memguard

HERE = __file__
MiB = 1 << 20


def _line() -> int:
    """The caller's current line (call it on the same line as the operation)."""
    return sys._getframe(1).f_lineno


def _here() -> str:
    return sys._getframe(1).f_code.co_name




def _assert_top(stack, line: int, func: str) -> None:
    assert stack, "expected a non-empty stack"
    assert stack[0].filename == HERE
    assert stack[0].lineno == line
    assert stack[0].name == func


# ----------------------------------------------------------------------------- overflows
@pytest.mark.parametrize("size", [1, 13, 15, 16, 17, 100, 4096])
def test_one_byte_overflow_found_by_check(heap, size):
    p = heap.malloc(size); aline = _line()
    ctypes.memset(p + size, 0x41, 1)
    reports = heap.check(); cline = _line()
    assert len(reports) == 1
    r = reports[0]
    assert r.kind == "heap-buffer-overflow"
    assert r.address == p
    assert r.size == size
    assert r.offset == size
    assert r.count == 1
    assert r.found == b"\x41"
    assert len(r.expected) == 1 and r.expected != b"\x41"
    assert r.free_stack == ()
    _assert_top(r.alloc_stack, aline, _here())
    _assert_top(r.stack, cline, _here())
    assert heap.reports == [r]
    # reported once: the canary was repaired
    assert heap.check() == []


def test_one_byte_overflow_found_by_free(heap):
    p = heap.malloc(13); aline = _line()
    ctypes.memset(p + 13, 0x00, 1)
    heap.free(p); fline = _line()
    assert [r.kind for r in heap.reports] == ["heap-buffer-overflow"]
    r = heap.reports[0]
    assert (r.address, r.size, r.offset, r.count) == (p, 13, 13, 1)
    _assert_top(r.alloc_stack, aline, _here())
    _assert_top(r.stack, fline, _here())
    # the block was freed anyway and is consistent
    assert heap.block(p).state == "quarantined"
    assert heap.check() == []


def test_one_byte_overflow_raises_from_free():
    with memguard.GuardedHeap() as h:
        p = h.malloc(7)
        ctypes.memset(p + 7, 0x41, 1)
        with pytest.raises(memguard.HeapCorruptionError) as exc:
            h.free(p)
        assert exc.value.report is h.reports[0]
        assert exc.value.kind == "heap-buffer-overflow"
        assert exc.value.report.offset == 7
        # freed despite the error; the heap carries on
        assert h.block(p).state == "quarantined"
        assert h.stats().live_blocks == 0
        assert h.check() == []


@pytest.mark.parametrize("size", [16, 24, 32, 100])
def test_long_overflow(heap, size):
    p = heap.malloc(size); aline = _line()
    ctypes.memset(p + size, 0x41, 16)
    reports = heap.check()
    assert len(reports) == 1
    r = reports[0]
    assert r.kind == "heap-buffer-overflow"
    assert r.offset == size
    assert r.count == 16
    assert r.found == b"\x41" * 16
    _assert_top(r.alloc_stack, aline, _here())
    assert heap.check() == []


def test_overflow_a_few_bytes_past_the_end(heap):
    """Only the first and last bad bytes matter: offset is the first bad byte."""
    p = heap.malloc(32)
    ctypes.memset(p + 32 + 5, 0x41, 3)
    (r,) = heap.check()
    assert r.kind == "heap-buffer-overflow"
    assert r.offset == 37
    assert r.count == 3


@pytest.mark.parametrize("size", [1, 8, 16, 31])
def test_overflow_writing_the_canary_byte_value(heap, size):
    """Keyed redzones: writing 0xFD (the classic fixed canary byte) is still caught."""
    p = heap.malloc(size)
    ctypes.memset(p + size, 0xFD, 16)
    (r,) = heap.check()
    assert r.kind == "heap-buffer-overflow"
    assert r.offset == size
    assert r.found[0] == 0xFD


@pytest.mark.parametrize("value", [0x00, 0xFF, 0xCD, 0xDD, 0xFD])
def test_overflow_with_habitual_byte_values(heap, value):
    p = heap.malloc(5)
    ctypes.memset(p + 5, value, 1)
    (r,) = heap.check()
    assert (r.kind, r.offset, r.found) == ("heap-buffer-overflow", 5, bytes([value]))


def test_malloc_zero_then_write(heap):
    p = heap.malloc(0); aline = _line()
    assert p != 0
    ctypes.memset(p, 0x41, 1)
    (r,) = heap.check()
    assert r.kind == "heap-buffer-overflow"
    assert r.size == 0
    assert r.offset == 0
    assert r.count == 1
    _assert_top(r.alloc_stack, aline, _here())


# ----------------------------------------------------------------------------- underflow
@pytest.mark.parametrize("start,count", [(-1, 1), (-4, 4), (-16, 16), (-16, 1)])
def test_underflow(heap, start, count):
    p = heap.malloc(24); aline = _line()
    ctypes.memset(p + start, 0x41, count)
    (r,) = heap.check(); cline = _line()
    assert r.kind == "heap-buffer-underflow"
    assert r.address == p
    assert r.offset == start
    assert r.count == count
    assert r.offset < 0
    _assert_top(r.alloc_stack, aline, _here())
    _assert_top(r.stack, cline, _here())
    assert heap.check() == []


def test_underflow_raises_from_free():
    with memguard.GuardedHeap() as h:
        p = h.malloc(24)
        ctypes.memset(p - 2, 0x41, 1)
        with pytest.raises(memguard.HeapCorruptionError) as exc:
            h.free(p)
        assert exc.value.report.kind == "heap-buffer-underflow"
        assert exc.value.report.offset == -2


def test_overflow_and_underflow_of_one_block(heap):
    p = heap.malloc(10)
    ctypes.memset(p - 1, 0x41, 1)
    ctypes.memset(p + 10, 0x41, 1)
    reports = heap.check()
    assert sorted((r.kind, r.offset) for r in reports) == [
        ("heap-buffer-overflow", 10),
        ("heap-buffer-underflow", -1),
    ]


# ----------------------------------------------------------------------------- use after free
def test_use_after_free_write_found_by_check(heap):
    p = heap.malloc(32); aline = _line()
    heap.free(p); fline = _line()
    ctypes.memset(p + 5, 0x41, 2)
    reports = heap.check(); cline = _line()
    assert len(reports) == 1
    r = reports[0]
    assert r.kind == "heap-use-after-free"
    assert r.address == p
    assert r.size == 32
    assert r.offset == 5
    assert r.count == 2
    assert r.expected == b"\xdd\xdd"
    assert r.found == b"\x41\x41"
    _assert_top(r.alloc_stack, aline, _here())
    _assert_top(r.free_stack, fline, _here())
    _assert_top(r.stack, cline, _here())
    assert heap.check() == []  # poison repaired, reported once


def test_use_after_free_write_through_a_stale_view(heap):
    p = heap.malloc(8)
    v = heap.view(p)
    heap.free(p)
    v[7] = 0
    (r,) = heap.check()
    assert (r.kind, r.offset, r.count) == ("heap-use-after-free", 7, 1)


def test_use_after_free_write_found_at_quarantine_eviction():
    h = memguard.GuardedHeap(on_error="report", quarantine_bytes=64)
    try:
        p = h.malloc(32); aline = _line()
        h.free(p); fline = _line()
        ctypes.memset(p + 3, 0x41, 1)
        assert h.reports == []
        q = h.malloc(48)
        h.free(q); eline = _line()  # 80 bytes > 64: p leaves the quarantine now
        assert len(h.reports) == 1
        r = h.reports[0]
        assert r.kind == "heap-use-after-free"
        assert r.address == p
        assert r.offset == 3
        assert r.count == 1
        _assert_top(r.alloc_stack, aline, _here())
        _assert_top(r.free_stack, fline, _here())
        _assert_top(r.stack, eline, _here())
        assert h.stats().quarantined_blocks == 1
        assert h.check() == []  # reported once
    finally:
        h.close(check=False)


def test_use_after_free_at_eviction_raises_from_the_triggering_free():
    with memguard.GuardedHeap(quarantine_bytes=0) as h:
        p = h.malloc(32)
        v = h.view(p)
        h.free(p)  # evicted at once with quarantine_bytes=0: nothing wrong yet
        assert h.stats().quarantined_blocks == 0
        # the slot is freed-but-not-reused: check() still verifies it
        v[0] = 1
        with pytest.raises(memguard.HeapCorruptionError) as exc:
            h.check()
        assert exc.value.report.kind == "heap-use-after-free"
        assert exc.value.report.offset == 0

    with memguard.GuardedHeap(quarantine_bytes=100) as h:
        p = h.malloc(64)
        h.free(p)
        ctypes.memset(p + 63, 0x41, 1)
        q = h.malloc(64)
        with pytest.raises(memguard.HeapCorruptionError) as exc:
            h.free(q)  # eviction of p
        assert exc.value.report.kind == "heap-use-after-free"
        assert exc.value.report.address == p
        assert exc.value.report.offset == 63
        # the free that raised did free q
        assert h.block(q).state == "quarantined"
        assert h.stats().live_blocks == 0


def test_use_after_free_eviction_is_reported_before_check_whichever_first():
    h = memguard.GuardedHeap(on_error="report", quarantine_bytes=32)
    try:
        p = h.malloc(32)
        h.free(p)
        ctypes.memset(p, 0x41, 1)
        (r,) = h.check()  # check first
        assert r.kind == "heap-use-after-free"
        h.free(h.malloc(32))  # eviction afterwards: already repaired, nothing new
        assert len(h.reports) == 1
    finally:
        h.close(check=False)


# ----------------------------------------------------------------------------- bad frees
def test_double_free(heap):
    p = heap.malloc(32); aline = _line()
    heap.free(p); f1 = _line()
    heap.free(p); f2 = _line()
    (r,) = heap.reports
    assert r.kind == "double-free"
    assert r.address == p
    assert r.size == 32
    assert r.offset == 0
    assert "already freed" in r.message
    _assert_top(r.alloc_stack, aline, _here())
    _assert_top(r.free_stack, f1, _here())  # the first free
    _assert_top(r.stack, f2, _here())  # where the second one happened
    assert heap.block(p).state == "quarantined"
    assert heap.stats().total_frees == 1


def test_double_free_raises():
    with memguard.GuardedHeap() as h:
        p = h.malloc(8)
        h.free(p)
        with pytest.raises(memguard.DoubleFreeError) as exc:
            h.free(p)
        assert isinstance(exc.value, memguard.MemguardError)
        assert exc.value.report.kind == "double-free"


def test_double_free_after_eviction_is_still_a_double_free():
    h = memguard.GuardedHeap(on_error="report", quarantine_bytes=0)
    try:
        p = h.malloc(32)
        h.free(p)
        assert h.stats().quarantined_blocks == 0
        h.free(p)
        assert [r.kind for r in h.reports] == ["double-free"]
        assert h.check() == []
    finally:
        h.close(check=False)


@pytest.mark.parametrize("delta", [1, 4, 31])
def test_free_of_an_interior_pointer(heap, delta):
    p = heap.malloc(32); aline = _line()
    heap.free(p + delta); fline = _line()
    (r,) = heap.reports
    assert r.kind == "bad-free"
    assert r.address == p  # names the containing block
    assert r.size == 32
    assert r.offset == delta
    assert r.bad_address == p + delta
    assert f"{delta} bytes inside of 32-byte region" in r.message
    _assert_top(r.alloc_stack, aline, _here())
    _assert_top(r.stack, fline, _here())
    # the block is untouched and still live
    assert heap.block(p).state == "live"
    assert bytes(heap.view(p)) == b"\xcd" * 32
    heap.free(p)
    assert len(heap.reports) == 1


def test_free_of_an_interior_pointer_raises():
    with memguard.GuardedHeap() as h:
        p = h.malloc(32)
        with pytest.raises(memguard.InvalidFreeError) as exc:
            h.free(p + 8)
        assert exc.value.report.offset == 8
        h.free(p)


def test_free_of_a_never_allocated_address(heap):
    heap.free(12345); fline = _line()
    (r,) = heap.reports
    assert r.kind == "bad-free"
    assert r.address == 12345
    assert r.offset == 0
    assert r.size == 0
    assert r.alloc_stack == ()
    assert "not malloc()-ed: 0x3039" in r.message
    _assert_top(r.stack, fline, _here())


def test_free_of_foreign_native_memory_is_reported_not_touched(heap):
    buf = ctypes.create_string_buffer(b"hello", 64)
    heap.free(ctypes.addressof(buf))
    assert [r.kind for r in heap.reports] == ["bad-free"]
    assert buf.value == b"hello"


def test_free_of_an_unused_slot_inside_an_arena(heap):
    p = heap.malloc(16)
    stride = 80  # header 32 + redzone 16 + 16 + redzone 16
    heap.free(p + 5 * stride)
    (r,) = heap.reports
    assert r.kind == "bad-free"
    assert r.address == p + 5 * stride
    assert heap.stats().total_frees == 0


def test_free_of_a_large_block_interior_pointer(heap):
    p = heap.malloc(MiB)
    heap.free(p + 1000)
    (r,) = heap.reports
    assert (r.kind, r.address, r.offset, r.size) == ("bad-free", p, 1000, MiB)
    heap.free(p)
    assert len(heap.reports) == 1


# ----------------------------------------------------------------------------- realloc
def test_realloc_of_a_freed_block_is_a_double_free(heap):
    p = heap.malloc(32); aline = _line()
    heap.free(p); fline = _line()
    assert heap.realloc(p, 64) == 0; rline = _line()
    (r,) = heap.reports
    assert r.kind == "double-free"
    assert "realloc" in r.message
    assert r.address == p
    _assert_top(r.alloc_stack, aline, _here())
    _assert_top(r.free_stack, fline, _here())
    _assert_top(r.stack, rline, _here())
    assert heap.stats().live_blocks == 0


def test_realloc_of_a_freed_block_raises():
    with memguard.GuardedHeap() as h:
        p = h.malloc(32)
        h.free(p)
        allocs = h.stats().total_allocs
        with pytest.raises(memguard.DoubleFreeError) as exc:
            h.realloc(p, 64)
        assert "realloc" in exc.value.report.message
        assert h.stats().total_allocs == allocs  # nothing was allocated


def test_realloc_of_an_interior_pointer_and_of_a_foreign_address(heap):
    p = heap.malloc(32)
    assert heap.realloc(p + 4, 8) == 0
    assert heap.realloc(4096, 8) == 0
    assert [(r.kind, r.offset) for r in heap.reports] == [("bad-free", 4), ("bad-free", 0)]
    assert "realloc" in heap.reports[0].message
    assert heap.block(p).state == "live"


def test_shrinking_realloc_then_writing_past_the_new_end(heap):
    p = heap.malloc(32)
    heap.view(p)[:] = bytes(range(32))
    q = heap.realloc(p, 8); aline = _line()
    assert q != p
    assert bytes(heap.view(q)) == bytes(range(8))
    ctypes.memset(q + 8, 0x41, 1)  # was inside the old block, is past the new end
    (r,) = heap.check()
    assert r.kind == "heap-buffer-overflow"
    assert r.address == q
    assert r.size == 8
    assert r.offset == 8
    _assert_top(r.alloc_stack, aline, _here())


def test_stale_pointer_after_realloc_is_a_use_after_free(heap):
    p = heap.malloc(16)
    q = heap.realloc(p, 64); rline = _line()
    ctypes.memset(p, 0, 4)  # the old block moved and is quarantined
    (r,) = heap.check()
    assert (r.kind, r.address, r.offset, r.count) == ("heap-use-after-free", p, 0, 4)
    _assert_top(r.free_stack, rline, _here())
    heap.free(q)


# ----------------------------------------------------------------------------- aligned
@pytest.mark.parametrize("alignment", [16, 32, 64, 128, 256, 512, 1024, 2048, 4096])
def test_aligned_block_overflow_and_underflow(heap, alignment):
    p = heap.memalign(alignment, 24); aline = _line()
    assert p % alignment == 0
    ctypes.memset(p + 24, 0x41, 2)
    (r,) = heap.check()
    assert (r.kind, r.address, r.offset, r.count, r.size) == ("heap-buffer-overflow", p, 24, 2, 24)
    _assert_top(r.alloc_stack, aline, _here())
    ctypes.memset(p - 1, 0x41, 1)
    heap.free(p)
    assert [(x.kind, x.offset) for x in heap.reports[1:]] == [("heap-buffer-underflow", -1)]
    assert heap.check() == []


# ----------------------------------------------------------------------------- large blocks
def test_large_block_overflow(heap):
    p = heap.malloc(MiB); aline = _line()
    ctypes.memset(p + MiB, 0x41, 3)
    (r,) = heap.check()
    assert (r.kind, r.address, r.size, r.offset, r.count) == ("heap-buffer-overflow", p, MiB, MiB, 3)
    _assert_top(r.alloc_stack, aline, _here())
    heap.free(p)
    assert len(heap.reports) == 1


def test_large_block_underflow_found_by_free(heap):
    p = heap.malloc(MiB + 3)
    ctypes.memset(p - 16, 0x41, 16)
    heap.free(p)
    (r,) = heap.reports
    assert (r.kind, r.offset, r.count) == ("heap-buffer-underflow", -16, 16)


@pytest.mark.parametrize("where", [0, 4096, MiB - 1])
def test_large_block_use_after_free(heap, where):
    p = heap.malloc(MiB); aline = _line()
    heap.free(p); fline = _line()
    ctypes.memset(p + where, 0x41, 1)
    (r,) = heap.check()
    assert (r.kind, r.address, r.offset, r.count) == ("heap-use-after-free", p, where, 1)
    _assert_top(r.alloc_stack, aline, _here())
    _assert_top(r.free_stack, fline, _here())
    assert heap.check() == []


def test_large_block_use_after_free_found_at_eviction():
    h = memguard.GuardedHeap(on_error="report", quarantine_bytes=MiB + MiB // 2)
    try:
        p = h.malloc(MiB)
        h.free(p)
        ctypes.memset(p + 100, 0x41, 2)
        q = h.malloc(MiB)
        h.free(q)  # p is evicted and its poison verified
        (r,) = h.reports
        assert (r.kind, r.address, r.offset, r.count) == ("heap-use-after-free", p, 100, 2)
        # a large block's memory goes back to the allocator after eviction
        with pytest.raises(memguard.InvalidAddressError):
            h.block(p)
    finally:
        h.close(check=False)


def test_large_block_double_free(heap):
    p = heap.malloc(MiB)
    heap.free(p)
    heap.free(p)
    (r,) = heap.reports
    assert (r.kind, r.address, r.size) == ("double-free", p, MiB)


# ----------------------------------------------------------------------------- leaks
def test_leaks_in_a_loop_grouped_into_one_site(heap):
    before = heap.snapshot()
    for _ in range(10):
        heap.malloc(24); aline = _line()
    heap.free(heap.malloc(100))
    (g,) = heap.leaks(since=before)
    assert g.count == 10
    assert g.size == 240
    assert len(g.addresses) == 10
    _assert_top(g.stack, aline, _here())
    r = g.report()
    assert (r.kind, r.size, r.count) == ("memory-leak", 240, 10)
    assert r.alloc_stack == g.stack


def test_large_block_leak(heap):
    heap.malloc(MiB); aline = _line()
    (g,) = heap.leaks()
    assert (g.size, g.count) == (MiB, 1)
    _assert_top(g.stack, aline, _here())


# ----------------------------------------------------------------------------- clean workload
def test_clean_workload_produces_no_report():
    import random

    rng = random.Random(1234)
    with memguard.GuardedHeap(quarantine_bytes=1 << 16) as h:
        live: dict[int, bytes] = {}
        for i in range(3000):
            op = rng.random()
            if op < 0.45 or not live:
                size = rng.choice([0, 1, 7, 16, 24, 33, 100, 255, 1000, 4096, 5000])
                kind = rng.randrange(3)
                if kind == 0:
                    p = h.malloc(size)
                elif kind == 1:
                    p = h.calloc(1, size)
                else:
                    p = h.memalign(rng.choice([16, 64, 256]), size)
                data = bytes(rng.randrange(256) for _ in range(min(size, 8))) * (size // 8 + 1)
                h.view(p)[:] = data[:size]
                live[p] = data[:size]
            elif op < 0.6:
                p = rng.choice(list(live))
                size = rng.choice([0, 5, 16, 64, 300, 4097])
                q = h.realloc(p, size)
                old = live.pop(p)
                assert bytes(h.view(q))[: min(size, len(old))] == old[:size]
                live[q] = bytes(h.view(q))
            else:
                p = rng.choice(list(live))
                assert bytes(h.view(p)) == live.pop(p)
                h.free(p)
            if i % 500 == 0:
                assert h.check() == []
        assert h.check() == []
        assert h.reports == []
        s = h.stats()
        assert s.live_blocks == len(live)
        assert s.live_bytes == sum(len(v) for v in live.values())
        for p in list(live):
            h.free(p)
            del live[p]
        assert h.stats().live_blocks == 0
        assert h.check() == []
        assert h.reports == []


def test_many_small_blocks_of_one_class_check_clean(heap):
    """check() on a heap full of untouched blocks finds nothing (every slot of the arena)."""
    ps = [heap.malloc(16) for _ in range(500)]
    assert heap.check() == []
    for p in ps:
        heap.free(p)
    assert heap.reports == []
    assert heap.check() == []


def test_realloc_of_many_untouched_blocks_is_clean(heap):
    ps = [heap.malloc(16) for _ in range(200)]
    for p in ps:
        heap.realloc(p, 32)
    assert heap.reports == []


# ----------------------------------------------------------------------------- limits
def test_limit_out_of_bounds_reads_are_not_seen(heap):
    p = heap.malloc(16)
    ctypes.string_at(p + 16, 16)  # reads the rear redzone
    ctypes.string_at(p - 16, 16)  # reads the front redzone
    assert heap.check() == []
    heap.free(p)
    ctypes.string_at(p, 16)  # use-after-free read
    assert heap.check() == []
    assert heap.reports == []


def test_limit_wild_write_jumping_past_the_redzone_is_not_seen(heap):
    """A write that skips the redzone and lands in another block's user bytes is invisible."""
    a = heap.malloc(16)
    b = heap.malloc(16)
    assert abs(b - a) > 16
    ctypes.memset(a + (b - a), 0x41, 16)  # "a[b - a]": really b's bytes
    assert heap.check() == []
    assert bytes(heap.view(b)) == b"\x41" * 16


def test_limit_use_after_free_after_eviction_and_reuse_is_not_seen():
    with memguard.GuardedHeap(on_error="report", quarantine_bytes=0) as h:
        p = h.malloc(32)
        h.free(p)
        q = h.malloc(32)
        assert q == p  # the evicted slot went back to its size class and was reused
        ctypes.memset(p, 0x41, 4)  # the stale pointer writes into the new, live block
        assert h.check() == []
        assert bytes(h.view(q))[:4] == b"AAAA"
