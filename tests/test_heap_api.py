"""The GuardedHeap API: arguments, modes, views, block states, stats, fills, lifetime."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import memguard

MiB = 1 << 20




# ----------------------------------------------------------------------------- arguments
BAD_TYPES = [1.0, 1.5, "3", b"3", None, 3j, [1]]


@pytest.mark.parametrize("value", BAD_TYPES)
def test_malloc_rejects_non_integers(heap, value):
    with pytest.raises(TypeError):
        heap.malloc(value)


@pytest.mark.parametrize("value", BAD_TYPES)
def test_calloc_rejects_non_integers(heap, value):
    with pytest.raises(TypeError):
        heap.calloc(value, 1)
    with pytest.raises(TypeError):
        heap.calloc(1, value)


@pytest.mark.parametrize("value", BAD_TYPES)
def test_realloc_and_memalign_reject_non_integer_sizes(heap, value):
    with pytest.raises(TypeError):
        heap.realloc(0, value)
    with pytest.raises(TypeError):
        heap.memalign(16, value)


@pytest.mark.parametrize("value", [1.0, 16.0, "16", None])
def test_memalign_rejects_non_integer_alignment(heap, value):
    with pytest.raises(TypeError):
        heap.memalign(value, 8)


@pytest.mark.parametrize("value", [1.0, "1", b"1"])
def test_address_arguments_reject_non_integers(heap, value):
    for op in (heap.free, heap.view, heap.block, lambda a: heap.realloc(a, 8)):
        with pytest.raises(TypeError):
            op(value)


def test_negative_sizes_raise_value_error(heap):
    with pytest.raises(ValueError):
        heap.malloc(-1)
    with pytest.raises(ValueError):
        heap.calloc(-1, 4)
    with pytest.raises(ValueError):
        heap.calloc(4, -1)
    with pytest.raises(ValueError):
        heap.realloc(0, -1)
    with pytest.raises(ValueError):
        heap.memalign(16, -5)
    assert heap.reports == []
    assert heap.stats().total_allocs == 0


def test_negative_addresses_raise_value_error(heap):
    for op in (heap.free, heap.view, heap.block, lambda a: heap.realloc(a, 8)):
        with pytest.raises(ValueError):
            op(-16)
    assert heap.reports == []


@pytest.mark.parametrize("size", [2**62, 2**64, 2**64 + 1, 2**100])
def test_impossible_sizes_raise_memory_error(heap, size):
    with pytest.raises(MemoryError):
        heap.malloc(size)
    with pytest.raises(MemoryError):
        heap.realloc(0, size)
    with pytest.raises(MemoryError):
        heap.memalign(64, size)
    s = heap.stats()
    assert (s.total_allocs, s.live_blocks, s.live_bytes) == (0, 0, 0)


@pytest.mark.parametrize("count,size", [(2**32, 2**32), (2**63, 2), (2**64 - 1, 2), (3, 2**63)])
def test_calloc_overflow_raises_memory_error(heap, count, size):
    with pytest.raises(MemoryError):
        heap.calloc(count, size)
    assert heap.stats().total_allocs == 0


@pytest.mark.parametrize("alignment", [0, 1, 2, 4, 3, 24, 48, 100, -16])
def test_bad_alignment_raises_value_error(heap, alignment):
    with pytest.raises(ValueError):
        heap.memalign(alignment, 8)


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        (dict(redzone=8), ValueError),
        (dict(redzone=17), ValueError),
        (dict(redzone=16.0), TypeError),
        (dict(quarantine_bytes=-1), ValueError),
        (dict(quarantine_bytes=1.5), TypeError),
        (dict(stack_depth=-1), ValueError),
        (dict(on_error="ignore"), ValueError),
        (dict(canary="random"), ValueError),
    ],
)
def test_constructor_argument_errors(kwargs, exc):
    with pytest.raises(exc):
        memguard.GuardedHeap(**kwargs)


def test_free_zero_and_none_are_no_ops(heap):
    heap.free(0)
    heap.free(None)
    assert heap.reports == []
    assert heap.stats().total_frees == 0


def test_free_of_a_never_allocated_address_is_a_report_not_a_crash(heap):
    for address in (12345, 1, 2**40, 2**63):
        heap.free(address)
    assert [r.kind for r in heap.reports] == ["bad-free"] * 4
    assert [r.address for r in heap.reports] == [12345, 1, 2**40, 2**63]


# ----------------------------------------------------------------------------- on_error
def test_on_error_raise_records_and_raises_each_family():
    h = memguard.GuardedHeap(on_error="raise")
    p = h.malloc(4)
    ctypes.memset(p + 4, 0, 1)
    with pytest.raises(memguard.HeapCorruptionError) as e1:
        h.check()
    h.free(p)
    with pytest.raises(memguard.DoubleFreeError) as e2:
        h.free(p)
    with pytest.raises(memguard.InvalidFreeError) as e3:
        h.free(12345)
    assert [e.value.report for e in (e1, e2, e3)] == h.reports
    assert [r.kind for r in h.reports] == ["heap-buffer-overflow", "double-free", "bad-free"]
    for e in (e1, e2, e3):
        assert isinstance(e.value, memguard.MemguardError)
        assert e.value.kind == e.value.report.kind
    # still consistent and usable
    q = h.malloc(8)
    h.free(q)
    assert h.check() == []
    h.close()


def test_on_error_report_records_and_carries_on(heap):
    p = heap.malloc(4)
    ctypes.memset(p + 4, 0, 1)
    reports = heap.check()
    assert [r.kind for r in reports] == ["heap-buffer-overflow"]
    heap.free(p)
    heap.free(p)
    heap.free(p + 1)
    assert [r.kind for r in heap.reports] == ["heap-buffer-overflow", "double-free", "bad-free"]
    q = heap.malloc(8)
    assert bytes(heap.view(q)) == b"\xcd" * 8
    assert heap.check() == []


def _run_abort_script(body: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        """
        import ctypes, sys
        import memguard
        h = memguard.GuardedHeap(on_error="abort")
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONFAULTHANDLER": ""},
    )


