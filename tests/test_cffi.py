"""memguard.cffi: ``ffi.new`` buffers on the guarded heap (skipped when cffi is missing)."""

from __future__ import annotations

import gc
import sys
from typing import Any, Iterator

import pytest

import memguard
from memguard import process

cffi = pytest.importorskip("cffi")
import memguard.cffi as mcffi  # noqa: E402

HERE = __file__


@pytest.fixture
def ffi() -> Any:
    f = cffi.FFI()
    f.cdef("struct point { int x; int y; char name[12]; };")
    return f


def line_of(text: str) -> int:
    """The line of this file holding ``text`` (a planted bug's line)."""
    with open(HERE) as fh:
        return next(i for i, line in enumerate(fh, 1) if text in line and "line_of" not in line)


def address(ffi: Any, cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def test_overflow_of_an_ffi_new_buffer_names_the_users_line(heap: memguard.GuardedHeap, ffi: Any) -> None:
    new = mcffi.allocator(ffi, heap)
    buf = new("char[8]")  # planted: overflow buffer
    ffi.cast("char *", buf)[8] = b"A"  # one byte past the end (a value no redzone pattern holds)
    del buf
    [report] = heap.reports
    assert report.kind == "heap-buffer-overflow" and report.size == 8
    assert (report.alloc_stack[0].filename, report.alloc_stack[0].lineno) == (HERE, line_of("planted: overflow buffer"))
    # cffi's Python wrapper frames never show.
    assert not any("/cffi/" in f.filename for f in report.alloc_stack + report.stack)


def test_underflow_and_use_after_free_of_ffi_new_buffers(heap: memguard.GuardedHeap, ffi: Any) -> None:
    new = mcffi.allocator(ffi, heap)
    pts = new("struct point[2]")
    ffi.cast("char *", pts)[-1] = b"\x01"  # one byte before the start
    del pts
    assert [r.kind for r in heap.reports] == ["heap-buffer-underflow"]
    p = new("int[4]", [1, 2, 3, 4])  # planted: stale pointer
    stale = ffi.cast("int *", address(ffi, p))
    del p  # planted: dropped here
    stale[1] = 7  # a write through the pointer kept after the buffer died
    [uaf] = heap.check()
    assert uaf.kind == "heap-use-after-free"
    assert uaf.alloc_stack[0].lineno == line_of("planted: stale pointer")
    assert uaf.free_stack[0].lineno == line_of("planted: dropped here")


def test_leaked_ffi_new_buffers_are_leaks_at_the_users_line(heap: memguard.GuardedHeap, ffi: Any) -> None:
    new = mcffi.allocator(ffi, heap)
    before = heap.snapshot()
    kept = [new("struct point *") for _ in range(3)]  # planted: leak
    [group] = heap.leaks(since=before)
    assert group.count == 3 and group.size == 3 * ffi.sizeof("struct point")
    assert group.stack[0].lineno == line_of("planted: leak")
    assert "Direct leak of 60 byte(s) in 3 object(s)" in memguard.format_leaks([group])
    del kept
    assert heap.leaks(since=before) == []


def test_a_clean_cffi_workload_has_no_findings(heap: memguard.GuardedHeap, ffi: Any) -> None:
    new = mcffi.allocator(ffi, heap)
    for i in range(200):
        s = new("struct point *", {"x": i, "y": -i, "name": b"p%d" % i})
        assert (s.x, s.y, ffi.string(s.name)) == (i, -i, b"p%d" % i)
        text = new("char[]", b"hello")
        assert ffi.sizeof(text) == 6 and ffi.string(text) == b"hello"  # NUL terminator included
        ffi.memmove(text, b"HELLO", 5)
        arr = new(ffi.typeof("int[]"), list(range(i % 17)))
        assert list(arr) == list(range(i % 17))
        with new("double[3]") as d:  # released at the end of the block, cffi's documented way
            d[2] = 1.5
        ffi.release(text)
        del s, text, arr
    gc.collect()
    assert heap.check() == [] and heap.reports == [] and heap.leaks() == []
    assert heap.stats().total_allocs == 800


def test_buffers_start_with_the_fill_pattern_or_zeroed(heap: memguard.GuardedHeap, ffi: Any) -> None:
    assert bytes(ffi.buffer(mcffi.allocator(ffi, heap)("char[4]"))) == b"\xcd" * 4
    assert bytes(ffi.buffer(mcffi.allocator(ffi, heap, should_clear_after_alloc=True)("char[4]"))) == b"\0" * 4


def test_an_exception_on_cffis_error_path_reaches_the_caller_unchanged(heap: memguard.GuardedHeap, ffi: Any) -> None:
    new = mcffi.allocator(ffi, heap)
    with pytest.raises(TypeError) as plain:
        ffi.new("int[3]", [1, 2, "x"])
    with pytest.raises(TypeError) as guarded:
        new("int[3]", [1, 2, "x"])  # cffi allocated, failed converting, freed the block
    assert str(guarded.value) == str(plain.value) and guarded.value.__context__ is None
    with pytest.raises(IndexError):
        new("int[2]", [1, 2, 3])
    assert heap.stats().total_allocs == heap.stats().total_frees == 2
    assert heap.check() == [] and heap.reports == [] and heap.leaks() == []


def test_an_exception_leaving_a_frame_that_frees_a_buffer_is_unchanged(heap: memguard.GuardedHeap, ffi: Any) -> None:
    new = mcffi.allocator(ffi, heap)

    def fails() -> None:
        buf = new("char[32]")  # freed while the KeyError below is propagating
        buf[0] = b"x"
        raise KeyError("boom")

    for _ in range(3):
        with pytest.raises(KeyError) as err:
            fails()
        assert err.value.args == ("boom",) and err.value.__context__ is None
    del err  # its traceback holds the last frame, and the buffer in it
    assert heap.stats().total_frees == 3 and heap.check() == [] and heap.reports == []


def test_a_closed_heap_gives_heap_closed_error_and_late_frees_are_safe(ffi: Any) -> None:
    h = memguard.GuardedHeap()
    new = mcffi.allocator(ffi, h)
    alive = new("int[4]")
    h.close(check=False)
    with pytest.raises(memguard.HeapClosedError, match="closed"):
        new("int[4]")
    del alive  # freed into a closed heap: nothing happens
    gc.collect()


def test_bad_arguments_are_clear_errors(heap: memguard.GuardedHeap, ffi: Any) -> None:
    with pytest.raises(TypeError, match="ffi must be a cffi FFI object"):
        mcffi.allocator(object(), heap)
    with pytest.raises(TypeError, match="expected a CAllocator or a GuardedHeap"):
        mcffi.allocator(ffi, "heap")  # type: ignore[arg-type]
    new = mcffi.allocator(ffi, heap.c_allocator())
    assert new.heap is heap and "GuardedAllocator over" in repr(new)
    with pytest.raises(TypeError, match="unknown size"):
        new("struct nosuch *")  # the same error as ffi.new's


def test_a_compiled_style_ffi_is_accepted(heap: memguard.GuardedHeap) -> None:
    import _cffi_backend

    new = mcffi.allocator(_cffi_backend.FFI(), heap)
    p = new("long[3]", [1, 2, 3])
    assert list(p) == [1, 2, 3] and heap.stats().live_blocks == 1


@pytest.fixture
def no_process_heap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MEMGUARD_OPTIONS", raising=False)
    for name in ("_heap", "_options", "_suppressions"):
        monkeypatch.setattr(process, name, None)
    yield
    memguard.uninstall()


def test_the_process_heap_is_the_default(ffi: Any, no_process_heap: None) -> None:
    new = mcffi.allocator(ffi)
    p = new("char[16]")
    heap = memguard.process_heap()
    assert heap is not None and new.heap is heap and heap.stats().live_blocks == 1
    del p
    assert heap.stats().live_blocks == 0


def test_missing_cffi_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch, heap: memguard.GuardedHeap) -> None:
    monkeypatch.setitem(sys.modules, "_cffi_backend", None)
    with pytest.raises(ImportError, match=r"pip install 'memguard\[cffi\]'"):
        mcffi.allocator(object(), heap)


