"""A Hypothesis state machine drives the heap against a dict model of live blocks."""

from __future__ import annotations

import ctypes

import os

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

import memguard

SIZES = st.one_of(st.sampled_from([0, 1, 15, 16, 17, 64, 100, 4095, 4096, 4097]), st.integers(0, 48), st.integers(4097, 20000))
ALIGNMENTS = st.sampled_from([8, 16, 32, 64, 256, 4096])


class HeapMachine(RuleBasedStateMachine):
    """Model: address -> expected contents of every live block; freed small blocks aside."""

    blocks = Bundle("blocks")

    def __init__(self) -> None:
        super().__init__()
        # a small quarantine so that eviction and slot reuse happen within a run
        self.heap = memguard.GuardedHeap(on_error="report", quarantine_bytes=2048)
        self.model: dict[int, bytearray] = {}
        self.small_freed: set[int] = set()  # arena blocks freed (their memory stays memguard's)
        self.allocs = 0
        self.frees = 0
        self.expected_reports = 0
        self._small: dict[int, bool] = {}

    # --------------------------------------------------------------- helpers
    def _new(self, p: int, contents: bytearray, small: bool) -> int:
        assert p not in self.model, "an address was handed out twice"
        assert bytes(self.heap.view(p)) == bytes(contents)
        self.model[p] = contents
        self.small_freed.discard(p)
        self.allocs += 1
        self._small[p] = small
        return p

    def _gone(self, p: int) -> None:
        self.model.pop(p)
        self.frees += 1
        if self._small.pop(p):
            self.small_freed.add(p)

    # --------------------------------------------------------------- rules
    @rule(target=blocks, size=SIZES)
    def malloc(self, size):
        return self._new(self.heap.malloc(size), bytearray(b"\xcd" * size), size <= 4096)

    @rule(target=blocks, count=st.integers(0, 8), size=st.integers(0, 600))
    def calloc(self, count, size):
        return self._new(self.heap.calloc(count, size), bytearray(count * size), count * size <= 4096)

    @rule(target=blocks, alignment=ALIGNMENTS, size=SIZES)
    def memalign(self, alignment, size):
        p = self.heap.memalign(alignment, size)
        assert p % alignment == 0
        return self._new(p, bytearray(b"\xcd" * size), size <= 4096 and alignment <= 16)

    @rule(target=blocks, p=consumes(blocks), size=SIZES)
    def realloc(self, p, size):
        old = self.model[p]
        q = self.heap.realloc(p, size)
        assert q != p
        self._gone(p)
        contents = bytearray(b"\xcd" * size)
        keep = min(size, len(old))
        contents[:keep] = old[:keep]
        return self._new(q, contents, size <= 4096)

    @rule(p=consumes(blocks))
    def free(self, p):
        self.heap.free(p)
        self._gone(p)

    @rule(p=blocks, data=st.data())
    def write(self, p, data):
        contents = self.model[p]
        if not contents:
            return
        start = data.draw(st.integers(0, len(contents) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=len(contents) - start))
        self.heap.view(p)[start : start + len(chunk)] = chunk
        contents[start : start + len(chunk)] = chunk

    @rule(p=blocks, extra=st.integers(0, 15), value=st.integers(0, 255))
    def overflow_is_caught_once(self, p, extra, value):
        n = len(self.model[p])
        before = ctypes.string_at(p + n + extra, 1)[0]
        if before == value:
            value ^= 0x5A
        ctypes.memset(p + n + extra, value, 1)
        reports = self.heap.check()
        assert [(r.kind, r.address, r.offset, r.count) for r in reports] == [("heap-buffer-overflow", p, n + extra, 1)]
        self.expected_reports += 1
        assert ctypes.string_at(p + n + extra, 1)[0] == before  # repaired

    @precondition(lambda self: self.small_freed)
    @rule(data=st.data())
    def use_after_free_is_caught(self, data):
        p = data.draw(st.sampled_from(sorted(self.small_freed)))
        info = self.heap.block(p)
        assert info.state != "live"
        if info.size == 0:
            return
        ctypes.memset(p + info.size - 1, 0x42, 1)
        reports = self.heap.check()
        assert [(r.kind, r.address, r.offset) for r in reports] == [("heap-use-after-free", p, info.size - 1)]
        self.expected_reports += 1

    @precondition(lambda self: self.small_freed)
    @rule(data=st.data())
    def double_free_is_caught(self, data):
        p = data.draw(st.sampled_from(sorted(self.small_freed)))
        self.heap.free(p)
        r = self.heap.reports[-1]
        assert (r.kind, r.address) == ("double-free", p)
        self.expected_reports += 1

    @rule(p=blocks, delta=st.integers(1, 15))
    def interior_free_is_caught(self, p, delta):
        n = len(self.model[p])
        if delta >= max(n, 1):
            return
        self.heap.free(p + delta)
        r = self.heap.reports[-1]
        assert (r.kind, r.address, r.offset) == ("bad-free", p, delta)
        self.expected_reports += 1

    # --------------------------------------------------------------- invariants
    @invariant()
    def stats_match_the_model(self):
        s = self.heap.stats()
        assert s.live_blocks == len(self.model)
        assert s.live_bytes == sum(len(c) for c in self.model.values())
        assert s.total_allocs == self.allocs
        assert s.total_frees == self.frees
        assert s.quarantined_bytes <= 2048

    @invariant()
    def contents_match_the_model(self):
        for p, contents in self.model.items():
            assert bytes(self.heap.view(p)) == bytes(contents)
            assert self.heap.block(p).state == "live"

    @invariant()
    def no_unexpected_reports(self):
        assert len(self.heap.reports) == self.expected_reports

    @rule()
    def check_is_clean(self):
        assert self.heap.check() == []

    @rule()
    def leaks_are_the_live_blocks(self):
        groups = self.heap.leaks()
        assert sorted(a for g in groups for a in g.addresses) == sorted(self.model)
        assert sum(g.size for g in groups) == sum(len(c) for c in self.model.values())

    def teardown(self):
        try:
            assert self.heap.check() == []
        finally:
            self.heap.close(check=False)


HeapMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    database=None,
    report_multiple_bugs=False,
    # Shrinking a failure can take tens of seconds (every step runs the heap's checks);
    # the unshrunk sequence is printed anyway.  MEMGUARD_SHRINK=1 turns shrinking on.
    phases=tuple(p for p in Phase if p is not Phase.shrink or os.environ.get("MEMGUARD_SHRINK") == "1"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestHeapMachine = HeapMachine.TestCase