def test_on_error_abort_aborts_with_the_report_on_stderr():
    proc = _run_abort_script(
        """
        p = h.malloc(10)
        ctypes.memset(p + 10, 0x41, 1)
        print("before", flush=True)
        h.check()
        print("after", flush=True)
        """
    )
    assert proc.returncode == -signal.SIGABRT
    assert "before" in proc.stdout and "after" not in proc.stdout
    assert "ERROR: memguard: heap-buffer-overflow on address 0x" in proc.stderr
    assert "SUMMARY: memguard: heap-buffer-overflow" in proc.stderr


def test_on_error_abort_on_double_free():
    proc = _run_abort_script(
        """
        p = h.malloc(10)
        h.free(p)
        h.free(p)
        """
    )
    assert proc.returncode == -signal.SIGABRT
    assert "ERROR: memguard: double-free" in proc.stderr
    assert "previously freed here:" in proc.stderr


def test_on_error_abort_does_nothing_without_findings():
    proc = _run_abort_script(
        """
        p = h.malloc(10)
        h.free(p)
        h.check()
        h.close()
        print("done")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"


# ----------------------------------------------------------------------------- deferred errors
def test_deferred_errors_record_and_the_next_check_raises_the_first():
    h = memguard.GuardedHeap(on_error="raise")
    p = h.malloc(8)
    with h.deferred_errors():
        h.free(p)
        h.free(p)  # double free: recorded, not raised
        h.free(4096)  # bad free: recorded, not raised
    assert [r.kind for r in h.reports] == ["double-free", "bad-free"]
    with pytest.raises(memguard.DoubleFreeError) as exc:
        h.check()
    assert exc.value.report is h.reports[0]
    assert h.check() == []  # delivered once
    with pytest.raises(memguard.InvalidFreeError):
        h.free(4096)  # outside the block raising is back
    h.close()


def test_deferred_error_is_raised_first_even_when_check_finds_more():
    """The next check() raises the first deferred finding, not a newer one it finds itself."""
    h = memguard.GuardedHeap(on_error="raise")
    p = h.malloc(8)
    with h.deferred_errors():
        h.free(p)
        h.free(p)  # deferred double free
    q = h.malloc(8)
    ctypes.memset(q + 8, 0x41, 1)  # a corruption check() will find
    with pytest.raises(memguard.MemguardError) as exc:
        h.check()
    assert isinstance(exc.value, memguard.DoubleFreeError)
    assert exc.value.report is h.reports[0]
    assert [r.kind for r in h.reports] == ["double-free", "heap-buffer-overflow"]
    h.close(check=False)


def test_deferred_errors_nest_and_are_per_thread():
    import threading

    h = memguard.GuardedHeap(on_error="raise")
    caught = []

    def other():
        try:
            h.free(12345)
        except memguard.InvalidFreeError as e:
            caught.append(e)

    with h.deferred_errors():
        with h.deferred_errors():
            h.free(8)
        h.free(16)  # still deferred in the outer block
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(caught) == 1  # another thread is not deferred
    with pytest.raises(memguard.InvalidFreeError) as exc:
        h.check()
    assert exc.value.report.address == 8
    h.close(check=False)


# ----------------------------------------------------------------------------- view
def test_view_is_a_writable_byte_view_of_exactly_the_user_bytes(heap):
    for size in (0, 1, 13, 4096, 5000):
        p = heap.malloc(size)
        v = heap.view(p)
        assert isinstance(v, memoryview)
        assert v.format == "B"
        assert v.ndim == 1
        assert len(v) == size
        assert v.nbytes == size
        assert not v.readonly
        if size:
            v[-1] = 0x34
            v[0] = 0x12
            assert ctypes.string_at(p, 1) == b"\x12"
            if size > 1:
                assert ctypes.string_at(p + size - 1, 1) == b"\x34"
            ctypes.memset(p, 0x56, 1)
            assert v[0] == 0x56
    assert heap.check() == []


def test_view_of_invalid_addresses_raises_invalid_address_error(heap):
    p = heap.malloc(32)
    q = heap.malloc(MiB)
    heap.free(q)
    for bad in (0, 12345, p + 1, p - 16, q):
        with pytest.raises(memguard.InvalidAddressError) as exc:
            heap.view(bad)
        assert isinstance(exc.value, ValueError)
        assert isinstance(exc.value, memguard.MemguardError)
    heap.free(p)
    with pytest.raises(memguard.InvalidAddressError):
        heap.view(p)  # quarantined
    assert heap.reports == []


def test_view_stays_valid_memory_after_close():
    h = memguard.GuardedHeap()
    p = h.malloc(64)
    big = h.malloc(MiB)
    v, w = h.view(p), h.view(big)
    v[:] = b"x" * 64
    h.close()
    v[0] = ord("y")
    w[-1] = 7
    assert bytes(v) == b"y" + b"x" * 63
    assert w[-1] == 7 and len(w) == MiB


# ----------------------------------------------------------------------------- block()
def test_block_states_and_stacks(heap):
    p = heap.malloc(24); aline = sys._getframe().f_lineno
    info = heap.block(p)
    assert isinstance(info, memguard.BlockInfo)
    assert (info.address, info.size, info.serial, info.state) == (p, 24, 1, "live")
    assert info.alloc_stack[0].lineno == aline
    assert info.alloc_stack[0].name == "test_block_states_and_stacks"
    assert info.free_stack == ()
    heap.free(p); fline = sys._getframe().f_lineno
    info = heap.block(p)
    assert info.state == "quarantined"
    assert info.free_stack[0].lineno == fline
    assert info.alloc_stack[0].lineno == aline
    q = heap.malloc(5)
    assert heap.block(q).serial == 2


def test_block_of_invalid_addresses(heap):
    p = heap.malloc(32)
    for bad in (0, 12345, p + 3):
        with pytest.raises(memguard.InvalidAddressError):
            heap.block(bad)


def test_block_of_large_block_and_after_eviction():
    with memguard.GuardedHeap(quarantine_bytes=0) as h:
        p = h.malloc(MiB)
        assert h.block(p).state == "live"
        assert h.block(p).size == MiB
        h.free(p)
        with pytest.raises(memguard.InvalidAddressError):
            h.block(p)  # memory given back


# ----------------------------------------------------------------------------- stats
def test_stats_counters(heap):
    s = heap.stats()
    assert isinstance(s, memguard.HeapStats)
    assert (s.live_blocks, s.live_bytes, s.peak_bytes, s.total_allocs, s.total_frees) == (0, 0, 0, 0, 0)
    a = heap.malloc(100)
    b = heap.calloc(10, 10)
    c = heap.malloc(MiB)
    s = heap.stats()
    assert (s.live_blocks, s.live_bytes, s.total_allocs, s.total_frees) == (3, 200 + MiB, 3, 0)
    assert s.peak_bytes == 200 + MiB
    assert s.large_blocks == 1
    assert s.arena_bytes > 0
    heap.free(c)
    heap.free(a)
    s = heap.stats()
    assert (s.live_blocks, s.live_bytes, s.total_frees) == (1, 100, 2)
    assert (s.quarantined_blocks, s.quarantined_bytes) == (2, MiB + 100)
    assert s.peak_bytes == 200 + MiB
    b2 = heap.realloc(b, 300)
    s = heap.stats()
    assert (s.live_blocks, s.live_bytes, s.total_allocs, s.total_frees) == (1, 300, 4, 3)
    heap.free(b2)
    heap.free(b2)  # double free does not count
    heap.free(12345)  # bad free neither
    s = heap.stats()
    assert (s.live_blocks, s.live_bytes, s.total_frees) == (0, 0, 4)


def test_stats_with_eviction():
    h = memguard.GuardedHeap(quarantine_bytes=1000)
    try:
        ps = [h.malloc(100) for _ in range(20)]
        for p in ps:
            h.free(p)
        s = h.stats()
        assert s.total_frees == 20
        assert s.live_blocks == 0
        assert s.quarantined_bytes <= 1000
        assert s.quarantined_bytes == 100 * s.quarantined_blocks
        assert s.quarantined_blocks < 20
        # eviction goes down to 15/16 of the budget in one batch
        assert s.quarantined_bytes <= 1000 - 1000 // 16 + 100
    finally:
        h.close()


@pytest.mark.parametrize("size", [100, 4096, 5000, 1 << 20])
def test_the_quarantine_keeps_everything_up_to_its_budget(size):
    """Nothing leaves the quarantine before its budget is exceeded, whichever path frees.

    The budget counts what a block occupies: header (32 bytes), redzones (16 each) and
    the padding to 16 bytes.
    """
    slot = 32 + 16 + ((size + 15) & ~15) + 16
    with memguard.GuardedHeap(quarantine_bytes=3 * slot) as h:
        for p in [h.malloc(size) for _ in range(3)]:
            h.free(p)
        s = h.stats()
        assert (s.quarantined_blocks, s.quarantined_bytes, s.quarantined_slot_bytes) == (3, 3 * size, 3 * slot)
        h.free(h.malloc(size))  # one more: now over budget, down to 15/16 of it
        s = h.stats()
        assert s.quarantined_slot_bytes <= 3 * slot - (3 * slot) // 16
        assert s.total_frees == 4


def test_the_quarantine_counts_the_bytes_its_slots_occupy():
    """Filled with 64-byte blocks, the quarantine reports their slots' bytes, within its budget."""
    budget = 1 << 20
    with memguard.GuardedHeap(quarantine_bytes=budget) as h:
        p = h.malloc(64)
        slot = next(r.slot_size for r in h.walk() if r.kind == "arena")
        assert slot == 32 + 16 + 64 + 16
        h.free(p)
        highest = 0
        for _ in range(2 * budget // 64):  # twice what user bytes alone would hold
            h.free(h.malloc(64))
            s = h.stats()
            assert s.quarantined_slot_bytes == slot * s.quarantined_blocks
            assert s.quarantined_bytes == 64 * s.quarantined_blocks
            assert s.quarantined_slot_bytes <= budget
            highest = max(highest, s.quarantined_slot_bytes)
        assert budget - slot < highest <= budget  # it did fill up to the budget
        quarantined = [sl for r in h.walk() for sl in r.slots if sl.state == "quarantined"]
        assert len(quarantined) == h.stats().quarantined_blocks


def test_a_budget_smaller_than_a_slot_still_quarantines_the_newest_block():
    with memguard.GuardedHeap(quarantine_bytes=64) as h:
        a, b = h.malloc(40), h.malloc(40)
        h.free(a)
        assert h.block(a).state == "quarantined" and h.stats().quarantined_blocks == 1
        h.free(b)  # a leaves, b stays
        assert h.stats().quarantined_blocks == 1
        assert [sl.address for r in h.walk() for sl in r.slots if sl.state == "quarantined"] == [b]
    with memguard.GuardedHeap(quarantine_bytes=0) as h:
        h.free(h.malloc(40))
        assert h.stats().quarantined_blocks == 0


# ----------------------------------------------------------------------------- eviction on slow-path frees
def test_free_of_a_large_block_that_triggers_a_clean_eviction():
    """Slow-path frees (large, aligned, realloc) evicting clean blocks must not fail."""
    h = memguard.GuardedHeap(on_error="report", quarantine_bytes=MiB + MiB // 2)
    try:
        a = h.malloc(MiB)
        h.free(a)
        b = h.malloc(MiB)
        h.free(b)  # a leaves the quarantine, nothing wrong with it
        assert h.reports == []
        s = h.stats()
        assert (s.live_blocks, s.total_frees, s.quarantined_blocks) == (0, 2, 1)
    finally:
        h.close(check=False)


def test_realloc_that_triggers_a_clean_eviction():
    h = memguard.GuardedHeap(on_error="report", quarantine_bytes=64)
    try:
        p = h.malloc(64)
        for size in (80, 96, 128, 16):
            p = h.realloc(p, size)
        assert h.reports == []
        assert h.stats().live_blocks == 1
    finally:
        h.close(check=False)


# ----------------------------------------------------------------------------- fills and contents
@pytest.mark.parametrize("size", [1, 16, 100, 4096, MiB])
def test_malloc_fills_with_0xcd_and_free_poisons_with_0xdd(heap, size):
    p = heap.malloc(size)
    assert ctypes.string_at(p, size) == b"\xcd" * size
    heap.free(p)
    assert ctypes.string_at(p, size) == b"\xdd" * size


def test_free_poisons_the_padding_to_16_bytes(heap):
    p = heap.malloc(5)
    heap.free(p)
    assert ctypes.string_at(p, 16) == b"\xdd" * 16


@pytest.mark.parametrize("count,size", [(1, 0), (3, 7), (100, 40), (1, 4096), (2, MiB)])
def test_calloc_zero_fills(heap, count, size):
    # dirty a slot first so a reused slot would show garbage
    q = heap.malloc(count * size)
    heap.free(q)
    p = heap.calloc(count, size)
    assert bytes(heap.view(p)) == bytes(count * size)
    assert heap.block(p).size == count * size
    assert heap.check() == []


def test_realloc_zero_is_malloc(heap):
    p = heap.realloc(0, 10)
    assert heap.block(p).state == "live"
    assert bytes(heap.view(p)) == b"\xcd" * 10


@pytest.mark.parametrize("old,new", [(10, 20), (20, 10), (100, 5000), (5000, 100), (MiB, 2 * MiB), (16, 16), (8, 0)])
def test_realloc_preserves_contents_and_moves(heap, old, new):
    p = heap.malloc(old)
    data = bytes(i % 251 for i in range(old))
    heap.view(p)[:] = data
    q = heap.realloc(p, new)
    assert q != p  # always moves
    got = bytes(heap.view(q))
    keep = min(old, new)
    assert len(got) == new
    assert got[:keep] == data[:keep]
    assert got[keep:] == b"\xcd" * (new - keep)
    assert heap.block(p).state == "quarantined"
    assert heap.check() == []
    assert heap.reports == []


@pytest.mark.parametrize("alignment", [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096])
@pytest.mark.parametrize("size", [0, 1, 24, 5000])
def test_memalign_alignment(heap, alignment, size):
    p = heap.memalign(alignment, size)
    assert p % alignment == 0
    assert len(heap.view(p)) == size
    assert ctypes.string_at(p, size) == b"\xcd" * size
    heap.free(p)
    assert heap.reports == []


def test_fixed_canary_shows_0xfd_bytes():
    h = memguard.GuardedHeap(canary="fixed", on_error="report")
    try:
        p = h.malloc(13)
        assert ctypes.string_at(p - 16, 16) == b"\xfd" * 16
        assert ctypes.string_at(p + 13, 19) == b"\xfd" * 19
        ctypes.memset(p + 13, 0x41, 1)
        (r,) = h.check()
        assert r.expected == b"\xfd"
        assert "[41]" in str(r)
        assert " fd " in str(r)
        # the limitation the keyed canary fixes: writing 0xFD is invisible in fixed mode
        ctypes.memset(p + 13, 0xFD, 3)
        assert h.check() == []
    finally:
        h.close(check=False)


def test_keyed_canary_is_not_0xfd_and_differs_between_heaps():
    h1 = memguard.GuardedHeap()
    h2 = memguard.GuardedHeap()
    try:
        rz = []
        for h in (h1, h2):
            p = h.malloc(16)
            front = ctypes.string_at(p - 16, 16)
            rear = ctypes.string_at(p + 16, 16)
            assert front != b"\xfd" * 16 and rear != b"\xfd" * 16
            assert 0xFD not in front + rear
            rz.append(front + rear)
        assert rz[0] != rz[1]  # per-heap secret
    finally:
        h1.close()
        h2.close()


@pytest.mark.parametrize("redzone", [32, 64])
def test_bigger_redzones_catch_longer_overflows(redzone):
    h = memguard.GuardedHeap(redzone=redzone, on_error="report")
    try:
        p = h.malloc(16)
        ctypes.memset(p + 16 + redzone - 1, 0x41, 1)
        ctypes.memset(p - redzone, 0x41, 1)
        reports = sorted((r.kind, r.offset) for r in h.check())
        assert reports == [("heap-buffer-overflow", 16 + redzone - 1), ("heap-buffer-underflow", -redzone)]
    finally:
        h.close(check=False)


def test_stack_depth_limits_frames():
    def inner(h):
        return h.malloc(8)

    def outer(h):
        return inner(h)

    h = memguard.GuardedHeap(stack_depth=2)
    p = outer(h)
    stack = h.block(p).alloc_stack
    # Qualified names where the interpreter has them (3.11+), plain names on 3.10.
    assert [f.name.rsplit(".", 1)[-1] for f in stack] == ["inner", "outer"]
    assert len(stack) == 2
    assert all(isinstance(f, memguard.Frame) for f in stack)
    h0 = memguard.GuardedHeap(stack_depth=0)
    assert h0.block(h0.malloc(8)).alloc_stack == ()
    h.close()
    h0.close()


def test_stacks_skip_memguard_frames(heap):
    p = heap.malloc(8)
    assert all("memguard" + os.sep not in f.filename or "tests" in f.filename for f in heap.block(p).alloc_stack)
    assert heap.block(p).alloc_stack[0].filename == __file__


def test_cached_stacks_follow_the_caller(heap):
    """Stack ids are cached per call site; every stack must still name its real callers."""

    def helper() -> int:
        return heap.malloc(8)

    def via_a() -> int:
        return helper()

    def via_b() -> int:
        return helper()

    def two_lines() -> tuple[int, int]:
        x = helper()
        y = helper()
        return x, y

    def gen():  # a generator parent, resumed from two different callers
        while True:
            yield helper()

    g = gen()

    def resume_1() -> int:
        return next(g)

    def resume_2() -> int:
        return next(g)

    def names(p: int) -> list[str]:
        return [f.name.rsplit(".", 1)[-1] for f in heap.block(p).alloc_stack[:3]]

    for _ in range(3):  # again and again: the second round comes from the caches
        assert names(via_a())[:2] == ["helper", "via_a"]
        assert names(via_b())[:2] == ["helper", "via_b"]
        x, y = two_lines()
        sx, sy = heap.block(x).alloc_stack, heap.block(y).alloc_stack
        assert sx[1].name.endswith("two_lines") and sy[1].name.endswith("two_lines")
        assert sy[1].lineno == sx[1].lineno + 1
        assert names(resume_1()) == ["helper", "gen", "resume_1"]
        assert names(resume_2()) == ["helper", "gen", "resume_2"]
    heap.free(heap.malloc(1))
    for p in [helper() for _ in range(3)]:
        assert names(p)[:2] == ["helper", "<listcomp>"] or names(p)[1] == "test_cached_stacks_follow_the_caller"


# ----------------------------------------------------------------------------- lifetime
def test_close_then_every_call_raises_heap_closed_error():
    h = memguard.GuardedHeap()
    p = h.malloc(10)
    assert h.close() == []
    assert h.closed
    calls = [
        lambda: h.malloc(1), lambda: h.malloc(10000), lambda: h.calloc(1, 1), lambda: h.realloc(p, 3),
        lambda: h.realloc(0, 3), lambda: h.memalign(64, 3), lambda: h.free(p), lambda: h.view(p),
        lambda: h.block(p), h.check, h.snapshot, h.leaks,
    ]
    for call in calls:
        with pytest.raises(memguard.HeapClosedError):
            call()
    assert issubclass(memguard.HeapClosedError, memguard.MemguardError)
    assert h.close() == []  # closing twice is a no-op


def test_close_checks_one_last_time():
    h = memguard.GuardedHeap(on_error="report")
    p = h.malloc(10)
    ctypes.memset(p + 10, 0, 1)
    reports = h.close()
    assert [r.kind for r in reports] == ["heap-buffer-overflow"]
    h2 = memguard.GuardedHeap()
    p = h2.malloc(10)
    ctypes.memset(p + 10, 0, 1)
    with pytest.raises(memguard.HeapCorruptionError):
        h2.close()
    assert h2.closed
    h3 = memguard.GuardedHeap()
    p = h3.malloc(10)
    ctypes.memset(p + 10, 0, 1)
    assert h3.close(check=False) == []
    assert h3.reports == []


def test_context_manager_closes_and_checks():
    with memguard.GuardedHeap() as h:
        assert isinstance(h, memguard.GuardedHeap)
        h.malloc(5)
    assert h.closed
    with pytest.raises(memguard.HeapCorruptionError):
        with memguard.GuardedHeap() as h2:
            p = h2.malloc(3)
            ctypes.memset(p + 3, 1, 1)
    assert h2.closed


def test_context_manager_does_not_mask_the_body_exception():
    with pytest.raises(KeyError):
        with memguard.GuardedHeap() as h:
            p = h.malloc(3)
            ctypes.memset(p + 3, 1, 1)
            raise KeyError("body")
    assert h.closed
    assert [r.kind for r in h.reports] == ["heap-buffer-overflow"]


def test_repr_mentions_state(heap):
    heap.malloc(10)
    assert "1 live blocks" in repr(heap)
    heap.close()
    assert "closed" in repr(heap)


def test_check_since_a_mark_verifies_only_blocks_allocated_or_freed_after_it() -> None:
    heap = memguard.GuardedHeap(on_error="report")
    old_freed = heap.malloc(24)
    heap.free(old_freed)
    old_live = heap.malloc(24)
    mark = heap.mark()
    assert mark.records == () and mark.serial == heap.serial
    young_freed = heap.malloc(40)
    heap.free(young_freed)
    young_live = heap.malloc(40)
    for p in (old_freed, young_freed):
        ctypes.memset(p + 1, 0x41, 1)           # use after free
    for p, n in ((old_live, 24), (young_live, 40)):
        ctypes.memset(p + n, 0x41, 1)           # one byte past the end
    found = {(r.kind, r.address) for r in heap.check(since=mark)}
    assert found == {("heap-use-after-free", young_freed), ("heap-buffer-overflow", young_live)}
    found = {(r.kind, r.address) for r in heap.check()}
    assert found == {("heap-use-after-free", old_freed), ("heap-buffer-overflow", old_live)}
    with pytest.raises(TypeError):
        heap.check(since=3)  # type: ignore[arg-type]


def test_leaks_since_a_mark_without_walking_when_everything_was_freed() -> None:
    heap = memguard.GuardedHeap()
    keep = heap.malloc(8)
    mark = heap.mark()
    heap.free(heap.malloc(16))
    assert heap.leaks(since=mark) == []
    heap.free(keep)                 # frees an older block...
    leaked = heap.malloc(32)        # ...while a young one stays: the walk must find it
    groups = heap.leaks(since=mark)
    assert [(g.size, g.count, g.addresses) for g in groups] == [(32, 1, (leaked,))]


def test_reporting_records_without_raising_and_restores_on_error() -> None:
    heap = memguard.GuardedHeap(on_error="raise")
    p = heap.malloc(8)
    heap.free(p)
    with heap.reporting() as before:
        assert before == "raise" and heap.on_error == "report"
        heap.free(p)  # a double free: recorded, not raised
    assert heap.on_error == "raise"
    assert [r.kind for r in heap.reports] == ["double-free"]
    with pytest.raises(memguard.DoubleFreeError):
        heap.free(p)


def test_blocks_bigger_than_the_header_can_describe_raise_memory_error(heap):
    from memguard.heap.guarded import MAX_BLOCK

    for op in (lambda: heap.malloc(MAX_BLOCK + 1), lambda: heap.memalign(64, MAX_BLOCK + 1), lambda: heap.calloc(2, MAX_BLOCK)):
        with pytest.raises(MemoryError, match="at most"):
            op()
    s = heap.stats()
    assert (s.total_allocs, s.live_blocks, s.large_blocks) == (0, 0, 0)


def test_a_subclass_that_overrides_malloc_and_free_is_called():
    calls: list[str] = []

    class Counting(memguard.GuardedHeap):
        def malloc(self, size: int) -> int:
            calls.append("malloc")
            return super().malloc(size)

        def free(self, address: int) -> None:
            calls.append("free")
            super().free(address)

    with Counting() as h:
        h.free(h.malloc(24))
        assert calls == ["malloc", "free"]
        assert h.stats().total_frees == 1


def test_bound_fast_paths_keep_their_heap_alive():
    import gc

    h = memguard.GuardedHeap()
    m, f = h.malloc, h.free
    assert m.__doc__ == memguard.GuardedHeap.malloc.__doc__
    assert f.__qualname__ == "GuardedHeap.free"
    del h
    gc.collect()
    p = m(40)
    f(p)
    with pytest.raises(memguard.DoubleFreeError):  # still the same heap
        f(p)


@pytest.mark.parametrize("delta", [-48, -40, -16, -1, 16, 32, 48, 64])
def test_free_near_a_slot_start_is_a_bad_free_of_the_right_block(heap, delta):
    first = heap.malloc(32)  # the first slot of its arena: -48 reads before the arena's first header
    heap.free(first + delta)
    (r,) = heap.reports
    assert r.kind == "bad-free"
    assert heap.block(first).state == "live"
    assert bytes(heap.view(first)) == b"\xcd" * 32
    heap.free(first)
    assert heap.check() == []
    assert len(heap.reports) == 1
