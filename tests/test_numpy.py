"""memguard.numpy: every NumPy array's data on the guarded heap (NEP 49 handler)."""

from __future__ import annotations

import ctypes
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest

np = pytest.importorskip("numpy")

import memguard  # noqa: E402
import memguard.numpy as mnp  # noqa: E402
from memguard.errors import HeapClosedError, HeapCorruptionError, TrampolineUnavailableError  # noqa: E402
from memguard.native import trampoline  # noqa: E402

if not trampoline.available():  # pragma: no cover - covered by the refusal test below
    pytestmark = pytest.mark.skip(reason=f"memguard.numpy needs the trampolines: {trampoline.unavailable_reason()}")


def line_of_next() -> int:
    return sys._getframe(1).f_lineno + 1


def user_line(stack: tuple[memguard.Frame, ...]) -> int:
    """The line of this file in a stack (NumPy's own Python frames, like np.ones, come first)."""
    return next(f.lineno for f in stack if f.filename == __file__)


def handler_name() -> str:
    return str(np._core.multiarray.get_handler_name())


def on_heap(heap: memguard.GuardedHeap, array: Any) -> bool:
    try:
        return heap.block(array.ctypes.data).state == "live"
    except memguard.InvalidAddressError:
        return False


@pytest.fixture
def guarded(heap: memguard.GuardedHeap) -> Any:
    with mnp.guarded(heap):
        yield heap


def test_every_kind_of_array_lands_on_the_heap(guarded: memguard.GuardedHeap) -> None:
    heap = guarded
    assert handler_name() == mnp.HANDLER_NAME and mnp.installed() is heap
    arrays = {
        "empty": np.empty(10),
        "zeros": np.zeros((3, 4), dtype=np.int32),
        "ufunc output": np.arange(100) * 2.5,
        "object": np.array([object(), 1, "x"], dtype=object),
        "string": np.array(["abc", "de"]),
        "bytes": np.array([b"abc"]),
        "datetime": np.array(["2024-01-01"], dtype="M8[D]"),
        "zero-size": np.empty(0),
        "sorted": np.sort(np.random.default_rng(1).random(1000)),
        "copy": np.ones(7).copy(),
        "large": np.zeros(1 << 16),
    }
    for name, array in arrays.items():
        assert on_heap(heap, array), name
        assert heap.block(array.ctypes.data).size == max(array.nbytes, 1), name
    zeros = arrays["zeros"]
    assert not zeros.any()  # calloc: zeroed
    grown = np.arange(4)
    grown.resize(100, refcheck=False)  # realloc
    assert on_heap(heap, grown) and heap.block(grown.ctypes.data).size == 800 and list(grown[:4]) == [0, 1, 2, 3]
    assert heap.stats().live_blocks >= len(arrays) + 1
    del arrays, zeros, grown
    assert heap.check() == [] and heap.reports == []


def test_a_write_past_an_arrays_end_reports_the_allocating_line(guarded: memguard.GuardedHeap) -> None:
    line = line_of_next()
    a = np.zeros(3)
    ctypes.memset(a.ctypes.data + a.nbytes, 0x41, 1)
    (report,) = guarded.check()
    assert report.kind == "heap-buffer-overflow" and report.size == 24 and report.offset == 24
    assert (report.alloc_stack[0].filename, report.alloc_stack[0].lineno) == (__file__, line)
    ctypes.memset(a.ctypes.data + a.nbytes, 0, 0)


def test_a_write_through_a_stale_data_pointer_is_a_use_after_free(guarded: memguard.GuardedHeap) -> None:
    line = line_of_next()
    a = np.ones(8)
    address = a.ctypes.data
    del_line = line_of_next()
    del a
    ctypes.memset(address, 0, 8)  # the block is in the quarantine: memguard's memory
    (report,) = guarded.check()
    assert report.kind == "heap-use-after-free"
    assert user_line(report.alloc_stack) == line and user_line(report.free_stack) == del_line


ERROR_PATHS: list[Callable[[], object]] = [
    lambda: np.fromstring("x", sep=","),
    lambda: np.array(["a", "b"], dtype=float),
    lambda: np.add(np.ones(3), "x"),
    lambda: np.arange(10).reshape(3, 4),
    lambda: np.ones(3)[np.array([5])],
    lambda: np.concatenate([np.ones(3), np.ones((2, 2))]),
    lambda: np.linalg.inv(np.zeros((3, 3))),
    lambda: np.array([[1, 2], [3]], dtype=float),
]


