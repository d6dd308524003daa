"""The heap blames the right block with the right kind, and its arguments and lifetime agree with its docs."""

from __future__ import annotations

import ctypes

import pytest

import memguard
from memguard.errors import HeapClosedError
from memguard.heap.guarded import InvalidAddressError
from memguard.heap.layout import HEADER_SIZE
from memguard.kinds import rule_kind


@pytest.fixture
def heap():
    h = memguard.GuardedHeap(on_error="report")
    yield h
    h.close(check=False)


def _header_start(heap: memguard.GuardedHeap, p: int) -> int:
    return p - heap.redzone - HEADER_SIZE


# ----------------------------------------------------------------------------- header damage
def test_damaged_header_is_header_corruption_of_its_own_block(heap):
    a = heap.malloc(16)
    b = heap.malloc(16)
    ctypes.memset(_header_start(heap, b) + 2, 0x41, 4)  # inside b's size/serial, a left intact
    reports = heap.check()
    assert [(r.kind, r.address) for r in reports] == [("heap-header-corruption", b)]
    assert rule_kind("header-corruption") == reports[0].kind  # the documented suppression rule matches
    assert heap.check() == []  # reported once
    heap.free(a)
    heap.free(b)  # a retired block: never reported twice, never reused
    assert len(heap.reports) == 1


def test_header_damage_found_at_free_is_header_corruption(heap):
    p = heap.malloc(24)
    ctypes.memset(_header_start(heap, p), 0x00, 4)
    heap.free(p)
    assert [(r.kind, r.address, r.size) for r in heap.reports] == [("heap-header-corruption", p, 0)]


@pytest.mark.parametrize("field", ["alloc_stack", "free_stack"])
def test_the_seal_covers_the_stack_ids(heap, field):
    """A 4-byte stray write over a recorded stack id is caught, never silently believed."""
    p = heap.malloc(32)
    offsets = {"alloc_stack": 12, "free_stack": 28}
    if field == "free_stack":
        heap.free(p)
    ctypes.memmove(_header_start(heap, p) + offsets[field], b"\x45\x23\x01\x00", 4)
    if field == "alloc_stack":
        with pytest.raises(InvalidAddressError):
            heap.block(p)
        heap.free(p)
    else:
        heap.check()
    assert [(r.kind, r.address) for r in heap.reports] == [("heap-header-corruption", p)]


def test_stray_write_before_a_block_no_longer_changes_its_allocation_stack(heap):
    p = heap.malloc(16)
    ctypes.memmove(p - 28, b"\x45\x23\x01\x00", 4)  # 28 bytes before the block: inside the header
    heap.free(p)
    assert [r.kind for r in heap.reports] == ["heap-header-corruption"]


def _flip(address: int, n: int) -> None:
    """Change every one of ``n`` bytes at ``address`` (a fixed fill would leave the redzone
    bytes that happen to equal it, keyed at random per heap, unchanged: 1 in 256 each)."""
    old = ctypes.string_at(address, n)
    ctypes.memmove(address, bytes(x ^ 0xFF for x in old), n)


def _overflow_into_next(heap: memguard.GuardedHeap) -> tuple[int, int]:
    a = heap.malloc(13)
    b = heap.malloc(13)
    assert b - a == heap.redzone + HEADER_SIZE + 16 + heap.redzone  # neighbours in one arena
    # From a's end through its padding and rear redzone, then 8 bytes of b's header.
    _flip(a + 13, 3 + heap.redzone + 8)
    return a, b


@pytest.mark.parametrize("found_by", ["free of the next block", "check"])
def test_overflow_into_the_next_header_is_blamed_on_the_block_that_overflowed(heap, found_by):
    a, b = _overflow_into_next(heap)
    if found_by == "check":
        heap.check()
    else:
        heap.free(b)
    assert len(heap.reports) == 1
    report = heap.reports[0]
    assert (report.kind, report.address, report.size, report.offset) == ("heap-buffer-overflow", a, 13, 13)
    assert f"0x{b:x}" in report.message and "header of the next block" in report.message
    # Each corruption once: a's redzone was restored, b is retired.
    assert heap.check() == []
    heap.free(a)
    heap.free(b)
    assert len(heap.reports) == 1


def test_use_after_free_write_into_the_next_header_is_blamed_on_the_freed_block(heap):
    a = heap.malloc(13)
    b = heap.malloc(13)
    heap.free(a)
    _flip(a, 16 + heap.redzone + 4)
    heap.check()
    kinds = {(r.kind, r.address) for r in heap.reports}
    assert kinds == {("heap-use-after-free", a)}
    assert any(f"0x{b:x}" in r.message for r in heap.reports)


def test_an_intact_neighbour_is_not_blamed(heap):
    a = heap.malloc(13)
    b = heap.malloc(13)
    ctypes.memset(_header_start(heap, b), 0x42, 8)  # b's header only: a's redzone intact
    heap.free(b)
    assert [(r.kind, r.address) for r in heap.reports] == [("heap-header-corruption", b)]
    heap.free(a)
    assert len(heap.reports) == 1


def test_large_block_header_damage_is_header_corruption(heap):
    p = heap.malloc(10000)
    ctypes.memset(_header_start(heap, p) + 4, 0x42, 4)
    heap.free(p)
    assert [(r.kind, r.address) for r in heap.reports] == [("heap-header-corruption", p)]


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.malloc(True),
        lambda h: h.malloc(False),
        lambda h: h.calloc(True, 4),
        lambda h: h.calloc(4, True),
        lambda h: h.memalign(16, True),
        lambda h: h.memalign(True, 16),
        lambda h: h.realloc(0, True),
        lambda h: h.realloc(True, 16),
        lambda h: h.free(True),
        lambda h: h.view(True),
        lambda h: h.block(True),
    ],
)
def test_a_bool_is_never_a_size_count_alignment_or_address(heap, call):
    with pytest.raises(TypeError):
        call(heap)
    assert heap.reports == [] and heap.stats().live_blocks == 0


def test_leaks_since_a_negative_count_is_rejected(heap):
    with pytest.raises(ValueError):
        heap.leaks(since=-5)
    with pytest.raises(TypeError):
        heap.leaks(since=True)
    assert heap.leaks(since=0) == []


# ----------------------------------------------------------------------------- after close
def test_after_close_only_the_final_counters_answer():
    heap = memguard.GuardedHeap()
    heap.free(heap.malloc(16))
    p = heap.malloc(16)
    heap.close(check=False)
    stats = heap.stats()
    assert (stats.total_allocs, stats.total_frees, stats.live_blocks) == (2, 1, 1)
    assert (stats.quarantined_blocks, stats.arena_bytes, stats.large_blocks) == (0, 0, 0)
    assert heap.serial == 2
    for call in (heap.mark, heap.snapshot, heap.leaks, heap.check, heap.walk, lambda: heap.malloc(1), lambda: heap.block(p)):
        with pytest.raises(HeapClosedError):
            call()


def test_leaks_inherited_must_be_a_bool(heap: memguard.GuardedHeap) -> None:
    with pytest.raises(TypeError, match="inherited must be a bool"):
        heap.leaks(inherited="yes")  # type: ignore[arg-type]
    assert heap.leaks(inherited=True) == []
