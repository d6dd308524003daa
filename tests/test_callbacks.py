"""CAllocator: the guarded heap as C function pointers, driven from a real C library.

The deliberately buggy library (tests/clib/buggy.c) is compiled with the machine's C
compiler; its tests skip cleanly when there is none.
"""

from __future__ import annotations

import ctypes
import sys
import threading

import pytest

import memguard
from memguard import native
from memguard.heap.c_allocator import CAllocator, allocator_for
from memguard.errors import CallbackError, DoubleFreeError, HeapCorruptionError

from buggylib import BuggyLib, Unavailable, build


@pytest.fixture(scope="module")
def buggy(tmp_path_factory: pytest.TempPathFactory) -> BuggyLib:
    try:
        return build(tmp_path_factory.mktemp("clib"))
    except Unavailable as exc:
        pytest.skip(str(exc))


def c_allocator(heap: memguard.GuardedHeap) -> CAllocator:
    """``heap.c_allocator()`` (falls back to a per-heap CAllocator until the heap has the method)."""
    return allocator_for(heap)


#: The ``heap`` fixture (tests/conftest.py) raises in this module.
HEAP_ON_ERROR = "raise"


def here() -> tuple[str, int]:
    """(file, line) of the caller's next line."""
    f = sys._getframe(1)
    return f.f_code.co_filename, f.f_lineno + 1


# ----------------------------------------------------------------------------- the object
def test_callbacks_are_c_function_pointers_usable_as_struct_fields(heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)
    assert c_allocator(heap) is alloc  # one allocator per heap
    assert isinstance(alloc.malloc, native.MALLOC_FN)
    assert isinstance(alloc.opaque_alloc, native.ZALLOC_FN)
    strm = native.ZStream()
    strm.zalloc = alloc.opaque_alloc
    strm.zfree = alloc.opaque_free
    suite = native.XMLMemoryHandlingSuite(alloc.malloc, alloc.realloc, alloc.free)
    assert ctypes.cast(suite.malloc_fcn, ctypes.c_void_p).value == alloc.addresses["malloc"] != 0
    assert all(alloc.addresses.values())


def test_malloc_calloc_realloc_free_through_c(heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)
    p = alloc.malloc(40)
    assert p and heap.block(p).size == 40 and heap.block(p).state == "live"
    ctypes.memmove(p, b"0123456789", 10)
    q = alloc.realloc(p, 4000)
    assert q and q != p and ctypes.string_at(q, 10) == b"0123456789"
    assert heap.block(p).state == "quarantined"
    z = alloc.calloc(7, 9)
    assert bytes(heap.view(z)) == bytes(63)
    assert alloc.size(z) == 63 and alloc.size(None) == 0
    o = alloc.opaque_alloc(None, 3, 5)
    assert heap.block(o).size == 15
    alloc.opaque_free(None, o)
    alloc.free(q)
    alloc.free(z)
    alloc.free(None)  # free(NULL) is a no-op
    assert heap.stats().live_blocks == 0
    assert heap.check() == [] and heap.reports == []