def _outcome(fn: Callable[[], object]) -> tuple[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - compared as they are
            return type(exc).__name__, str(exc)
    return "", ""


def test_exceptions_raised_in_numpys_error_paths_reach_the_caller_unchanged(heap: memguard.GuardedHeap) -> None:
    plain = [_outcome(fn) for fn in ERROR_PATHS]
    assert all(kind and kind != "SystemError" for kind, _ in plain)
    with mnp.guarded(heap):
        before = heap.stats().total_allocs
        guarded = [_outcome(fn) for fn in ERROR_PATHS]
        assert heap.stats().total_allocs > before  # the error paths did allocate on the heap
    assert guarded == plain
    assert heap.check() == [] and heap.reports == []


def test_a_clean_workload_has_no_finding(heap: memguard.GuardedHeap) -> None:
    with mnp.guarded(heap):
        rng = np.random.default_rng(0)
        m = rng.random((40, 40))
        total = 0.0
        for _ in range(20):
            m = (m @ m.T) / 40
            total += float(np.linalg.norm(np.linalg.solve(m + np.eye(40), rng.random(40))))
            s = np.array([str(x) for x in m[0]])
            total += len(np.unique(s))
            v = np.concatenate([m.ravel(), np.empty(0)])
            v.sort()
            total += float(np.cumsum(v)[-1])
        assert total > 0
        del m, s, v
    assert heap.check() == [] and heap.reports == []


def test_the_sized_free_mismatch_is_reported_only_when_asked(heap: memguard.GuardedHeap) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with mnp.guarded(heap):
            assert np.fromstring("", sep=",").size == 0
        assert heap.reports == []
        with mnp.guarded(heap, check_free_size=True):
            line = line_of_next()
            np.fromstring("", sep=",")  # NumPy frees its 8-byte block with size=1
    (report,) = heap.reports
    assert report.kind == "free-size-mismatch" and report.size == 8 and report.extra["passed_size"] == 1
    assert report.stack[0].lineno == line and report.alloc_stack[0].lineno == line


class Worker(threading.Thread):
    """A Thread subclass that overrides run()."""

    def __init__(self) -> None:
        super().__init__()
        self.array: Any = None
        self.name_seen = ""

    def run(self) -> None:
        self.name_seen = handler_name()
        self.array = np.ones(5)


def test_threads_started_afterwards_get_the_handler(heap: memguard.GuardedHeap) -> None:
    started = threading.Event()
    release = threading.Event()
    before: dict[str, Any] = {}

    def early() -> None:
        started.set()
        release.wait(10)
        before["name"] = handler_name()

    old = threading.Thread(target=early)
    old.start()
    started.wait(10)
    with mnp.guarded(heap):
        release.set()
        old.join()
        worker = Worker()
        worker.start()
        worker.join()
        with ThreadPoolExecutor(2) as pool:
            made = list(pool.map(lambda n: (handler_name(), np.zeros(n)), [3, 4, 5]))
    assert before["name"] == "default_allocator"  # started before install: NumPy's own
    assert worker.name_seen == mnp.HANDLER_NAME and on_heap(heap, worker.array)
    assert all(name == mnp.HANDLER_NAME and on_heap(heap, a) for name, a in made)
    after = Worker()
    after.start()
    after.join()
    assert after.name_seen == "default_allocator" and not on_heap(heap, after.array)
    assert heap.reports == []


def test_arrays_free_into_their_heap_after_uninstall_and_install_stacks() -> None:
    outer = memguard.GuardedHeap(name="outer", on_error="report")
    inner = memguard.GuardedHeap(name="inner", on_error="report")
    mnp.install(outer)
    try:
        a = np.ones(3)
        with mnp.guarded(inner) as h:
            assert h is inner and mnp.installed() is inner
            b = np.ones(3)
        assert mnp.installed() is outer
        c = np.ones(3)
    finally:
        mnp.uninstall()
    assert mnp.installed() is None and handler_name() == "default_allocator"
    mnp.uninstall()  # nothing installed: a no-op
    assert on_heap(outer, a) and on_heap(inner, b) and on_heap(outer, c)
    pa, pb = a.ctypes.data, b.ctypes.data
    del a, b, c
    assert outer.block(pa).state == "quarantined" and inner.block(pb).state == "quarantined"
    assert outer.check() == [] and inner.check() == []


def test_closing_the_heap_gives_numpy_its_own_handler_back() -> None:
    h = memguard.GuardedHeap(on_error="report")
    mnp.install(h)
    a = np.ones(3)
    h.close(check=False)  # without uninstall(): NumPy must not keep allocating from a closed heap
    assert mnp.installed() is None and handler_name() == "default_allocator"
    b = np.ones(3)
    assert np._core.multiarray.get_handler_name(b) == "default_allocator" and list(a) == [1.0, 1.0, 1.0]
    mnp.uninstall()  # nothing left to undo
    assert handler_name() == "default_allocator"
    worker = Worker()
    worker.start()
    worker.join()
    assert worker.name_seen == "default_allocator"


def test_an_array_outliving_its_closed_heap_is_safe() -> None:
    h = memguard.GuardedHeap(on_error="report")
    with mnp.guarded(h):
        a = np.arange(10)
    h.close(check=False)
    assert list(a) == list(range(10))  # the heap keeps the memory of a live block
    with pytest.raises(HeapClosedError):
        mnp.install(h)
    del a  # a free into a closed heap: recorded, never raises through NumPy


def test_the_process_heap_is_the_default() -> None:
    heap = memguard.install()
    with mnp.guarded() as h:
        assert h is heap is memguard.process_heap()
        a = np.zeros(4)
        assert on_heap(heap, a)
    del a


def test_bad_arguments_are_clear_errors(heap: memguard.GuardedHeap) -> None:
    with pytest.raises(TypeError, match="GuardedHeap"):
        mnp.install(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="check_free_size"):
        mnp.install(heap, check_free_size=1)  # type: ignore[arg-type]
    assert mnp.installed() is None


def test_handlers_nothing_uses_are_reclaimed() -> None:
    kept = memguard.GuardedHeap()
    with mnp.guarded(kept):
        a = np.ones(2)  # holds its handler
    heaps = []
    for _ in range(3):
        h = memguard.GuardedHeap()
        with mnp.guarded(h):
            np.ones(2)
        h.close()
        heaps.append(h)
    with mnp.guarded(memguard.GuardedHeap()):
        pass
    live = {id(x.heap) for x in mnp._handlers.values()}
    assert id(kept) in live and not any(id(h) in live for h in heaps)
    del a


def test_install_refuses_without_the_trampolines(monkeypatch: pytest.MonkeyPatch, heap: memguard.GuardedHeap) -> None:
    state = trampoline._State()
    monkeypatch.setenv(trampoline.ENV_VAR, "1")
    state.load()
    monkeypatch.setattr(trampoline, "_state", state)
    with pytest.raises(TrampolineUnavailableError, match="memguard.numpy needs") as info:
        mnp.install(heap)
    assert info.value.integration == "memguard.numpy"
    assert mnp.installed() is None and handler_name() == "default_allocator"


# ------------------------------------------------------------------ reachability and retention
class Holder:
    pass


def test_reachability_retains_reachable_arrays_and_keeps_c_leaks(heap: memguard.GuardedHeap) -> None:
    from memguard.reporting.retention import without_retained

    holder = Holder()
    with mnp.guarded(heap):
        mark = heap.mark()
        holder.view = np.arange(10)[2:5]          # a view: its base owns the block
        cycle: list[Any] = [np.ones(4)]
        cycle.append(cycle)                       # garbage once dropped: collected, not leaked
        del cycle
        lost = np.ones(7)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(lost))
        lost_address = lost.ctypes.data
        del lost
    groups = heap.leaks(since=mark)
    assert sum(g.count for g in groups) in (2, 3)  # the cycle may have been collected already
    leaks = without_retained(heap, groups)
    assert [(g.size, g.count, g.addresses) for g in leaks] == [(56, 1, (lost_address,))]
    assert holder.view.base is not None


def test_a_failing_retainer_loses_no_leak(heap: memguard.GuardedHeap, capsys: pytest.CaptureFixture[str]) -> None:
    from memguard.reporting import retention

    def broken(heap: Any, addresses: Any) -> set[int]:
        raise RuntimeError("no")

    retention.add_retainer(broken)
    retention.add_retainer(broken)  # once
    try:
        p = heap.malloc(8)
        groups = heap.leaks()
        assert retention.without_retained(heap, groups) == groups
        assert "retainer" in capsys.readouterr().err
        heap.free(p)
    finally:
        retention.remove_retainer(broken)
        retention.remove_retainer(broken)  # a no-op
