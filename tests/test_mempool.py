"""MemPool: custom-allocator annotations (overflow between regions, use after return, bad returns, leaks)."""

from __future__ import annotations

import pytest

import memguard
from memguard import GuardedHeap, MemPool, PoolError
from memguard.allocators.mempool import FREED, FRESH, NO_MANS_LAND, all_leaks


@pytest.fixture
def setup():
    heap = GuardedHeap(on_error="report")
    chunk = heap.malloc(512)
    pool = MemPool(heap, name="arena", quarantine_bytes=64)
    pool.add_chunk(chunk)
    raw = heap.view(chunk)
    yield heap, pool, chunk, raw
    if not pool.destroyed:
        pool.destroy()
    heap.close(check=False)


def carve(pool: MemPool, address: int, size: int) -> int:
    return pool.alloc(address, size)


def test_chunk_is_poisoned_and_regions_are_filled(setup) -> None:
    heap, pool, chunk, raw = setup
    assert bytes(raw) == bytes([NO_MANS_LAND]) * 512
    carve(pool, chunk + 32, 10)
    assert bytes(raw[32:42]) == bytes([FRESH]) * 10 and raw[42] == NO_MANS_LAND
    pool.alloc(chunk + 64, 4, fill=0)
    assert bytes(raw[64:68]) == bytes(4)
    pool.free(chunk + 32)
    assert bytes(raw[32:42]) == bytes([FREED]) * 10
    region = pool.region(chunk + 32)
    assert region.state == "quarantined" and region.alloc_stack[0].name == "carve" and region.free_stack
    assert pool.check() == [] and heap.reports == []


def test_overflow_into_the_gap_is_reported_at_free_with_stacks(setup) -> None:
    heap, pool, chunk, raw = setup
    a = carve(pool, chunk, 40)
    carve(pool, chunk + 64, 40)
    raw[40:43] = b"abc"  # three bytes past the end of a
    assert pool.free(a) == []
    (r,) = heap.reports
    assert r.kind == "pool-buffer-overflow" and r.address == a and r.size == 40 and r.offset == 40 and r.count == 3
    assert r.found == b"abc" and r.expected == bytes([NO_MANS_LAND]) * 3
    assert "0 byte(s) past the end of a 40-byte region of pool 'arena'" in r.message
    assert r.alloc_stack[0].name == "carve" and r.stack[0].name.startswith("test_overflow")
    assert "pool-buffer-overflow" in str(r) and "[61]" in str(r)  # hexdump brackets the bad bytes
    assert bytes(raw[40:43]) == bytes([NO_MANS_LAND]) * 3  # repaired: reported once
    assert pool.check() == []


def test_underflow_is_attributed_to_the_region_on_the_right(setup) -> None:
    heap, pool, chunk, raw = setup
    b = carve(pool, chunk + 64, 16)
    raw[62] = 1
    (r,) = pool.check()
    assert r.kind == "pool-buffer-underflow" and r.address == b and r.offset == -2


def test_use_after_return_is_reported_with_both_stacks(setup) -> None:
    heap, pool, chunk, raw = setup
    a = carve(pool, chunk + 16, 32)
    pool.free(a)
    raw[16 + 5] = 0x41
    (r,) = heap.check()
    assert r.kind == "pool-use-after-free" and r.address == a and r.offset == 5
    assert r.alloc_stack[0].name == "carve" and r.free_stack[0].name.startswith("test_use_after_return")
    assert heap.check() == []  # repaired


def test_quarantine_releases_verified_regions_for_reuse(setup) -> None:
    heap, pool, chunk, raw = setup
    addrs = [carve(pool, chunk + i * 64, 32) for i in range(4)]
    assert pool.free(addrs[0]) == []
    assert pool.free(addrs[1]) == []  # 64 bytes quarantined: within budget
    raw[addrs[0] - chunk] = 7  # written after return, before it leaves the quarantine
    assert pool.free(addrs[2]) == [addrs[0]]
    assert [r.kind for r in heap.reports] == ["pool-use-after-free"]
    assert bytes(raw[0:32]) == bytes([NO_MANS_LAND]) * 32  # back to no-man's land
    s = pool.stats()
    assert (s.live_regions, s.quarantined_regions, s.total_allocs, s.total_frees) == (1, 2, 4, 3)


def test_double_free_interior_and_foreign_returns(setup) -> None:
    heap, pool, chunk, raw = setup
    a = carve(pool, chunk, 24)
    pool.free(a)
    assert pool.free(a) is None
    b = carve(pool, chunk + 64, 24)
    assert pool.free(b + 8) is None
    assert pool.free(chunk + 200) is None
    assert pool.free(12345) is None
    kinds = [r.kind for r in heap.reports]
    assert kinds == ["pool-double-free", "pool-bad-free", "pool-bad-free", "pool-bad-free"]
    dbl, interior, gap, foreign = heap.reports
    assert dbl.free_stack and dbl.alloc_stack and "double-free" in dbl.message
    assert interior.address == b and interior.offset == 8 and "8 bytes inside of 24-byte region" in interior.message
    assert "not a region" in gap.message and "outside every chunk" in foreign.message
    assert pool.region(b).state == "live"  # nothing changed


