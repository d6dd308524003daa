"""The checker contract: findings, on_error, deferral, plugins and registration, shared by every checker."""

from __future__ import annotations

import ctypes
import threading
import time

import pytest

import memguard
from memguard import Checker, GuardedHeap, Report, hookimpl
from memguard.allocators.mempool import pools_of

memguard.register_kind("sentinel-damaged", memguard.HeapCorruptionError, rule="sentinel",
                       description="a sentinel word changed")


class Sentinel(Checker):
    """A checker over a heap that guards one 8-byte word in a block of that heap."""

    def __init__(self, heap: GuardedHeap, name: str = "sentinel") -> None:
        super().__init__(name=name, heap=heap, on_error=None)
        self.heap = heap
        self.address = heap.malloc(8)
        heap.view(self.address)[:] = b"SENTINEL"
        self._closed = False
        self._lock = threading.Lock()  # heap.check() may verify it from another thread

    @property
    def closed(self) -> bool:
        return self._closed

    def verify(self) -> list[Report]:
        with self._lock:
            if self._closed:
                return []
            found = bytes(self.heap.view(self.address))
            if found == b"SENTINEL":
                return []
            self.heap.view(self.address)[:] = b"SENTINEL"  # repaired: reported once
        return [Report(kind="sentinel-damaged", address=self.address, size=8, found=found,
                       expected=b"SENTINEL", message=f"sentinel {self.name!r} changed")]

    def close(self) -> list[Report]:
        reports = self.verify()
        with self._lock:
            self._closed = True
            self.heap.free(self.address)
        self.emit(reports)
        return reports


def damage(sentinel: Sentinel) -> None:
    ctypes.memset(sentinel.address, 0x41, 1)


def test_heap_check_verifies_every_live_checker_registered_with_it() -> None:
    heap = GuardedHeap(on_error="report")
    a, b = Sentinel(heap, "a"), Sentinel(heap, "b")
    assert heap.registered() == [a, b]
    damage(b)
    found = heap.check()
    assert [r.kind for r in found] == ["sentinel-damaged"]
    assert found[0].message == "sentinel 'b' changed"
    assert heap.reports == found
    assert heap.check() == []  # repaired: reported once
    b.close()
    damage(a)
    a.close()
    assert heap.registered() == []
    assert [r.message for r in heap.reports] == ["sentinel 'b' changed", "sentinel 'a' changed"]
    assert a.reports == [heap.reports[-1]]  # a checker keeps its own findings too
    heap.close()


def test_a_checker_over_a_heap_follows_its_on_error_and_raises_the_kinds_error() -> None:
    heap = GuardedHeap()  # on_error="raise"
    s = Sentinel(heap)
    damage(s)
    with pytest.raises(memguard.HeapCorruptionError, match="sentinel") as exc:
        heap.check()
    assert exc.value.kind == "sentinel-damaged"
    assert s.on_error == "raise"
    heap.on_error = "report"
    assert s.on_error == "report"
    with pytest.raises(AttributeError, match="follows the on_error"):
        s.on_error = "raise"
    with pytest.raises(ValueError, match="follows its on_error"):
        Checker(name="x", heap=heap, on_error="abort")
    s.close()
    heap.close()


