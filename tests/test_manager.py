"""MemoryManager: budget, allocations, pools and strategies, GC, defragmentation, findings, plugin, model, threads."""

from __future__ import annotations

import ctypes
import gc
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import memguard
from memguard import (
    AllocationNotFoundError,
    BudgetExceededError,
    GuardedHeap,
    MemoryManager,
    PoolExhaustedError,
    PoolExistsError,
    PoolNotFoundError,
)
from memguard_plugins import manager_budget

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent


class Clock:
    """A fake clock: seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(budget: int = 1 << 20, on_error: str = "raise", **kw: object) -> tuple[MemoryManager, GuardedHeap, Clock]:
    clock = Clock()
    heap = GuardedHeap(on_error=on_error, plugins=[manager_budget])
    return MemoryManager(budget, heap=heap, clock=clock, name="mm", page_size=1 << 16, **kw), heap, clock


def done(mm: MemoryManager, heap: GuardedHeap) -> None:
    assert mm.close() == []
    assert heap.check() == []
    heap.close()


# ----------------------------------------------------------------------------- core
def test_allocate_info_access_deallocate() -> None:
    mm, heap, clock = make()
    aid, buf = mm.allocate(1000, type="image_buffer", usage="read_write", lifetime="medium")
    assert isinstance(aid, str) and len(buf) == 1000
    buf[:5] = b"hello"
    info = mm.info(aid)
    assert (info.id, info.size, info.type, info.usage, info.lifetime) == (aid, 1000, "image_buffer", "read_write",
                                                                         "medium")
    assert info.allocated_at == info.last_accessed == 1000.0 and info.reference_count == 0 and info.pool is None
    assert info.alloc_stack[0].name == "test_allocate_info_access_deallocate"
    clock.now = 1005.0
    assert bytes(mm.access(aid)[:5]) == b"hello"
    assert mm.info(aid).last_accessed == 1005.0
    s = mm.get_stats()
    assert (s.total_budget, s.allocated, s.available, s.peak_usage, s.allocation_count) == (1 << 20, 1000,
                                                                                           (1 << 20) - 1000, 1000, 1)
    mm.deallocate(aid)
    assert mm.get_stats().allocated == 0 and mm.get_stats().peak_usage == 1000
    with pytest.raises(AllocationNotFoundError, match="retired by deallocate"):
        mm.info(aid)
    done(mm, heap)


def test_read_only_usage_gives_a_read_only_view() -> None:
    mm, heap, _ = make()
    aid, buf = mm.allocate(16, usage="read_only")
    assert buf.readonly and mm.access(aid).readonly
    with pytest.raises(TypeError):
        buf[0] = 1
    mm.deallocate(aid)
    done(mm, heap)


def test_budget_is_enforced_with_a_clear_error() -> None:
    mm, heap, _ = make(budget=10_000)
    a, _ = mm.allocate(6000)
    with pytest.raises(BudgetExceededError) as info:
        mm.allocate(5000)
    e = info.value
    assert (e.requested, e.budget, e.allocated) == (5000, 10_000, 6000)
    assert "5000 bytes requested" in str(e) and "6000 of its 10000-byte budget" in str(e)
    assert isinstance(e, memguard.MemguardError) and isinstance(e, MemoryError)
    with pytest.raises(BudgetExceededError):
        mm.create_pool("big", 1000, initial_count=5)
    assert mm.get_stats().allocated == 6000
    mm.deallocate(a)
    done(mm, heap)


def test_set_budget_collects_first_then_refuses() -> None:
    mm, heap, clock = make(budget=10_000)
    old, _ = mm.allocate(4000, lifetime="short")
    kept, _ = mm.allocate(3000, lifetime="long")
    clock.now += 61
    mm.set_budget(5000)  # the expired one is collected to make room
    assert mm.get_stats().total_budget == 5000 and mm.get_stats().allocated == 3000
    with pytest.raises(BudgetExceededError, match="still has 3000 bytes allocated"):
        mm.set_budget(2000)
    assert mm.total_budget == 5000
    for bad in (0, -1):
        with pytest.raises(ValueError, match="must be >"):
            mm.set_budget(bad)
    with pytest.raises(TypeError):
        mm.set_budget("5")  # type: ignore[arg-type]
    with pytest.raises(AllocationNotFoundError, match="garbage_collect"):
        mm.access(old)
    mm.deallocate(kept)
    done(mm, heap)


def test_an_allocation_over_budget_collects_before_refusing() -> None:
    mm, heap, clock = make(budget=10_000)
    mm.allocate(8000, lifetime="short")
    clock.now += 61
    b, _ = mm.allocate(8000)
    assert mm.get_stats().allocated == 8000
    mm.deallocate(b)
    done(mm, heap)


def test_bad_input_gets_clear_exceptions() -> None:
    mm, heap, _ = make()
    with pytest.raises(ValueError, match="size must be >= 1"):
        mm.allocate(0)
    with pytest.raises(ValueError, match="usage must be one of"):
        mm.allocate(8, usage="sometimes")
    with pytest.raises(ValueError, match="lifetime must be one of"):
        mm.allocate(8, lifetime="forever")
    with pytest.raises(TypeError, match="type must be a non-empty str"):
        mm.allocate(8, type="")
    with pytest.raises(TypeError):
        mm.allocate(8, owner=1)  # not weakly referenceable
    with pytest.raises(AllocationNotFoundError, match="no allocation 'nope'"):
        mm.info("nope")
    with pytest.raises(TypeError, match="allocation id must be a str"):
        mm.info(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pool_strategy"):
        MemoryManager(100, pool_strategy="random")
    with pytest.raises(ValueError, match="total_budget must be > 0"):
        MemoryManager(0)
    assert mm.get_stats().allocated == 0 and mm.get_stats().allocation_count == 0
    done(mm, heap)


def test_fragmentation_ratio_is_measured() -> None:
    mm, heap, _ = make()
    ids = [mm.allocate(1000)[0] for _ in range(20)]
    for aid in ids[::2]:
        mm.deallocate(aid)
    frag = mm.get_stats().fragmentation_ratio
    assert 0.0 < frag < 1.0
    assert frag == pytest.approx(mm.blocks.stats().fragmentation)
    after = mm.defragment()
    assert after.fragmentation_ratio < frag
    for aid in ids[1::2]:
        mm.deallocate(aid)
    done(mm, heap)


# ----------------------------------------------------------------------------- pools
def test_pools_make_initial_chunks_grow_to_max_then_exhaust() -> None:
    mm, heap, _ = make()
    pool = mm.create_pool("thumbnails", chunk_size=1024, initial_count=2, max_count=3, strategy="lru")
    assert (pool.id, pool.chunk_size, pool.chunk_count, pool.max_chunks, pool.available, pool.allocated,
            pool.strategy) == ("thumbnails", 1024, 2, 3, 2, 0, "lru")
    assert mm.get_stats().allocated == 2048
    ids = [mm.allocate_from_pool("thumbnails", type="thumbnail")[0] for _ in range(3)]
    assert mm.get_stats().allocated == 3072 and mm.info(ids[0]).pool == "thumbnails"
    with pytest.raises(PoolExhaustedError, match="all its 3 chunks") as info:
        mm.allocate_from_pool("thumbnails")
    assert info.value.max_count == 3
    for aid in ids:
        mm.return_to_pool("thumbnails", aid)
    p = mm.get_stats().pool_stats["thumbnails"]
    assert (p.chunk_count, p.available, p.allocated) == (3, 3, 0)
    with pytest.raises(PoolExistsError):
        mm.create_pool("thumbnails", 1024)
    with pytest.raises(PoolNotFoundError):
        mm.allocate_from_pool("nope")
    with pytest.raises(PoolNotFoundError):
        mm.return_to_pool("nope", ids[0])
    done(mm, heap)


def test_pool_growth_stays_within_the_budget() -> None:
    mm, heap, _ = make(budget=3000)
    mm.create_pool("p", 1000, initial_count=1, max_count=10)
    a = [mm.allocate_from_pool("p")[0] for _ in range(3)]
    with pytest.raises(BudgetExceededError):
        mm.allocate_from_pool("p")
    assert mm.get_stats().allocated == 3000
    for aid in a:
        mm.deallocate(aid)  # back to the pool
    assert mm.get_stats().pool_stats["p"].available == 3
    done(mm, heap)


def _order(strategy: str) -> tuple[list[int], MemoryManager, GuardedHeap, Clock]:
    mm, heap, clock = make()
    mm.create_pool("p", 64, initial_count=3, max_count=3, strategy=strategy)
    got = []
    ids = []
    for _ in range(3):
        clock.now += 1
        aid, view = mm.allocate_from_pool("p")
        ids.append(aid)
        view[0] = len(ids)  # mark chunk
    clock.now += 1
    mm.access(ids[0])  # chunk 1 touched last
    for aid in (ids[1], ids[0], ids[2]):  # returned in the order 2, 1, 3
        clock.now += 1
        mm.return_to_pool("p", aid)
    aid, view = mm.allocate_from_pool("p")
    got.append(view[0])
    mm.return_to_pool("p", aid)
    return got, mm, heap, clock


@pytest.mark.parametrize(("strategy", "first"), [("fifo", 2), ("lifo", 3), ("adaptive", 3), ("lru", 2)])
def test_pool_strategies_pick_the_documented_chunk(strategy: str, first: int) -> None:
    got, mm, heap, _ = _order(strategy)
    assert got == [first]
    done(mm, heap)


def test_adaptive_pools_shrink_idle_chunks_towards_initial_count() -> None:
    mm, heap, clock = make(pool_strategy="adaptive")
    mm.create_pool("p", 100, initial_count=2, max_count=6)
    ids = [mm.allocate_from_pool("p")[0] for _ in range(5)]
    for aid in ids:
        mm.return_to_pool("p", aid)
    assert mm.get_stats().pool_stats["p"].chunk_count == 5
    mm.garbage_collect()
    assert mm.get_stats().pool_stats["p"].chunk_count == 5  # not idle yet
    clock.now += memguard.allocators.manager.ADAPTIVE_IDLE
    s = mm.garbage_collect()
    assert s.pool_stats["p"].chunk_count == 2 and s.allocated == 200
    done(mm, heap)


# ----------------------------------------------------------------------------- GC
def test_gc_frees_expired_unreferenced_allocations_by_lifetime() -> None:
    mm, heap, clock = make()
    short, _ = mm.allocate(10, lifetime="short")
    medium, _ = mm.allocate(10, lifetime="medium")
    long_, _ = mm.allocate(10, lifetime="long")
    held, _ = mm.allocate(10, lifetime="short")
    mm.add_ref(held)
    clock.now += 59
    assert mm.garbage_collect().allocation_count == 4
    clock.now += 2
    assert mm.garbage_collect().allocation_count == 3  # short gone
    mm.access(medium)  # resets its clock
    clock.now += 299
    assert mm.garbage_collect().allocation_count == 3
    clock.now += 2
    assert mm.garbage_collect().allocation_count == 2
    clock.now += 1800
    stats = mm.garbage_collect()
    assert stats.allocation_count == 1 and stats.allocated == 10  # the referenced one is never collected
    with pytest.raises(AllocationNotFoundError, match="lifetime"):
        mm.info(short)
    for gone in (medium, long_):
        with pytest.raises(AllocationNotFoundError):
            mm.info(gone)
    assert mm.release(held) == 0  # the last reference: freed
    assert mm.get_stats().allocation_count == 0
    done(mm, heap)


def test_gc_frees_allocations_whose_owner_died() -> None:
    mm, heap, _ = make()

    class Image:
        pass

    img = Image()
    aid, _ = mm.allocate(100, owner=img, lifetime="long")
    mm.garbage_collect()
    assert mm.info(aid).size == 100
    del img
    gc.collect()
    assert mm.garbage_collect().allocation_count == 0
    with pytest.raises(AllocationNotFoundError, match="owner died"):
        mm.access(aid)
    done(mm, heap)


def test_add_ref_and_release() -> None:
    mm, heap, _ = make(on_error="report")
    aid, _ = mm.allocate(10)
    assert mm.add_ref(aid) == 1 and mm.add_ref(aid) == 2
    assert mm.info(aid).reference_count == 2
    assert mm.release(aid) == 1 and mm.release(aid) == 0
    with pytest.raises(AllocationNotFoundError, match="release"):
        mm.info(aid)
    other, _ = mm.allocate(10)
    mm.release(other)
    assert [r.kind for r in heap.reports] == ["manager-over-release"]
    assert mm.info(other).size == 10
    mm.deallocate(other)
    heap.reports.clear()
    done(mm, heap)


# ----------------------------------------------------------------------------- defragmentation
def test_defragment_keeps_ids_valid_and_contents() -> None:
    mm, heap, _ = make()
    ids = []
    for i in range(30):
        aid, view = mm.allocate(500 + i)
        view[:] = bytes([i]) * len(view)
        ids.append(aid)
    for aid in ids[::3]:
        mm.deallocate(aid)
    stats = mm.defragment()
    assert mm.blocks.stats().fragmentation == stats.fragmentation_ratio
    for i, aid in enumerate(ids):
        if i % 3:
            assert bytes(mm.access(aid)) == bytes([i]) * (500 + i)
    for i, aid in enumerate(ids):
        if i % 3:
            mm.deallocate(aid)
    done(mm, heap)


# ----------------------------------------------------------------------------- findings
def test_return_to_the_wrong_pool_names_both_pools() -> None:
    mm, heap, _ = make(on_error="report")
    mm.create_pool("a", 64, 1)
    mm.create_pool("b", 64, 1)
    aid, _ = mm.allocate_from_pool("a")
    plain, _ = mm.allocate(64)
    mm.return_to_pool("b", aid)
    mm.return_to_pool("b", plain)
    r1, r2 = heap.reports
    assert r1.kind == "manager-wrong-pool" and "comes from pool 'a', not from pool 'b'" in r1.message
    assert r1.extra["pool"] == "b" and r1.extra["origin"] == "a"
    assert "no pool" in r2.message
    assert r1.stack[0].name == "test_return_to_the_wrong_pool_names_both_pools"
    assert mm.info(aid).pool == "a"  # nothing changed
    mm.return_to_pool("a", aid)
    mm.deallocate(plain)
    heap.reports.clear()
    done(mm, heap)


def test_wrong_pool_raises_pool_error_under_raise() -> None:
    mm, heap, _ = make()
    mm.create_pool("a", 64, 1)
    mm.create_pool("b", 64, 1)
    aid, _ = mm.allocate_from_pool("a")
    with pytest.raises(memguard.PoolError, match="not from pool 'b'"):
        mm.return_to_pool("b", aid)
    mm.return_to_pool("a", aid)
    heap.reports.clear()
    done(mm, heap)


def test_double_deallocate_is_a_finding_with_both_stacks() -> None:
    mm, heap, _ = make(on_error="report")
    aid, _ = mm.allocate(32)

    def first() -> None:
        mm.deallocate(aid)

    def second() -> None:
        mm.deallocate(aid)

    first()
    second()
    (r,) = heap.reports
    assert r.kind == "manager-double-free" and "already retired by deallocate()" in r.message
    assert r.stack[0].name.endswith("second") and r.free_stack[0].name.endswith("first")
    assert r.alloc_stack[0].name == "test_double_deallocate_is_a_finding_with_both_stacks"
    heap.reports.clear()
    done(mm, heap)


@pytest.mark.parametrize("how", ["deallocate", "garbage_collect", "defragment"])
def test_a_write_through_a_retired_view_names_who_retired_it(how: str) -> None:
    mm, heap, clock = make(on_error="report")
    hole, _ = mm.allocate(256)
    aid, view = mm.allocate(256, lifetime="short")
    if how == "deallocate":
        mm.deallocate(aid)
    elif how == "garbage_collect":
        clock.now += 61
        mm.garbage_collect()
    else:
        mm.deallocate(hole)
        mm.defragment()
    view[:4] = b"\x01\x02\x03\x04"
    kinds = [r.kind for r in heap.check()]
    assert kinds == ["pool-use-after-free"]
    message = heap.reports[-1].message
    expected = {"deallocate": "freed by deallocate()", "garbage_collect": "freed by garbage_collect() (its 'short'",
                "defragment": "defragmentation of 'mm'"}[how]
    assert expected in message
    heap.reports.clear()
    if how == "defragment":
        mm.deallocate(aid)
    else:
        mm.deallocate(hole)
    done(mm, heap)


def test_leaks_at_close_are_grouped_by_type_and_site() -> None:
    mm, heap, _ = make(on_error="report")
    mm.create_pool("p", 64, 1)
    for _ in range(3):
        mm.allocate(100, type="image")
    mm.allocate(10, type="glyph")
    mm.allocate_from_pool("p", type="thumb")
    reports = mm.close()
    assert sorted((r.extra["type"], r.count, r.size) for r in reports) == [("glyph", 1, 10), ("image", 3, 300),
                                                                           ("thumb", 1, 64)]
    assert all(r.kind == "manager-leak" for r in reports)
    assert all(r.alloc_stack[0].name == "test_leaks_at_close_are_grouped_by_type_and_site" for r in reports)
    assert heap.check() == []
    heap.close()


def test_no_findings_on_clean_use_and_the_plugin_agrees() -> None:
    mm, heap, clock = make(on_error="raise")
    mm.create_pool("p", 256, 2, 8, "fifo")
    live = []
    for i in range(50):
        clock.now += 3
        aid, view = mm.allocate(100 + i, lifetime="short")
        view[:] = bytes(len(view))
        pid, pview = mm.allocate_from_pool("p")
        pview[:] = bytes(256)
        live.append(aid)
        mm.return_to_pool("p", pid)
        if i % 7 == 0:
            mm.garbage_collect()
        if i % 11 == 0:
            mm.defragment()
    assert heap.check() == []
    clock.now += 61
    assert mm.garbage_collect().allocation_count == 0
    done(mm, heap)


def test_the_plugin_reports_broken_counters() -> None:
    stats = memguard.MemoryStats(100, 120, -20, 110, 1, {}, 0.0)
    problems = manager_budget.audit(stats, previous_peak=200)
    assert any("> total_budget" in p for p in problems) and any("decreased" in p for p in problems)
    pool = memguard.MemoryPool("p", 10, 3, 2, 1, 1, "fifo", 0.0)
    problems = manager_budget.audit(memguard.MemoryStats(100, 30, 70, 30, 1, {"p": pool}, 0.0))
    assert any("!= chunk_count" in p for p in problems) and any("> max_chunks" in p for p in problems)
    assert manager_budget.audit_sum(memguard.MemoryStats(100, 30, 70, 30, 0, {}, 0.0), ())


def test_layout_map_and_heapmap() -> None:
    mm, heap, _ = make()
    mm.create_pool("p", 128, 2)
    aid, _ = mm.allocate(1000, type="image")
    pid, _ = mm.allocate_from_pool("p", type="thumb")
    m = mm.layout_map(leaked={aid})
    states = {b.state for row in m.rows for b in row.blocks}
    assert {"leaked", "live", "free"} <= states
    sites = [b.site for row in m.rows for b in row.blocks if b.state in ("live", "leaked")]
    assert any("'image'" in s and "test_layout_map_and_heapmap" in s for s in sites)
    assert any("of pool 'p'" in s for s in sites)
    assert any("available chunk of pool 'p'" in b.site for row in m.rows for b in row.blocks)
    assert m.fragmentation == mm.get_stats().fragmentation_ratio
    assert mm.heapmap().startswith("<svg")
    assert mm.layout_map(width=100).rows
    mm.deallocate(aid)
    mm.return_to_pool("p", pid)
    done(mm, heap)


def test_closed_manager_refuses_work() -> None:
    mm, heap, _ = make()
    mm.close()
    with pytest.raises(memguard.HeapClosedError):
        mm.allocate(1)
    assert mm.close() == []
    heap.close()


# ----------------------------------------------------------------------------- threads
def test_eight_threads_allocating_returning_and_collecting() -> None:
    mm, heap, clock = make(budget=4 << 20)
    mm.create_pool("p", 512, 4, 64, "lru")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(150):
                aid, view = mm.allocate(64 + (i % 50), lifetime="short")
                view[0] = n
                pid, pview = mm.allocate_from_pool("p")
                pview[0] = n
                assert mm.access(aid)[0] == n
                mm.return_to_pool("p", pid)
                if i % 2:
                    mm.deallocate(aid)
                if i % 25 == 0:
                    mm.garbage_collect()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    clock.now += 61
    s = mm.garbage_collect()
    assert s.allocation_count == 0 and s.allocated == s.pool_stats["p"].chunk_count * 512
    done(mm, heap)


# ----------------------------------------------------------------------------- a model
class ManagerModel(RuleBasedStateMachine):
    """Random allocations, pools, references, collections and defragmentations against a dict model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.heap = GuardedHeap(on_error="raise", plugins=[manager_budget])
        self.mm = MemoryManager(20_000, heap=self.heap, clock=self.clock, page_size=4096, pool_strategy="lifo")
        self.mm.create_pool("p", 300, 1, 6)
        self.live: dict[str, tuple[int, str, int, bool, float, int]] = {}  # id -> size, lifetime, byte, pooled, t, refs
        self.chunks = 1
        self.peak = 300

    def _used(self) -> int:
        return sum(s for s, _, _, pooled, _, _ in self.live.values() if not pooled) + self.chunks * 300

    @rule(size=st.integers(1, 3000), lifetime=st.sampled_from(["short", "medium"]), byte=st.integers(0, 255))
    def allocate(self, size: int, lifetime: str, byte: int) -> None:
        if self._used() + size > 20_000:
            self._expire()  # the manager collects before refusing
        try:
            aid, view = self.mm.allocate(size, lifetime=lifetime)
        except BudgetExceededError:
            assert self._used() + size > 20_000
            return
        view[:] = bytes([byte]) * size
        self.live[aid] = (size, lifetime, byte, False, self.clock.now, 0)

    @rule(byte=st.integers(0, 255))
    def from_pool(self, byte: int) -> None:
        pooled = sum(1 for v in self.live.values() if v[3])
        if pooled == self.chunks and (self.chunks >= 6 or self._used() + 300 > 20_000):
            self._expire()  # a full pool, or growth over budget: the manager collects first
        try:
            aid, view = self.mm.allocate_from_pool("p")
        except (BudgetExceededError, PoolExhaustedError):
            return
        view[:] = bytes([byte]) * 300
        self.live[aid] = (300, "medium", byte, True, self.clock.now, 0)
        self.chunks = self.mm.get_stats().pool_stats["p"].chunk_count

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        aid = data.draw(st.sampled_from(sorted(self.live)))
        if self.live[aid][3] and data.draw(st.booleans()):
            self.mm.return_to_pool("p", aid)
        else:
            self.mm.deallocate(aid)
        del self.live[aid]

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def ref(self, data: st.DataObject) -> None:
        aid = data.draw(st.sampled_from(sorted(self.live)))
        size, lifetime, byte, pooled, t, refs = self.live[aid]
        if refs and data.draw(st.booleans()):
            self.mm.release(aid)
            refs -= 1
            if refs == 0:
                del self.live[aid]
                return
        else:
            self.mm.add_ref(aid)
            refs += 1
        self.live[aid] = (size, lifetime, byte, pooled, t, refs)

    @rule(seconds=st.sampled_from([1, 30, 61, 301]))
    def tick(self, seconds: int) -> None:
        self.clock.now += seconds

    def _expire(self) -> None:
        for aid, (_, lifetime, _, _, t, refs) in list(self.live.items()):
            if refs == 0 and self.clock.now - t >= memguard.allocators.manager.LIFETIMES[lifetime]:
                del self.live[aid]

    @rule()
    def collect(self) -> None:
        self.mm.garbage_collect()
        self._expire()

    @rule()
    def defragment(self) -> None:
        self.mm.defragment()

    @invariant()
    def consistent(self) -> None:
        s = self.mm.get_stats()
        assert s.allocated <= s.total_budget
        assert s.peak_usage >= self.peak
        self.peak = s.peak_usage
        self.chunks = s.pool_stats["p"].chunk_count
        assert s.allocated == self._used()
        assert s.allocation_count == len(self.live)
        for aid, (size, _, byte, _, _, _) in self.live.items():
            assert self.mm.info(aid).size == size
        assert self.heap.check() == []

    def teardown(self) -> None:
        for aid in list(self.live):
            view = self.mm.access(aid)
            assert view.tobytes() == bytes([self.live[aid][2]]) * self.live[aid][0]
            self.mm.deallocate(aid)
        assert self.mm.close() == []
        assert self.heap.check() == []
        self.heap.close()


