"""``check()`` verifies an arena at a time: every seal in one sum of big integers, every
freed slot's bytes in one comparison.  Whatever one byte is damaged, in a full or a
partly carved arena, among freed and live slots, the finding is the slot-by-slot one."""

from __future__ import annotations

import ctypes
import random

import pytest

import memguard
from memguard.heap import verify


def _heap(redzone: int, canary: str) -> tuple[memguard.GuardedHeap, list[int], list[int]]:
    heap = memguard.GuardedHeap(on_error="report", redzone=redzone, canary=canary, quarantine_bytes=64 << 20)
    blocks = [heap.malloc(40) for _ in range(700)]
    live = blocks[::7]
    freed = [p for p in blocks if p not in set(live)]
    for p in freed:
        heap.free(p)
    return heap, live, freed


@pytest.mark.parametrize("redzone, canary", [(16, "keyed"), (32, "fixed")])
def test_a_clean_arena_of_freed_and_live_slots_has_no_finding(
    redzone: int, canary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    heap, live, freed = _heap(redzone, canary)

    def no_slot_by_slot(fmt: str) -> None:
        raise AssertionError("an intact arena was checked slot by slot")

    monkeypatch.setattr(verify, "cached_struct", no_slot_by_slot)
    assert heap.check() == []
    for p in live:
        heap.free(p)
    assert heap.check() == []  # every slot freed
    monkeypatch.undo()
    heap.close()


CASES = {
    # (which block, offset from its user address, expected kind, expected offset in the report)
    "poison of a freed block": ("freed", 5, "heap-use-after-free", 5),
    "tail redzone of a freed block": ("freed", 48, "heap-use-after-free", 48),
    "front redzone of a freed block": ("freed", -1, "heap-use-after-free", -1),
    "rear redzone of a live block": ("live", 40, "heap-buffer-overflow", 40),
    "padding of a live block": ("live", 47, "heap-buffer-overflow", 47),
    "front redzone of a live block": ("live", -3, "heap-buffer-underflow", -3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_one_damaged_byte_is_one_finding(name: str) -> None:
    which, offset, kind, at = CASES[name]
    heap, live, freed = _heap(16, "keyed")
    p = random.Random(name).choice(live if which == "live" else freed)
    ctypes.memset(p + offset, 0x41, 1)
    found = heap.check()
    assert [(r.kind, r.address, r.offset) for r in found] == [(kind, p, at)]
    assert heap.check() == []  # repaired, reported once
    heap.close(check=False)


def test_a_damaged_header_is_found_in_a_freed_or_a_live_slot() -> None:
    heap, live, freed = _heap(16, "keyed")
    for p in (freed[100], live[50]):
        ctypes.memset(p - 48 + 12, 0x41, 1)  # the alloc stack id inside the header
    kinds = sorted((r.kind, r.address) for r in heap.check())
    assert kinds == sorted([("heap-header-corruption", freed[100]), ("heap-header-corruption", live[50])])
    assert heap.check() == []
    heap.close(check=False)


def test_a_full_arena_and_the_next_one_partly_carved() -> None:
    with memguard.GuardedHeap(on_error="report", quarantine_bytes=64 << 20) as heap:
        blocks = [heap.malloc(64) for _ in range(2048 + 100)]  # 2048 slots of 128 bytes fill an arena
        assert len({p >> 18 for p in blocks}) == 2
        for p in blocks:
            heap.free(p)
        assert heap.check() == []
        last = blocks[-1]
        ctypes.memset(last + 63, 0x00, 1)
        assert [(r.kind, r.address) for r in heap.check()] == [("heap-use-after-free", last)]