def test_checkers_cannot_be_created_over_a_closed_heap_or_a_non_checker() -> None:
    heap = GuardedHeap()
    heap.close()
    with pytest.raises(memguard.HeapClosedError):
        Checker(name="late", heap=heap, on_error=None)
    with pytest.raises(TypeError, match="heap must be"):
        Checker(name="x", heap=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error must be one of"):
        Checker(name="x", on_error="ignore")
    with pytest.raises(TypeError, match="name must be a str"):
        Checker(name=3)  # type: ignore[arg-type]


def test_a_registered_checker_is_forgotten_when_it_is_garbage() -> None:
    heap = GuardedHeap()
    Checker(name="temporary", heap=heap, on_error=None)
    assert heap.registered() == []  # nothing holds it: the heap does not keep it alive
    heap.close()


def test_findings_reach_the_heaps_plugins() -> None:
    seen: list[str] = []

    class Listener:
        @hookimpl
        def memguard_report(self, report: Report) -> None:
            seen.append(report.kind)

    heap = GuardedHeap(on_error="report", plugins=[Listener()])
    s = Sentinel(heap)
    assert s.plugins is heap.plugins
    damage(s)
    heap.check()
    assert seen == ["sentinel-damaged"]
    s.close()
    heap.close()


def test_hold_errors_raises_when_the_compound_operation_is_done() -> None:
    heap = GuardedHeap()
    s = Sentinel(heap)
    steps = []
    damage(s)
    with pytest.raises(memguard.HeapCorruptionError):
        with s.hold_errors() as held:
            s.emit(s.verify())
            steps.append("bookkeeping finished")
            assert [r.kind for r in held] == ["sentinel-damaged"]
    assert steps == ["bookkeeping finished"]
    assert [r.kind for r in heap.reports] == ["sentinel-damaged"]
    with s.hold_errors() as held:  # nothing found: nothing raised
        pass
    assert held == []
    s.close()
    heap.close()


def test_deferred_findings_are_raised_by_the_next_check_in_order() -> None:
    heap = GuardedHeap()
    s = Sentinel(heap)
    damage(s)
    with heap.deferred_errors():
        s.emit(s.verify())
        assert heap.deferral.depth == 1
    assert heap.deferral.depth == 0
    with pytest.raises(memguard.HeapCorruptionError, match="sentinel"):
        heap.check()
    assert heap.check() == []
    s.close()
    heap.close()


def test_deferral_is_per_thread() -> None:
    heap = GuardedHeap()
    s = Sentinel(heap)
    raised: list[BaseException] = []
    damage(s)

    def other() -> None:
        try:
            s.emit(s.verify())
        except memguard.MemguardError as exc:
            raised.append(exc)

    with heap.deferred_errors():
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert [e.kind for e in raised] == ["sentinel-damaged"]
    s.close()
    heap.close()


def test_pools_are_checkers_registered_with_their_heap() -> None:
    heap = GuardedHeap(on_error="report")
    pool = memguard.MemPool(heap, name="nodes")
    objects = memguard.ObjectPool(32, heap=heap, name="objs")
    assert isinstance(pool, Checker) and isinstance(objects, Checker)
    assert pool in heap.registered() and objects in heap.registered()
    assert pools_of(heap) == [pool, objects.mempool]
    pool.destroy()
    objects.destroy()
    assert heap.registered() == [] and pools_of(heap) == []
    heap.close()


def test_pytest_checks_the_pools_of_the_process_heap_after_each_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import ctypes

        import pytest

        import memguard


        @pytest.fixture(scope="module")
        def region():
            heap = memguard.install()
            chunk = heap.malloc(256)
            pool = memguard.MemPool(heap, name="nodes")
            start = pool.add_chunk(chunk)
            region = pool.alloc(start + 32, 16)
            yield region
            pool.free(region)
            pool.destroy()
            heap.free(chunk)


        def test_clean(region):
            pass


        def test_overflow_without_touching_the_heap(region):
            ctypes.memset(region + 16, 0, 1)


        def test_after(region):
            pass
        """
    )
    # No plugin implements memguard_check here: only the registration makes the pool checked.
    result = pytester.runpytest_subprocess("--memguard", "--memguard-options=load_plugins=0", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*ERROR: memguard: pool-buffer-overflow*", "FAILED *::test_overflow_without_touching_the_heap*"])


def test_checkers_created_in_threads_while_the_heap_is_checked() -> None:
    heap = GuardedHeap(on_error="report")
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                Sentinel(heap).close()
        except BaseException as exc:  # pragma: no cover - the failure this test looks for
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 0.5  # enough rounds to meet half-built checkers, bounded in time
        checks = 0
        while checks < 300 and (checks < 20 or time.monotonic() < deadline):
            assert heap.check() == []
            checks += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    heap.close()
