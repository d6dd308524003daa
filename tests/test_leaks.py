"""Leak accounting: snapshots, leaks(since=…), statistics, compare_to, LeakSanitizer text."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest

import memguard

HERE = __file__
MiB = 1 << 20


def _line() -> int:
    return sys._getframe(1).f_lineno




def _make(heap, n, size):
    out = []
    for _ in range(n):
        out.append(heap.malloc(size)); line = _line()
    return out, line


def test_leaks_grouped_by_site_largest_first(heap):
    small, sline = _make(heap, 3, 24)
    big = heap.malloc(1000); bline = _line()
    groups = heap.leaks()
    assert [(g.size, g.count) for g in groups] == [(1000, 1), (72, 3)]
    assert groups[0].addresses == (big,)
    assert groups[1].addresses == tuple(small)  # oldest first
    assert (groups[0].stack[0].lineno, groups[0].stack[0].name) == (bline, "test_leaks_grouped_by_site_largest_first")
    assert (groups[1].stack[0].lineno, groups[1].stack[0].name) == (sline, "_make")
    assert groups[1].stack[1].name == "test_leaks_grouped_by_site_largest_first"


def test_leak_group_str(heap):
    _, line = _make(heap, 3, 24)
    (g,) = heap.leaks()
    text = str(g)
    lines = text.splitlines()
    assert lines[0] == "72 byte(s) in 3 object(s) allocated from:"
    assert lines[1] == f"    #0 {HERE}:{line} in _make"
    assert lines[2].startswith(f"    #1 {HERE}:")
    assert g.to_dict()["size"] == 72 and g.to_dict()["addresses"] == list(g.addresses)


def test_leaks_since_a_snapshot(heap):
    old = heap.malloc(10)
    snap = heap.snapshot()
    a = heap.malloc(20)
    b = heap.malloc(30)
    heap.free(a)
    heap.free(old)  # freed blocks older than the snapshot do not matter
    groups = heap.leaks(since=snap)
    assert [g.addresses for g in groups] == [(b,)]
    assert heap.leaks(since=heap.snapshot()) == []
    assert [a for g in heap.leaks() for a in g.addresses] == [b]


def test_leaks_since_an_allocation_count(heap):
    heap.malloc(10)
    mark = heap.serial
    assert mark == heap.snapshot().serial == 1
    b = heap.malloc(20)
    assert [g.addresses for g in heap.leaks(since=mark)] == [(b,)]
    assert [g.addresses for g in heap.leaks(since=0)] == [(b,), (heap.leaks()[1].addresses[0],)]
    assert len(heap.leaks(since=0)) == 2


@pytest.mark.parametrize("since", ["1", 1.0, [1]])
def test_leaks_since_wrong_type(heap, since):
    with pytest.raises(TypeError):
        heap.leaks(since=since)


def test_freed_and_realloced_blocks_are_not_leaks(heap):
    p = heap.malloc(10)
    q = heap.realloc(p, 20)
    r = heap.calloc(2, 3)
    heap.free(r)
    (g,) = heap.leaks()
    assert g.addresses == (q,)
    assert g.size == 20


def test_large_block_leaks(heap):
    a = heap.malloc(MiB)
    b = heap.memalign(4096, 5000)
    groups = heap.leaks()
    assert [(g.size, g.addresses) for g in groups] == [(MiB, (a,)), (5000, (b,))]


def test_snapshot_is_immutable(heap):
    a = heap.malloc(8)
    snap = heap.snapshot()
    assert isinstance(snap, memguard.Snapshot)
    assert snap.serial == 1
    assert isinstance(snap.records, tuple)
    assert [(r.address, r.size, r.serial) for r in snap.records] == [(a, 8, 1)]
    assert len(snap) == 1 and snap.size == 8
    heap.malloc(16)
    heap.free(a)
    assert [(r.address, r.size) for r in snap.records] == [(a, 8)]  # unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.serial = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):  # a named tuple
        snap.records[0].size = 1  # type: ignore[misc]


def test_snapshot_statistics(heap):
    _make(heap, 4, 10)
    heap.malloc(100)
    stats = heap.snapshot().statistics()
    assert [(s.size, s.count) for s in stats] == [(100, 1), (40, 4)]
    assert all(isinstance(s, memguard.LeakGroup) for s in stats)


def test_compare_to(heap):
    keep, kline = _make(heap, 2, 10)
    old = heap.snapshot()
    heap.free(keep[0])
    for _ in range(5):
        heap.malloc(100); nline = _line()
    new = heap.snapshot()
    diffs = new.compare_to(old)
    assert all(isinstance(d, memguard.SiteDiff) for d in diffs)
    assert [(d.stack[0].lineno, d.size, d.size_diff, d.count, d.count_diff) for d in diffs] == [
        (nline, 500, 500, 5, 5),
        (kline, 10, -10, 1, -1),
    ]
    assert str(diffs[0]) == f"{HERE}:{nline}: size=500 B (+500 B), count=5 (+5), average=100 B"
    assert str(diffs[1]) == f"{HERE}:{kline}: size=10 B (-10 B), count=1 (-1), average=10 B"
    assert new.compare_to(new) == []
    back = old.compare_to(new)
    assert sorted(d.count_diff for d in back) == [-5, 1]


def test_compare_to_kib_units(heap):
    old = heap.snapshot()
    heap.malloc(3 * 1024); line = _line()
    (d,) = heap.snapshot().compare_to(old)
    assert str(d) == f"{HERE}:{line}: size=3.0 KiB (+3.0 KiB), count=1 (+1), average=3.0 KiB"


def test_format_leaks_leaksanitizer_text(heap):
    _, sline = _make(heap, 3, 24)
    heap.malloc(1000); bline = _line()
    text = memguard.format_leaks(heap.leaks())
    lines = text.splitlines()
    assert lines[0] == "=" * 65
    assert lines[1] == f"=={os.getpid()}==ERROR: memguard: detected memory leaks"
    i = lines.index("Direct leak of 1000 byte(s) in 1 object(s) allocated from:")
    j = lines.index("Direct leak of 72 byte(s) in 3 object(s) allocated from:")
    assert i < j
    assert lines[i + 1] == f"    #0 {HERE}:{bline} in test_format_leaks_leaksanitizer_text"
    assert lines[j + 1] == f"    #0 {HERE}:{sline} in _make"
    assert lines[-1] == "SUMMARY: memguard: 1072 byte(s) leaked in 4 allocation(s)."
    assert memguard.format_leaks([]) == ""


def test_leak_report_kind(heap):
    _make(heap, 2, 5)
    (g,) = heap.leaks()
    r = g.report()
    assert r.kind == "memory-leak"
    assert (r.size, r.count, r.address) == (10, 2, g.addresses[0])
    assert r.alloc_stack == g.stack
    assert "SUMMARY: memguard: memory-leak" in str(r)


def test_leaks_in_a_loop_from_several_threads_group_per_site():
    import threading

    h = memguard.GuardedHeap()

    def work():
        for _ in range(50):
            h.malloc(8)

    ts = [threading.Thread(target=work) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    (g,) = h.leaks()
    assert (g.count, g.size) == (150, 1200)
    assert len(set(g.addresses)) == 150
    h.close()
