"""ObjectPool: the seed's fixed-size pool, plus what it could not detect; its invariant plugin; model test."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

import memguard
from memguard import GuardedHeap, ObjectPool, PoolError

from memguard_plugins import pool_invariants as invariants


def raw_of(pool: ObjectPool, address: int) -> tuple[memoryview, int]:
    """The chunk's heap view and the object's offset in it (to write past an object)."""
    for start, size in pool.mempool.chunks():
        if start <= address < start + size:
            return pool.heap.view(start), address - start
    raise AssertionError("not in a chunk")


def make(pool: ObjectPool) -> int:
    return pool.get()


def test_objects_are_aligned_rounded_and_counted() -> None:
    pool = ObjectPool(40, objects_per_chunk=4, align=64)
    objs = [pool.get() for _ in range(6)]
    assert all(a % 64 == 0 for a in objs) and len(set(objs)) == 6
    assert pool.stride == 64  # 40 + 16 redzone, rounded to 64
    s = pool.stats()
    assert (s.allocations, s.frees, s.outstanding, s.peak, s.chunks, s.free) == (6, 0, 6, 6, 2, 2)
    for a in objs[:4]:
        pool.put(a)
    s = pool.stats()
    assert (s.allocations, s.frees, s.outstanding, s.peak) == (6, 4, 2, 6)
    pool.put(0)  # like mempool_free(pool, NULL)
    for a in objs[4:]:
        pool.put(a)
    assert pool.destroy() == []
    assert pool.heap.closed  # a private heap goes with the pool


def test_fill_and_zero() -> None:
    pool = ObjectPool(24, zero=False)
    assert bytes(pool.view(pool.get())) == b"\xcd" * 24
    zpool = ObjectPool(24, zero=True)
    a = zpool.get()
    zpool.view(a)[:] = b"x" * 24
    zpool.put(a)
    assert bytes(zpool.view(zpool.get())) == bytes(24)
    pool.heap.on_error = zpool.heap.on_error = "report"
    pool.destroy()
    zpool.destroy()


def test_double_put_and_foreign_put_are_caught_without_corrupting_the_free_list() -> None:
    heap = GuardedHeap(on_error="report")
    pool = ObjectPool(32, objects_per_chunk=8, heap=heap, quarantine=0)
    a = pool.get()
    pool.put(a)
    pool.put(a)  # the seed would put `a` on the free list twice and hand it out twice
    pool.put(a + 8)
    pool.put(heap.malloc(32))
    assert [r.kind for r in heap.reports] == ["pool-double-free", "pool-bad-free", "pool-bad-free"]
    assert pool.stats().frees == 1
    got = {pool.get() for _ in range(8)}
    assert len(got) == 8  # never the same object twice
    assert a in got  # handed out again, once
    heap.on_error = "raise"
    with pytest.raises(PoolError, match="not allocated from pool"):
        pool.put(a + 8)
    pool.heap.on_error = "report"
    pool.destroy()
    heap.close(check=False)


def test_write_after_put_is_caught() -> None:
    heap = GuardedHeap(on_error="report")
    pool = ObjectPool(48, heap=heap, quarantine=4)
    a = pool.get()
    pool.put(a)
    raw, off = raw_of(pool, a)
    raw[off + 10] = 0x42
    (r,) = heap.check()
    assert r.kind == "pool-use-after-free" and r.address == a and r.offset == 10
    assert r.alloc_stack[0].name == "test_write_after_put_is_caught" and r.free_stack
    pool.destroy()
    heap.close()


def test_overflow_into_the_next_object_is_caught() -> None:
    heap = GuardedHeap(on_error="report")
    pool = ObjectPool(64, heap=heap, align=64)  # stride 128: 64 bytes of redzone
    a, b = pool.get(), pool.get()
    assert b - a == 128
    raw, off = raw_of(pool, a)
    raw[off + 64 : off + 72] = b"OVERFLOW"
    pool.put(a)
    (r,) = heap.reports
    assert r.kind == "pool-buffer-overflow" and r.address == a and r.offset == 64 and r.found == b"OVERFLOW"
    pool.put(b)
    pool.destroy()
    heap.close()


def test_destroy_reports_each_outstanding_object_with_its_site() -> None:
    heap = GuardedHeap(on_error="report")
    pool = ObjectPool(16, heap=heap)
    objs = [make(pool) for _ in range(2)]
    reports = pool.destroy()
    assert [r.kind for r in reports] == ["memory-leak"] * 2
    for r, a in zip(reports, objs):
        assert r.message.startswith(f"Leak at 0x{a:x} (") and "in make)" in r.message
        assert r.alloc_stack[0].name == "make"
    assert heap.stats().live_blocks == 0  # the chunks went back to the heap
    assert pool.destroy() == []
    with pytest.raises(ValueError):
        pool.get()
    heap.close()


def test_destroy_raises_under_raise_policy_after_cleaning_up() -> None:
    heap = GuardedHeap()
    pool = ObjectPool(16, heap=heap)
    pool.get()
    with pytest.raises(memguard.LeakError, match="Leak at 0x"):
        pool.destroy()
    assert heap.stats().live_blocks == 0
    heap.close()


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"object_size": 0}, ValueError),
        ({"object_size": "8"}, TypeError),
        ({"object_size": 8, "align": 48}, ValueError),
        ({"object_size": 8, "objects_per_chunk": 0}, ValueError),
        ({"object_size": 8, "redzone": -1}, ValueError),
        ({"object_size": 8, "zero": 1}, TypeError),
        ({"object_size": 8, "heap": "heap"}, TypeError),
        ({"object_size": 8, "quarantine": -2}, ValueError),
    ],
)
def test_bad_arguments(kwargs: dict, exc: type) -> None:
    with pytest.raises(exc):
        ObjectPool(**kwargs)


def test_bad_put_arguments() -> None:
    pool = ObjectPool(8)
    with pytest.raises(TypeError):
        pool.put("0x10")
    with pytest.raises(ValueError):
        pool.put(-8)
    pool.destroy()


# ----------------------------------------------------------------------------- the invariant plugin
def test_invariant_plugin_is_quiet_on_a_correct_pool_and_catches_a_broken_one() -> None:
    heap = GuardedHeap(on_error="report", plugins=[invariants])
    pool = ObjectPool(40, objects_per_chunk=8, heap=heap)
    objs = [pool.get() for _ in range(12)]
    for a in objs[::2]:
        pool.put(a)
    assert heap.check() == []

    class LeakyCounter(ObjectPool):
        """A pool whose statistics forget some frees."""

        def put(self, address: int) -> None:
            super().put(address)
            self._frees -= 1

    bad = LeakyCounter(40, objects_per_chunk=8, heap=heap, name="leaky")
    bad.put(bad.get())
    found = heap.check()
    assert found and all(r.kind == "pool-invariant" and r.extra["pool"] == "leaky" for r in found)
    assert any("allocations (1) - frees (0) != outstanding" not in r.message for r in found)
    assert any("outstanding (1) != live regions (0)" in r.message for r in found)
    bad.destroy()
    pool.destroy()
    heap.close(check=False)


def test_invariant_plugin_catches_misaligned_objects_and_adopts_existing_pools() -> None:
    heap = GuardedHeap(on_error="report")
    pool = ObjectPool(40, objects_per_chunk=8, heap=heap)
    early = pool.get()  # before the plugin is registered
    heap.plugins.register(invariants)
    pool.put(early)
    assert heap.check() == []  # adopted, no false positive

    class Skewed(ObjectPool):
        def get(self) -> int:
            a = super().get()
            self.mempool.free(a)
            return self.mempool.alloc(a + 8, self.object_size)

    skewed = Skewed(40, objects_per_chunk=8, heap=heap, name="skewed")
    skewed.get()
    messages = [r.message for r in heap.check()]
    assert any("not aligned to 64" in m for m in messages)
    assert any("strides into its chunk" in m for m in messages)
    skewed.destroy()
    pool.destroy()
    heap.close(check=False)


# ----------------------------------------------------------------------------- model test
class PoolModel(RuleBasedStateMachine):
    """ObjectPool against a set model, with the invariant plugin watching."""

    objects = Bundle("objects")

    def __init__(self) -> None:
        super().__init__()
        self.heap = GuardedHeap(on_error="report", stack_depth=2, plugins=[invariants])
        self.pool = ObjectPool(24, objects_per_chunk=4, align=16, heap=self.heap, quarantine=2)
        self.live: set[int] = set()
        self.freed: set[int] = set()
        self.peak = 0
        self.findings: list[str] = []

    @rule(target=objects)
    def get(self) -> int:
        a = self.pool.get()
        assert a not in self.live
        self.live.add(a)
        self.freed.discard(a)
        self.peak = max(self.peak, len(self.live))
        return a

    @rule(a=consumes(objects))
    def put(self, a: int) -> None:
        self.pool.put(a)
        self.live.discard(a)
        self.freed.add(a)

    @rule(a=objects)
    def put_again(self, a: int) -> None:
        if a in self.live:
            return
        self.pool.put(a)
        self.findings.append("pool-double-free")

    @rule(a=objects, delta=st.integers(1, 15))
    def put_interior(self, a: int, delta: int) -> None:
        self.pool.put(a + delta)
        self.findings.append("pool-bad-free")

    @rule(a=objects, data=st.binary(min_size=1, max_size=24))
    def write(self, a: int, data: bytes) -> None:
        if a in self.live:
            self.pool.view(a)[: len(data)] = data  # legal writes are never findings

    @invariant()
    def agrees(self) -> None:
        s = self.pool.stats()
        assert s.outstanding == len(self.live) and s.peak == self.peak
        assert {r.address for r in self.pool.mempool.regions()} == self.live
        assert [r.kind for r in self.heap.reports] == self.findings

    def teardown(self) -> None:
        assert self.heap.check() == []  # no corruption, invariants hold
        leaks = self.pool.destroy()
        assert {r.address for r in leaks} == self.live
        self.heap.close()


TestPoolModel = PoolModel.TestCase
TestPoolModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