def test_function_builds_other_prototypes_and_validates(heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)
    bz = alloc.function("opaque_alloc", native.BZALLOC_FN)
    assert alloc.function("opaque_alloc", native.BZALLOC_FN) is bz
    p = bz(None, 4, 4)
    assert heap.block(p).size == 16
    lz = alloc.function("opaque_calloc", native.LZMA_ALLOC_FN)
    q = lz(None, 2, 8)
    assert bytes(heap.view(q)) == bytes(16)
    alloc.opaque_free(None, p)
    alloc.opaque_free(None, q)
    with pytest.raises(ValueError, match="unknown callback kind"):
        alloc.function("mmap", native.MALLOC_FN)
    with pytest.raises(TypeError, match="takes 1 argument"):
        alloc.function("malloc", native.CALLOC_FN)
    with pytest.raises(TypeError, match="CFUNCTYPE"):
        alloc.function("malloc", int)
    with pytest.raises(TypeError, match="GuardedHeap"):
        CAllocator(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        allocator_for(42)


def test_failed_allocation_is_null_without_a_report(heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)
    assert alloc.malloc(native.SIZE_MAX) is None
    assert alloc.calloc(1 << 40, 1 << 40) is None  # overflows size_t
    assert alloc.null_returns == 2
    assert heap.reports == [] and heap.check() == []


def test_findings_inside_callbacks_are_deferred_to_check(heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)
    p = alloc.malloc(32)
    alloc.free(p)
    alloc.free(p)  # double free: must not raise through C
    junk = ctypes.create_string_buffer(64)
    alloc.free(ctypes.addressof(junk) + 8)  # foreign pointer: never dereferenced
    assert alloc.realloc(ctypes.addressof(junk), 10) is None  # realloc of a bad pointer: NULL
    assert [r.kind for r in heap.reports] == ["double-free", "bad-free", "bad-free"]
    with pytest.raises(DoubleFreeError) as info:
        heap.check()
    assert info.value.report is heap.reports[0]
    assert heap.check() == []  # each deferred finding surfaces once


def test_bad_arguments_become_callback_error_reports(heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)
    bz = alloc.function("opaque_alloc", native.BZALLOC_FN)
    line = sys._getframe().f_lineno + 1
    assert bz(None, -1, 16) is None
    (report,) = heap.reports
    assert report.kind == "callback-error"
    assert "negative" in report.message and "opaque_alloc" in report.message
    assert report.stack and report.stack[0].lineno == line and report.stack[0].filename == __file__
    junk = ctypes.create_string_buffer(32)
    assert alloc.size(ctypes.addressof(junk)) == 0  # xSize of a foreign pointer
    assert heap.reports[-1].kind == "callback-error"
    with pytest.raises(CallbackError):
        heap.check()


def test_report_mode_records_and_carries_on() -> None:
    with memguard.GuardedHeap(on_error="report") as h:
        alloc = c_allocator(h)
        p = alloc.malloc(8)
        alloc.free(p)
        alloc.free(p)
        assert [r.kind for r in h.reports] == ["double-free"]
        assert [r.kind for r in h.check()] == []


def test_callbacks_after_close_return_null_and_never_crash() -> None:
    h = memguard.GuardedHeap()
    alloc = c_allocator(h)
    p = alloc.malloc(16)
    h.close(check=False)
    assert alloc.malloc(16) is None
    alloc.free(p)
    assert alloc.errors and all(isinstance(e, memguard.HeapClosedError) for e in alloc.errors)


def test_callbacks_from_several_threads(heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)

    def work() -> None:
        for n in range(1, 300):
            alloc.free(alloc.malloc(n))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert heap.stats().total_allocs == 4 * 299 and heap.stats().live_blocks == 0
    assert heap.reports == []


# ----------------------------------------------------------------------- the buggy C library
def test_clean_c_code_produces_no_report(buggy: BuggyLib, heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)
    buggy.buggy_set_allocator(alloc.malloc, alloc.free)
    for n in (0, 1, 15, 16, 17, 4096, 5000, 1 << 20):
        assert buggy.buggy_clean(n) == (ord("a") if n else 0)
    assert buggy.buggy_churn(2000, 24) == 2000
    assert heap.check() == [] and heap.reports == [] and heap.leaks() == []


@pytest.mark.parametrize("size", [24, 40, 6000])
def test_overflow_by_c_is_reported_at_the_python_call_site(
    buggy: BuggyLib, heap: memguard.GuardedHeap, size: int
) -> None:
    alloc = c_allocator(heap)
    buggy.buggy_set_allocator(alloc.malloc, alloc.free)
    filename, line = here()
    buggy.buggy_overflow(size)
    (report,) = heap.reports
    assert report.kind == "heap-buffer-overflow" and report.size == size and report.offset == size
    assert report.found == b"A"
    assert (report.alloc_stack[0].filename, report.alloc_stack[0].lineno) == (filename, line)
    assert (report.stack[0].filename, report.stack[0].lineno) == (filename, line)
    with pytest.raises(HeapCorruptionError):
        heap.check()


def test_underflow_double_free_interior_and_foreign_free(buggy: BuggyLib, heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)
    buggy.buggy_set_allocator(alloc.malloc, alloc.free)
    lines = {}
    filename, lines["heap-buffer-underflow"] = here()
    buggy.buggy_underflow(32)
    _, lines["double-free"] = here()
    buggy.buggy_double_free(48)
    _, lines["bad-free"] = here()
    buggy.buggy_interior_free(64)
    buggy.buggy_foreign_free()
    kinds = [r.kind for r in heap.reports]
    assert kinds == ["heap-buffer-underflow", "double-free", "bad-free", "bad-free"]
    for report in heap.reports[:3]:
        assert (report.stack[0].filename, report.stack[0].lineno) == (filename, lines[report.kind])
        assert report.alloc_stack[0].lineno == lines[report.kind]
    double = heap.reports[1]
    assert double.free_stack[0].lineno == lines["double-free"]
    assert heap.reports[2].offset == 8 and heap.reports[2].size == 64
    assert heap.reports[3].size == 0  # a foreign address: nothing known, nothing read
    with pytest.raises(HeapCorruptionError):
        heap.check()
    assert heap.stats().live_blocks == 0


def test_use_after_free_by_c_is_found_by_check(buggy: BuggyLib, heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)
    buggy.buggy_set_allocator(alloc.malloc, alloc.free)
    filename, line = here()
    buggy.buggy_use_after_free(40)
    assert heap.reports == []  # the write happens after free returned
    with pytest.raises(HeapCorruptionError) as info:
        heap.check()
    report = info.value.report
    assert report.kind == "heap-use-after-free" and report.offset == 0 and report.found == b"z"
    assert (report.alloc_stack[0].filename, report.alloc_stack[0].lineno) == (filename, line)
    assert report.free_stack[0].lineno == line


def test_use_after_free_found_when_the_block_leaves_the_quarantine_in_a_c_free(buggy: BuggyLib) -> None:
    with memguard.GuardedHeap(on_error="raise", quarantine_bytes=256) as h:
        alloc = c_allocator(h)
        buggy.buggy_set_allocator(alloc.malloc, alloc.free)
        filename, line = here()
        buggy.buggy_use_after_free(40)
        _, churn_line = here()
        assert buggy.buggy_churn(50, 64) == 50  # its frees push the damaged block out
        (report,) = h.reports
        assert report.kind == "heap-use-after-free" and report.found == b"z"
        assert (report.alloc_stack[0].filename, report.alloc_stack[0].lineno) == (filename, line)
        assert report.stack[0].lineno == churn_line  # detected inside a free called from C
        with pytest.raises(HeapCorruptionError):
            h.check()


def test_leak_by_c_points_at_the_python_line(buggy: BuggyLib, heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)
    buggy.buggy_set_allocator(alloc.malloc, alloc.free)
    mark = heap.snapshot()
    filename, line = here()
    p = buggy.buggy_leak(100)
    (group,) = heap.leaks(since=mark)
    assert group.size == 100 and group.count == 1 and group.addresses == (p,)
    assert (group.stack[0].filename, group.stack[0].lineno) == (filename, line)
    assert "Direct leak of 100 byte(s)" in memguard.format_leaks(heap.leaks(since=mark))
    alloc.free(p)
    assert heap.leaks(since=mark) == []


def test_null_from_the_allocator_reaches_c(buggy: BuggyLib, heap: memguard.GuardedHeap) -> None:
    alloc = c_allocator(heap)
    buggy.buggy_set_allocator(alloc.malloc, alloc.free)
    assert buggy.buggy_check_null(native.SIZE_MAX) == 1
    assert buggy.buggy_check_null(10) == 0
    assert heap.reports == []


def test_findings_inside_callbacks_reach_memguard_report_plugins(buggy: BuggyLib) -> None:
    seen: list[str] = []

    class Recorder:
        @memguard.hookimpl
        def memguard_report(self, report: memguard.Report) -> None:
            seen.append(report.kind)

    with memguard.GuardedHeap(on_error="report", plugins=[Recorder()]) as h:
        alloc = c_allocator(h)
        buggy.buggy_set_allocator(alloc.malloc, alloc.free)
        buggy.buggy_double_free(16)
        alloc.function("opaque_alloc", native.BZALLOC_FN)(None, 1, -1)
        assert seen == ["double-free", "callback-error"]