TestManagerModel = ManagerModel.TestCase
TestManagerModel.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)


# ----------------------------------------------------------------------------- pytest, example, benchmark
def test_pytest_fails_a_leaking_test_and_a_collected_view_write(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=textwrap.dedent("""
        import memguard


        class Clock:
            now = 0.0

            def __call__(self):
                return self.now


        def test_leaks():
            mm = memguard.MemoryManager(1 << 20, heap=memguard.install(), name="leaky")
            mm.allocate(100, type="image")  # LEAK LINE


        def test_writes_through_a_collected_view():
            clock = Clock()
            mm = memguard.MemoryManager(1 << 20, heap=memguard.install(), clock=clock, name="gc")
            keep, _ = mm.allocate(64, lifetime="long")
            aid, view = mm.allocate(64, lifetime="short")
            clock.now += 61
            mm.garbage_collect()
            view[0] = 1
            mm.deallocate(keep)
            mm.close()


        def test_clean():
            mm = memguard.MemoryManager(1 << 20, heap=memguard.install(), name="clean")
            aid, view = mm.allocate(64)
            view[:] = bytes(64)
            mm.deallocate(aid)
            mm.close()
    """))
    result = pytester.runpytest_subprocess("--memguard", "-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=1, failed=2)
    text = result.stdout.str()
    assert "test_x.py:13 in test_leaks" in text  # the leaking line
    assert "pool-use-after-free" in text and "garbage_collect()" in text


def test_the_thumbnail_cache_example_runs() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "thumbnail_cache.py")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pool-use-after-free" in proc.stdout and "budget held" in proc.stdout


def test_the_benchmark_runs_quick() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_manager.py"), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "garbage_collect" in proc.stdout