def test_findings_raise_pool_error_under_raise_policy() -> None:
    heap = GuardedHeap()
    chunk = heap.malloc(128)
    pool = MemPool(heap)
    pool.add_chunk(chunk)
    a = pool.alloc(chunk, 8)
    pool.free(a)
    with pytest.raises(PoolError, match="double-free"):
        pool.free(a)
    pool.alloc(chunk + 16, 8)
    with pytest.raises(PoolError, match="overlaps"):
        pool.alloc(chunk + 20, 8)
    heap.on_error = "report"
    pool.destroy()
    heap.close(check=False)


def test_overlapping_hand_out_is_refused(setup) -> None:
    heap, pool, chunk, raw = setup
    carve(pool, chunk, 32)
    assert pool.alloc(chunk + 16, 32) == 0
    (r,) = heap.reports
    assert r.kind == "pool-overlap" and "overlaps the live 32-byte region" in r.message
    assert len(pool.regions()) == 1


def test_reusing_a_quarantined_region_verifies_its_poison(setup) -> None:
    heap, pool, chunk, raw = setup
    a = carve(pool, chunk, 32)
    pool.free(a)
    raw[3] = 9
    assert pool.alloc(chunk, 32) == a
    assert [r.kind for r in heap.reports] == ["pool-use-after-free"]
    assert pool.region(a).state == "live"


def test_move_keeps_content_and_allocation_stack(setup) -> None:
    heap, pool, chunk, raw = setup
    a = carve(pool, chunk, 8)
    raw[0:8] = b"payload!"
    pool.move(a, chunk + 128)
    assert bytes(raw[128:136]) == b"payload!"
    assert pool.region(chunk + 128).alloc_stack[0].name == "carve"
    assert pool.region(a).state == "quarantined"
    with pytest.raises(ValueError, match="overlap"):
        pool.move(chunk + 128, chunk + 130)


def test_leaks_and_all_leaks_replace_the_chunk_by_its_regions(setup) -> None:
    heap, pool, chunk, raw = setup
    for offset in (0, 64):
        carve(pool, chunk + offset, 24)
    other = heap.malloc(7)
    (group,) = pool.leaks()
    assert (group.size, group.count, group.stack[0].name) == (48, 2, "carve")
    groups = all_leaks(heap)
    assert sorted((g.size, g.count) for g in groups) == [(7, 1), (48, 2)]
    reports = pool.destroy()
    assert [r.kind for r in reports] == ["memory-leak", "memory-leak"]
    assert reports[0].message.startswith(f"Leak at 0x{chunk:x} (") and "in carve" in reports[0].message
    heap.free(other)


def test_freed_chunk_is_noticed_at_check(setup) -> None:
    heap, pool, chunk, raw = setup
    heap.free(chunk)
    (r,) = [r for r in heap.check() if r.extra.get("pool") == "arena"]
    assert r.kind == "pool-bad-free" and "was freed while the pool still uses it" in r.message


def test_bad_input(setup) -> None:
    heap, pool, chunk, raw = setup
    with pytest.raises(TypeError):
        pool.alloc("0x10", 4)
    with pytest.raises(ValueError):
        pool.alloc(chunk, -1)
    with pytest.raises(ValueError):
        pool.alloc(chunk, 0)
    with pytest.raises(memguard.InvalidAddressError):
        pool.alloc(chunk + 500, 64)  # runs past the chunk
    with pytest.raises(memguard.InvalidAddressError):
        pool.alloc(42, 4)
    with pytest.raises(ValueError):
        pool.alloc(chunk, 4, fill=256)
    with pytest.raises(TypeError):
        pool.free(1.5)
    with pytest.raises(ValueError):
        pool.add_chunk(chunk)  # already a chunk
    with pytest.raises(memguard.InvalidAddressError):
        pool.add_chunk(123)
    with pytest.raises(ValueError):
        pool.add_chunk(heap.malloc(16), offset=8, size=16)
    with pytest.raises(TypeError):
        MemPool("heap")
    with pytest.raises(ValueError):
        MemPool(heap, quarantine_bytes=-1)
    pool.destroy()
    with pytest.raises(memguard.MemguardError, match="destroyed"):
        pool.alloc(chunk, 4)
    assert pool.destroy() == []


# ----------------------------------------------------------------------------- a freed chunk
def _pool_reports(heap: GuardedHeap) -> list[memguard.Report]:
    return [r for r in heap.reports if r.extra.get("pool") == "arena"]


def free_the_chunk(heap: GuardedHeap, chunk: int) -> None:
    heap.free(chunk)


