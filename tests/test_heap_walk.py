"""heap.walk(): every region and slot with address, size, state and serial, from one snapshot."""

from __future__ import annotations

import ctypes
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import memguard
from memguard.heap import ARENA_SIZE, HEADER_SIZE, HeapRegion, HeapSlot

ROOT = Path(__file__).resolve().parent.parent


def _slots(heap: memguard.GuardedHeap) -> dict[int, HeapSlot]:
    """Every slot of a walk, by user address (no address twice)."""
    slots: dict[int, HeapSlot] = {}
    for region in heap.walk():
        for slot in region.slots:
            assert slot.address not in slots
            slots[slot.address] = slot
    return slots


def _region_of(heap: memguard.GuardedHeap, address: int) -> HeapRegion:
    (region,) = [r for r in heap.walk() if any(s.address == address for s in r.slots)]
    return region


def test_live_and_quarantined_blocks_with_their_sizes_and_serials(heap):
    a = heap.malloc(10)
    b = heap.calloc(3, 7)
    c = heap.malloc(0)
    heap.free(b)
    slots = _slots(heap)
    assert slots[a] == HeapSlot(a, 10, "live", 1)
    assert slots[b] == HeapSlot(b, 21, "quarantined", 2)
    assert slots[c] == HeapSlot(c, 0, "live", 3)
    assert len(slots) == 3


def test_evicted_slot_is_free_until_it_is_reused():
    heap = memguard.GuardedHeap(quarantine_bytes=0)
    a = heap.malloc(24)
    heap.free(a)  # a quarantine of 0 bytes: the block leaves it at once
    assert heap.stats().quarantined_blocks == 0
    assert _slots(heap)[a] == HeapSlot(a, 24, "free", 1)
    again = heap.malloc(32)  # same size class: the slot is reused
    assert again == a
    assert _slots(heap)[a] == HeapSlot(a, 32, "live", 2)
    heap.close()


def test_arena_regions_list_the_carved_slots_in_order():
    heap = memguard.GuardedHeap(redzone=32)
    ps = [heap.malloc(40) for _ in range(5)]
    region = _region_of(heap, ps[0])
    assert region.kind == "arena"
    assert region.address % ARENA_SIZE == 0 and region.size == ARENA_SIZE
    assert region.slot_size == HEADER_SIZE + 32 + 48 + 32  # header, redzones, 40 rounded to 48
    assert [s.address for s in region.slots] == [region.address + HEADER_SIZE + 32 + i * region.slot_size for i in range(5)]
    assert sorted(ps) == [s.address for s in region.slots]
    assert [s.serial for s in region.slots] == sorted(s.serial for s in region.slots)
    assert all(region.address < s.address < region.address + region.size for s in region.slots)
    heap.close()


def test_large_and_aligned_blocks_are_regions_of_their_own(heap):
    big = heap.malloc(10_000)
    aligned = heap.memalign(4096, 100)
    small_aligned = heap.memalign(16, 100)  # natural alignment: an arena slot
    regions = {s.address: r for r in heap.walk() for s in r.slots}
    for p, n, serial in ((big, 10_000, 1), (aligned, 100, 2)):
        region = regions[p]
        assert region.kind == "large"
        assert region.slots == (HeapSlot(p, n, "live", serial),)
        assert region.size == region.slot_size
        assert region.address + region.size >= p + n  # the block lies in its allocation
        assert region.address < p
    assert aligned % 4096 == 0
    assert regions[small_aligned].kind == "arena"
    heap.free(big)
    assert _slots(heap)[big] == HeapSlot(big, 10_000, "quarantined", 1)


def test_evicted_large_block_is_gone():
    heap = memguard.GuardedHeap(quarantine_bytes=0)
    big = heap.malloc(100_000)
    assert [r.kind for r in heap.walk()] == ["large"]
    heap.free(big)
    assert list(heap.walk()) == []
    heap.close()


def test_regions_come_by_address(heap):
    for size in (16, 100, 5000, 1000, 70_000, 16):
        heap.malloc(size)
    addresses = [r.address for r in heap.walk()]
    assert addresses == sorted(addresses) and len(addresses) == 5


def test_damaged_header_is_corrupt_and_stays_so(heap):
    a = heap.malloc(16)
    b = heap.malloc(16)
    big = heap.malloc(8000)
    for p in (a, big):
        ctypes.memset(p - heap.redzone - HEADER_SIZE, 0x41, 8)  # the seal
    slots = _slots(heap)
    assert slots[a] == HeapSlot(a, 0, "corrupt", 0)
    assert slots[big] == HeapSlot(big, 0, "corrupt", 0)
    assert slots[b].state == "live"
    assert heap.reports == []  # walking reports nothing: check() does
    assert len(heap.check()) == 2
    slots = _slots(heap)
    assert slots[a].state == "corrupt" and slots[big].state == "corrupt"


