"""``check(since=mark)`` and ``leaks(since=mark)`` cost what was done since the mark.

``mark()`` starts the heap's allocation log; while the log holds every block allocated
since a mark, neither call walks the heap (the tests make walking raise), and both find
exactly what a walk would.  An older mark, or a log that stopped growing, walks.
"""

from __future__ import annotations

import ctypes

import pytest

import memguard
from memguard.heap import fastpaths


def _no_walk(heap: memguard.GuardedHeap, monkeypatch: pytest.MonkeyPatch) -> None:
    def walk(since: int = 0) -> list[tuple[int, int, int, int]]:
        raise AssertionError("the heap was walked")

    monkeypatch.setattr(heap, "_live_rows", walk)


def test_a_test_sized_window_is_checked_from_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    with memguard.GuardedHeap(on_error="report") as heap:
        old = [heap.malloc(32) for _ in range(500)]
        ctypes.memset(old[0] + 32, 0x41, 1)  # before the mark: not this window's
        mark = heap.mark()
        _no_walk(heap, monkeypatch)
        young = [heap.malloc(n) for n in (8, 100, 5000)]
        for p in [heap.malloc(24) for _ in range(300)]:
            heap.free(p)  # freed and quarantined, some slots handed out again below
        kept = heap.malloc(24)
        ctypes.memset(young[1] + 100, 0x41, 1)
        found = heap.check(since=mark)
        assert [(r.kind, r.address) for r in found] == [("heap-buffer-overflow", young[1])]
        groups = heap.leaks(since=mark)
        assert sorted(a for g in groups for a in g.addresses) == sorted([*young, kept])
        monkeypatch.undo()
        assert [(r.kind, r.address) for r in heap.check()] == [("heap-buffer-overflow", old[0])]
        for p in [*old, *young, kept]:
            heap.free(p)


def test_a_slot_handed_out_twice_in_the_window_is_one_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    with memguard.GuardedHeap(quarantine_bytes=0) as heap:
        mark = heap.mark()
        _no_walk(heap, monkeypatch)
        a = heap.malloc(40)
        heap.free(a)
        b = heap.malloc(40)
        assert b == a  # no quarantine: the slot comes back at once
        assert [g.addresses for g in heap.leaks(since=mark)] == [(b,)]
        monkeypatch.undo()
        heap.free(b)


def test_an_older_mark_and_a_full_log_walk_and_find_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    with memguard.GuardedHeap(on_error="report") as heap:
        first = heap.mark()
        a = heap.malloc(16)
        heap.mark()  # restarts the log: `first` is no longer covered
        b = heap.malloc(16)
        walked: list[int] = []
        live_rows = heap._live_rows

        def counting(since: int = 0) -> list[tuple[int, int, int, int]]:
            walked.append(since)
            return live_rows(since)

        monkeypatch.setattr(heap, "_live_rows", counting)
        assert sorted(x for g in heap.leaks(since=first) for x in g.addresses) == sorted([a, b])
        assert walked == [first.serial]
        monkeypatch.setattr(fastpaths, "LOG_MAX", 2)
        mark = heap.mark()
        young = [heap.malloc(16) for _ in range(3)]  # one more than the log holds
        ctypes.memset(young[2] + 16, 0x41, 1)
        assert [r.address for r in heap.check(since=mark)] == [young[2]]
        assert walked == [first.serial, mark.serial]
        for p in [a, b, *young]:
            heap.free(p)