def test_free_into_a_freed_chunk_reports_the_chunk_once_with_its_free_stack(setup) -> None:
    heap, pool, chunk, raw = setup
    a = carve(pool, chunk + 16, 24)
    b = carve(pool, chunk + 64, 24)
    free_the_chunk(heap, chunk)
    assert pool.free(a) is None
    assert pool.free(b) is None  # the same chunk: reported once
    (r,) = _pool_reports(heap)
    assert r.kind == "pool-bad-free" and r.address == chunk and r.size == 512
    assert f"the chunk 0x{chunk:x} of pool 'arena' was freed while the pool still uses it" in r.message
    assert "(2 live region(s) in it)" in r.message
    assert r.free_stack and r.free_stack[0].name == "free_the_chunk"
    assert r.stack[0].name.startswith("test_free_into_a_freed_chunk")
    assert "pool-buffer-overflow" not in [k.kind for k in heap.reports]
    assert pool.regions() == [] and pool.stats().live_regions == 0
    assert not any(r.extra.get("pool") == "arena" for r in heap.check())  # not again at check()
    assert pool.destroy() == []  # its regions are not leaks: they went with the chunk


def test_alloc_from_a_freed_chunk_is_refused(setup) -> None:
    heap, pool, chunk, raw = setup
    free_the_chunk(heap, chunk)
    assert pool.alloc(chunk + 16, 24) == 0
    assert pool.alloc(chunk + 64, 24) == 0
    (r,) = _pool_reports(heap)
    assert "the pool hands out nothing more from it" in r.message and r.free_stack[0].name == "free_the_chunk"
    assert pool.regions() == [] and pool.stats().total_allocs == 0
    # The freed block's poison was not touched: the heap finds no use-after-free.
    assert not [k for k in heap.check() if k.kind == "heap-use-after-free"]


def test_alloc_from_a_freed_chunk_raises_with_on_error_raise() -> None:
    heap = GuardedHeap(on_error="raise")
    try:
        chunk = heap.malloc(256)
        pool = MemPool(heap, name="arena")
        pool.add_chunk(chunk)
        free_the_chunk(heap, chunk)
        with pytest.raises(PoolError, match="was freed while the pool still uses it"):
            pool.alloc(chunk + 16, 8)
        assert pool.alloc(chunk + 16, 8) == 0  # reported once; still refused
        pool.destroy()
    finally:
        heap.close(check=False)


def test_move_out_of_a_freed_chunk_is_refused(setup) -> None:
    heap, pool, chunk, raw = setup
    a = carve(pool, chunk + 16, 24)
    other = heap.malloc(256)
    pool.add_chunk(other)
    free_the_chunk(heap, chunk)
    assert pool.move(a, other + 16) is None
    (r,) = _pool_reports(heap)
    assert r.address == chunk and r.free_stack[0].name == "free_the_chunk"
    assert pool.regions() == []  # nothing was moved into the live chunk
    heap.free(other)


def test_freed_chunk_whose_memory_now_belongs_to_another_block_is_not_written() -> None:
    heap = GuardedHeap(on_error="report", quarantine_bytes=0)
    try:
        chunk = heap.malloc(512)
        pool = MemPool(heap, name="arena")
        pool.add_chunk(chunk)
        a = carve(pool, chunk + 16, 24)
        free_the_chunk(heap, chunk)
        newcomer = heap.malloc(512)
        assert newcomer == chunk  # the same memory, now another block
        heap.view(newcomer)[:] = b"\x11" * 512
        assert pool.alloc(chunk + 64, 8) == 0
        assert pool.free(a) is None
        (r,) = _pool_reports(heap)
        assert "was freed and its memory now belongs to another block" in r.message
        assert bytes(heap.view(newcomer)) == b"\x11" * 512  # the pool wrote nothing into it
        heap.free(newcomer)
        pool.destroy()
    finally:
        heap.close(check=False)


def test_quarantine_eviction_never_writes_into_a_freed_chunk() -> None:
    heap = GuardedHeap(on_error="report")
    try:
        first, second = heap.malloc(256), heap.malloc(256)
        pool = MemPool(heap, name="arena", quarantine_bytes=30)
        pool.add_chunk(first)
        pool.add_chunk(second)
        pool.free(carve(pool, first + 16, 24))  # quarantined in the first chunk
        free_the_chunk(heap, first)
        pool.free(carve(pool, second + 16, 24))  # evicts the first region: its chunk is gone
        (r,) = _pool_reports(heap)
        assert r.address == first and r.free_stack[0].name == "free_the_chunk"
        # Eviction would have refilled the region with 0xFA: the freed block's poison is intact.
        assert not [k for k in heap.check() if k.kind == "heap-use-after-free"]
        heap.free(second)
        pool.destroy()
    finally:
        heap.close(check=False)


def test_live_serial_names_the_live_block_only(setup) -> None:
    heap, pool, chunk, raw = setup
    assert heap.live_serial(chunk) == heap.block(chunk).serial > 0
    assert heap.live_serial(0) == heap.live_serial(chunk + 1) == heap.live_serial("x") == 0  # type: ignore[arg-type]
    free_the_chunk(heap, chunk)
    assert heap.live_serial(chunk) == 0