def test_the_benchmark_runs_quick() -> None:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "bench_cffi.py", "--quick"], capture_output=True, text=True,
                          timeout=120, cwd=root / "benchmarks")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "guarded new" in proc.stdout and "guarded buffer" in proc.stdout


CFFI_RETENTION_SAMPLE = '''
import ctypes, cffi, memguard, memguard.cffi

ffi = cffi.FFI()
new = memguard.cffi.allocator(ffi)
CACHE = []


def test_cached_in_a_module_global():
    CACHE.append(new("char[40]"))  # reachable: retained


def test_dropped_when_the_test_ends():
    p = new("int[10]")
    p[9] = 1


def test_reference_leaked_in_c():
    ctypes.pythonapi.Py_IncRef.argtypes = [ctypes.py_object]
    ctypes.pythonapi.Py_IncRef(new("char[24]"))  # alive, unreachable from Python: a leak
'''


def test_reachable_cffi_buffers_are_retained_under_pytest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cffi_ret=CFFI_RETENTION_SAMPLE)
    result = pytester.runpytest_subprocess("--memguard", "-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=2, failed=1)
    assert "FAILED test_cffi_ret.py::test_reference_leaked_in_c - leaked 24 bytes in 1 block" in result.stdout.str()


@pytest.mark.parametrize("no_trampoline", ["", "1"], ids=["trampolines", "plain-ctypes-callbacks"])
def test_buffers_outliving_their_allocator_and_heap_free_safely(no_trampoline: str) -> None:
    import os
    import subprocess
    from pathlib import Path

    script = (
        "import gc, cffi, memguard, memguard.cffi as mc\n"
        "ffi = cffi.FFI()\n"
        "new = mc.allocator(ffi, memguard.GuardedHeap())\n"
        "bufs = [new('int[4]') for _ in range(50)]\n"
        "del new\n"
        "gc.collect()\n"
        "for i in range(5):  # other heaps' allocators come and go (their callbacks, their trampoline slots)\n"
        "    h = memguard.GuardedHeap(); a = h.c_allocator(); del a, h; gc.collect()\n"
        "del bufs  # cffi frees every buffer through the first heap's callbacks, still alive\n"
        "gc.collect()\n"
        "print('freed')\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "MEMGUARD_NO_TRAMPOLINE": no_trampoline, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and proc.stdout == "freed\n", proc.stdout + proc.stderr