def test_damaged_redzone_is_not_the_walks_business(heap):
    a = heap.malloc(16)
    ctypes.memset(a + 16, 0, 1)
    assert _slots(heap)[a] == HeapSlot(a, 16, "live", 1)


def test_walk_after_close_raises(heap):
    heap.malloc(16)
    heap.close()
    with pytest.raises(memguard.HeapClosedError):
        heap.walk()


def test_walk_is_a_snapshot_taken_at_the_call(heap):
    a = heap.malloc(16)
    walk = heap.walk()
    b = heap.malloc(16)
    heap.free(a)
    heap.close()
    assert [s for r in walk for s in r.slots] == [HeapSlot(a, 16, "live", 1)]
    assert b != a


def test_the_lock_is_not_held_while_the_caller_iterates(heap):
    heap.malloc(16)
    heap.malloc(100_000)
    walk = heap.walk()
    next(walk)
    done: list[int] = []
    # The general path (a large block) takes the lock: it would wait for ever were it held.
    t = threading.Thread(target=lambda: done.append(heap.free(heap.malloc(50_000)) or 1), daemon=True)
    t.start()
    t.join(10)
    assert done == [1]
    assert len(list(walk)) == 1


def test_walk_agrees_with_stats():
    heap = memguard.GuardedHeap(quarantine_bytes=64 << 10)
    rng = random.Random(7)
    live: list[int] = []
    for _ in range(3000):
        if live and rng.random() < 0.45:
            heap.free(live.pop(rng.randrange(len(live))))
        else:
            size = rng.choice((0, 1, 16, 100, 1000, 4096, 5000, 40_000))
            live.append(heap.memalign(64, size) if rng.random() < 0.1 else heap.malloc(size))
    regions = list(heap.walk())
    slots = [s for r in regions for s in r.slots]
    stats = heap.stats()
    assert {s.state for s in slots} == {"live", "quarantined", "free"}
    live_slots = [s for s in slots if s.state == "live"]
    quarantined = [s for s in slots if s.state == "quarantined"]
    assert sorted(s.address for s in live_slots) == sorted(live)
    assert len(live_slots) == stats.live_blocks
    assert sum(s.size for s in live_slots) == stats.live_bytes
    assert len(quarantined) == stats.quarantined_blocks
    assert sum(s.size for s in quarantined) == stats.quarantined_bytes
    assert sum(r.kind == "large" for r in regions) == stats.large_blocks
    assert sum(r.size for r in regions if r.kind == "arena") == stats.arena_bytes
    assert max(s.serial for s in slots) == stats.total_allocs
    for p in live[:50]:
        info = heap.block(p)
        slot = next(s for s in slots if s.address == p)
        assert (info.size, info.serial, info.state) == (slot.size, slot.serial, slot.state)
    assert heap.close() == []


def test_walk_while_another_thread_allocates_sees_whole_blocks_only():
    # Nothing leaves the quarantine, so every block ever allocated is live or
    # quarantined: a consistent snapshot holds exactly the serials 1..N.
    heap = memguard.GuardedHeap(quarantine_bytes=1 << 30)
    errors: list[BaseException] = []

    def allocate() -> None:
        rng = random.Random(3)
        mine: list[int] = []
        try:
            for _ in range(20000):
                mine.append(heap.malloc(rng.choice((8, 16, 200, 3000, 6000))))
                if rng.random() < 0.3:
                    heap.free(mine.pop(rng.randrange(len(mine))))
        except BaseException as e:  # pragma: no cover - reported by the test
            errors.append(e)

    thread = threading.Thread(target=allocate)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    walks = 0
    try:
        thread.start()
        while thread.is_alive() or walks < 3:
            slots = [s for r in heap.walk() for s in r.slots]
            serials = sorted(s.serial for s in slots)
            assert serials == list(range(1, len(slots) + 1))
            assert all(s.state in ("live", "quarantined") for s in slots)
            walks += 1
    finally:
        thread.join()
        sys.setswitchinterval(old)
    assert errors == []
    assert walks > 3
    assert heap.serial == 20000
    assert heap.close() == []


def test_exported_from_the_heap_package():
    import memguard.heap as pkg

    assert {"HeapRegion", "HeapSlot", "GuardedHeap"} <= set(pkg.__all__)
    assert HeapRegion._fields == ("kind", "address", "size", "slot_size", "slots")
    assert HeapSlot._fields == ("address", "size", "state", "serial")


def test_docs_example_runs_and_prints_what_the_docs_show():
    doc = (ROOT / "docs" / "heap.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert blocks
    proc = subprocess.run(
        [sys.executable, "-c", "\n\n".join(blocks)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr

    def lines(text: str) -> list[str]:  # addresses vary, and so may the regions' order
        return sorted(re.sub(r"0x[0-9a-f]+", "0x?", line) for line in text.strip().splitlines())

    (shown,) = re.findall(r"prints \(addresses vary\):\n\n```text\n(.*?)```", doc, re.S)
    assert lines(proc.stdout) == lines(shown)
