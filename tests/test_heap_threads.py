"""Thread safety: several threads hammering one heap produce no report and consistent stats."""

from __future__ import annotations

import ctypes
import random
import sys
import threading

import memguard

THREADS = 4
OPS = 5000


def _worker(heap: memguard.GuardedHeap, seed: int, out: dict, errors: list) -> None:
    rng = random.Random(seed)
    live: dict[int, bytes] = {}
    allocs = frees = 0
    try:
        for _ in range(OPS):
            r = rng.random()
            if r < 0.5 or not live:
                size = rng.choice((0, 1, 8, 13, 16, 32, 64, 100, 255, 512, 4096, 4100, 20000))
                k = rng.randrange(4)
                if k == 0:
                    p = heap.malloc(size)
                elif k == 1:
                    p = heap.calloc(1, size)
                elif k == 2:
                    p = heap.memalign(rng.choice((16, 32, 128)), size)
                else:
                    p = heap.realloc(0, size)
                allocs += 1
                tag = bytes([seed & 0xFF, rng.randrange(256)])
                data = (tag * (size // 2 + 1))[:size]
                heap.view(p)[:] = data
                live[p] = data
            elif r < 0.65:
                p = rng.choice(list(live))
                size = rng.choice((1, 24, 300, 5000))
                old = live.pop(p)
                q = heap.realloc(p, size)
                allocs += 1
                frees += 1
                got = bytes(heap.view(q))
                assert got[: min(size, len(old))] == old[: min(size, len(old))]
                live[q] = got
            else:
                p = rng.choice(list(live))
                data = live.pop(p)
                assert bytes(heap.view(p)) == data, "another thread wrote into my block"
                heap.free(p)
                frees += 1
        for p, data in live.items():
            assert bytes(heap.view(p)) == data
    except BaseException as e:  # pragma: no cover - reported by the test
        errors.append(e)
    out[seed] = (allocs, frees, live)


def _run_threads(threads: list[threading.Thread], interval: float = 1e-5) -> None:
    """Start and join ``threads`` with the interpreter switching between them very often."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)


def _run(heap: memguard.GuardedHeap) -> dict:
    out: dict = {}
    errors: list = []
    _run_threads([threading.Thread(target=_worker, args=(heap, seed, out, errors)) for seed in range(1, THREADS + 1)])
    assert errors == []
    assert len(out) == THREADS
    return out


def test_threads_mixed_ops_no_reports_and_consistent_stats():
    heap = memguard.GuardedHeap(quarantine_bytes=256 << 10)
    out = _run(heap)
    assert heap.reports == []
    assert heap.check() == []
    allocs = sum(a for a, _, _ in out.values())
    frees = sum(f for _, f, _ in out.values())
    live = {p: d for _, _, lv in out.values() for p, d in lv.items()}
    assert len(live) == sum(len(lv) for _, _, lv in out.values())  # no address handed out twice
    s = heap.stats()
    assert s.total_allocs == allocs
    assert s.total_frees == frees
    assert s.live_blocks == len(live)
    assert s.live_bytes == sum(len(d) for d in live.values())
    assert s.peak_bytes >= s.live_bytes
    # every live block is known and intact
    for p, d in live.items():
        info = heap.block(p)
        assert info.state == "live" and info.size == len(d)
    assert sum(g.count for g in heap.leaks()) == len(live)
    for p in live:
        heap.free(p)
    assert heap.stats().live_blocks == 0
    assert heap.close() == []
    assert heap.reports == []


def test_threads_findings_are_reported_once_with_the_right_thread():
    heap = memguard.GuardedHeap(on_error="report")
    barrier = threading.Barrier(THREADS)
    names = []

    def worker(i: int) -> None:
        p = heap.malloc(8 + i)
        barrier.wait()
        heap.free(p)
        heap.free(p)  # each thread double-frees its own block
        names.append(threading.current_thread().name)

    threads = [threading.Thread(target=worker, args=(i,), name=f"w{i}") for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.kind for r in heap.reports) == ["double-free"] * THREADS
    assert sorted(r.thread.split(" ")[0] for r in heap.reports) == sorted(names)
    assert sorted(r.size for r in heap.reports) == [8, 9, 10, 11]
    heap.close(check=False)


def test_threads_check_concurrent_with_allocation():
    heap = memguard.GuardedHeap(quarantine_bytes=1 << 12)
    stop = threading.Event()
    found: list = []
    checks = 0

    def checker() -> None:
        nonlocal checks
        while not stop.is_set():
            found.extend(heap.check())
            checks += 1

    t = threading.Thread(target=checker)
    t.start()
    try:
        for i in range(3000):
            size = (0, 8, 24, 40, 64)[i % 5]
            p = heap.malloc(size)
            ctypes.memset(p, 0x11, size)
            heap.free(p)
    finally:
        stop.set()
        t.join()
    assert checks > 0
    assert found == []
    assert heap.reports == []
    heap.close()


def test_threads_racing_double_frees_are_each_reported_and_never_corrupt_the_heap():
    """Two threads free the same block at once: one free wins, the other is a double free,
    and the slot is never handed out twice afterwards."""
    heap = memguard.GuardedHeap(on_error="report", quarantine_bytes=1 << 12)
    rounds = 300
    barrier = threading.Barrier(2)
    blocks = [0] * rounds

    def racer(first: bool) -> None:
        for i in range(rounds):
            if first:
                blocks[i] = heap.malloc(24)
            barrier.wait()
            heap.free(blocks[i])
            barrier.wait()

    _run_threads([threading.Thread(target=racer, args=(k == 0,)) for k in range(2)], 1e-6)
    assert [r.kind for r in heap.reports] == ["double-free"] * rounds
    assert sorted(r.address for r in heap.reports) == sorted(blocks)
    s = heap.stats()
    assert (s.total_allocs, s.total_frees, s.live_blocks) == (rounds, rounds, 0)
    live = [heap.malloc(24) for _ in range(2 * rounds)]  # recycles every evicted slot
    assert len(set(live)) == len(live)
    for p in live:
        heap.free(p)
    assert heap.close() == []
    assert len(heap.reports) == rounds


class _FreesOnCollection:
    """An object in a reference cycle whose finalizer frees a block (as a binding's
    ``__del__`` would): the collector runs it in the middle of whatever allocates."""

    def __init__(self, heap: memguard.GuardedHeap) -> None:
        self.heap = heap
        self.address = heap.malloc(40)
        self.cycle = self

    def __del__(self) -> None:
        self.heap.free(self.address)
        self.heap.free(self.heap.malloc(8))


def test_finalizers_that_free_during_allocation_neither_deadlock_nor_corrupt():
    import gc

    heap = memguard.GuardedHeap(quarantine_bytes=1 << 12)
    done = threading.Event()
    errors: list = []

    def workload() -> None:
        try:
            for i in range(4000):
                _FreesOnCollection(heap)  # garbage at once, collected whenever gc runs
                heap.free(heap.malloc(16 + i % 200))
            gc.collect()
        except BaseException as e:  # pragma: no cover - reported by the test
            errors.append(e)
        finally:
            done.set()

    old = gc.get_threshold()
    gc.set_threshold(5)  # collect very often, inside the heap's own allocations
    try:
        t = threading.Thread(target=workload, daemon=True)
        t.start()
        assert done.wait(120), "the heap deadlocked when a finalizer re-entered it"
    finally:
        gc.set_threshold(*old)
    assert errors == []
    assert heap.reports == []
    assert heap.stats().live_blocks == 0
    assert heap.close() == []


def test_mutex_is_reentrant_through_with_and_excludes_other_threads():
    from memguard.heap.mutex import Mutex

    m = Mutex()
    with m:
        with m:
            assert m.held()
        assert m.held()
        try:
            m.take()
        except IndexError:
            pass
        else:  # pragma: no cover - the token is held
            raise AssertionError("the token was free while held")
    assert not m.held()
    m.take()  # free again
    m.give(True)

    total = 0

    def add() -> None:
        nonlocal total
        for _ in range(20000):
            with m:
                total += 1

    _run_threads([threading.Thread(target=add) for _ in range(4)], 1e-6)
    assert total == 80000
