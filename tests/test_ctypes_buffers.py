"""Guarded ctypes buffers: memguard.create_string_buffer and heap.array."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

import memguard
from memguard import process

HERE = __file__
ROOT = Path(__file__).resolve().parent.parent


def line_of(text: str) -> int:
    """The line of this file holding ``text`` (a planted bug's line)."""
    with open(HERE) as fh:
        return next(i for i, line in enumerate(fh, 1) if text in line and "line_of" not in line)


def libc_snprintf() -> Any:
    libc = ctypes.CDLL(None)
    fn = libc.snprintf
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_char_p]
    fn.restype = ctypes.c_int
    return fn


def test_snprintf_past_an_8_byte_buffer_is_an_overflow_at_the_users_line(heap: memguard.GuardedHeap) -> None:
    snprintf = libc_snprintf()
    buf = memguard.create_string_buffer(8, heap=heap)  # planted: 8-byte buffer
    n = snprintf(buf, 16, b"%s", b"hello, world")  # told 16 bytes: writes 13
    assert n == 12 and buf.raw == b"hello, w"
    [report] = heap.check()
    assert report.kind == "heap-buffer-overflow" and report.size == 8
    assert report.alloc_stack[0].filename == HERE
    assert report.alloc_stack[0].lineno == line_of("planted: 8-byte buffer")
    assert bytes(report.found) == b"orld\0"[: len(report.found)]
    assert "0 bytes to the right of 8-byte region" in str(report)
    plain = ctypes.create_string_buffer(8)
    snprintf(plain, 8, b"%s", b"hello, world")  # the right size: truncated, clean
    buf2 = memguard.create_string_buffer(8, heap=heap)
    snprintf(buf2, 8, b"%s", b"hello, world")
    assert buf2.raw == plain.raw == b"hello, \0"
    assert heap.check() == []


def test_a_write_through_a_stale_pointer_after_the_array_is_collected(heap: memguard.GuardedHeap) -> None:
    arr = heap.array(ctypes.c_int, 4)  # planted: array
    saved = ctypes.addressof(arr)  # a C pointer outliving the array
    arr[3] = 42
    del arr  # planted: collected here
    ctypes.memset(saved + 12, 0, 4)
    [report] = heap.check()
    assert report.kind == "heap-use-after-free" and report.size == 16 and report.offset == 12
    assert report.alloc_stack[0].lineno == line_of("planted: array")
    assert report.free_stack[0].lineno == line_of("planted: collected here")
    assert report.free_stack[0].filename == HERE  # no weakref or memguard frame on top


@pytest.mark.parametrize(
    "args",
    [(b"abc",), (b"abc", 3), (b"abc", 10), (b"",), (0,), (5,), (b"a\0b",)],
    ids=repr,
)
def test_create_string_buffer_matches_ctypes(heap: memguard.GuardedHeap, args: tuple[Any, ...]) -> None:
    plain = ctypes.create_string_buffer(*args)
    guarded = memguard.create_string_buffer(*args, heap=heap)
    assert type(guarded) is type(plain)
    assert (guarded.raw, guarded.value, len(guarded), ctypes.sizeof(guarded)) == (
        plain.raw, plain.value, len(plain), ctypes.sizeof(plain)
    )
    assert heap.stats().live_bytes == len(plain)
    del guarded
    assert heap.stats().live_blocks == 0 and heap.check() == []


def test_create_string_buffer_rejects_what_ctypes_rejects(heap: memguard.GuardedHeap) -> None:
    with pytest.raises(ValueError, match="byte string too long"):
        ctypes.create_string_buffer(b"abcd", 3)
    with pytest.raises(ValueError, match="byte string too long"):
        memguard.create_string_buffer(b"abcd", 3, heap=heap)
    with pytest.raises(TypeError, match="bytes or an int"):
        memguard.create_string_buffer("text", heap=heap)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes or an int, got bool"):
        memguard.create_string_buffer(True, heap=heap)
    with pytest.raises(ValueError, match="count must be >= 0"):
        memguard.create_string_buffer(-1, heap=heap)
    with pytest.raises(TypeError, match="size is given only"):
        memguard.create_string_buffer(4, 8, heap=heap)
    with pytest.raises(TypeError, match="heap must be a GuardedHeap"):
        memguard.create_string_buffer(4, heap="process")  # type: ignore[arg-type]
    assert heap.stats().total_allocs == 0


class Pair(ctypes.Structure):
    _fields_ = [("a", ctypes.c_int32), ("b", ctypes.c_double)]


def test_arrays_of_any_ctypes_type_are_zeroed_and_owned(heap: memguard.GuardedHeap) -> None:
    pairs = heap.array(Pair, 3)
    assert isinstance(pairs, Pair * 3) and ctypes.sizeof(pairs) == 3 * ctypes.sizeof(Pair)
    assert [(p.a, p.b) for p in pairs] == [(0, 0.0)] * 3
    second = pairs[1]  # a structure sharing the array's memory keeps it alive
    view = memoryview(pairs)
    del pairs
    gc.collect()
    second.a = 5
    assert heap.stats().live_blocks == 1
    del second, view
    gc.collect()
    assert heap.stats().live_blocks == 0 and heap.check() == [] and heap.reports == []
    assert list(heap.array(ctypes.c_double, 0)) == []
    with pytest.raises(TypeError, match="ctype must be a ctypes type"):
        heap.array(int, 3)
    with pytest.raises(ValueError, match="count must be >= 0"):
        heap.array(ctypes.c_int, -2)
    with pytest.raises(MemoryError):
        heap.array(ctypes.c_char, 1 << 40)


def test_a_clean_ctypes_workload_has_no_findings(heap: memguard.GuardedHeap) -> None:
    snprintf = libc_snprintf()
    for i in range(300):
        buf = memguard.create_string_buffer(32, heap=heap)
        snprintf(buf, ctypes.sizeof(buf), b"%s", b"item %d" % i)
        ints = heap.array(ctypes.c_uint8, i % 40)
        ctypes.memset(ints, 0xAB, ctypes.sizeof(ints))
        assert buf.value == b"item %d" % i
        del buf, ints
    assert heap.check() == [] and heap.reports == [] and heap.leaks() == []


def test_an_array_freed_by_hand_is_a_double_free_when_collected(heap: memguard.GuardedHeap) -> None:
    arr = heap.array(ctypes.c_char, 16)
    heap.free(ctypes.addressof(arr))  # the array owns its block: this free is the bug
    del arr
    assert [r.kind for r in heap.reports] == ["double-free"]


def test_collection_after_the_heap_is_closed_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    h = memguard.GuardedHeap()
    arr = h.array(ctypes.c_long, 2)
    h.close(check=False)
    del arr
    gc.collect()
    assert seen == []


@pytest.fixture
def no_process_heap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MEMGUARD_OPTIONS", raising=False)
    for name in ("_heap", "_options", "_suppressions"):
        monkeypatch.setattr(process, name, None)
    yield
    memguard.uninstall()


def test_the_process_heap_is_the_default(no_process_heap: None) -> None:
    buf = memguard.create_string_buffer(b"on the process heap")
    heap = memguard.process_heap()
    assert heap is not None and heap.stats().live_bytes == len(buf) == 20
    del buf
    assert heap.stats().live_blocks == 0


def test_buffers_alive_at_exit_are_not_leaks_but_a_dropped_overflow_is_reported() -> None:
    script = (
        "import ctypes, memguard\n"
        "memguard.install()\n"
        "KEPT = memguard.create_string_buffer(b'module global')\n"
        "CACHE = {'pairs': memguard.process_heap().array(ctypes.c_double, 4)}\n"
        "bad = memguard.create_string_buffer(4)\n"
        "ctypes.memset(bad, 0x41, 5)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "heap-buffer-overflow" in out and "<string>:5" in out
    assert "leak" not in out.lower().replace("leak_check", "")


RETENTION_SAMPLE = '''
import ctypes, memguard

CACHE = {}


def incref(obj):
    ctypes.pythonapi.Py_IncRef.argtypes = [ctypes.py_object]
    ctypes.pythonapi.Py_IncRef.restype = None
    ctypes.pythonapi.Py_IncRef(obj)  # a reference leaked as C code would leak it


def test_cached_in_a_module_global():
    CACHE["buf"] = memguard.create_string_buffer(b"kept for later")  # reachable: retained


def test_freed_when_the_test_ends():
    buf = memguard.create_string_buffer(64)
    buf.value = b"transient"


def test_reference_leaked_in_c():
    incref(memguard.create_string_buffer(32))  # alive, unreachable from Python: a leak
'''


def test_reachable_buffers_are_retained_and_ones_leaked_in_c_are_leaks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ret=RETENTION_SAMPLE)
    result = pytester.runpytest_subprocess("--memguard", "-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "FAILED test_ret.py::test_reference_leaked_in_c - leaked 32 bytes in 1 block" in out
    assert "test_cached_in_a_module_global" not in out.split("short test summary")[-1]


def test_retention_at_exit_for_ctypes_and_cffi_buffers() -> None:
    pytest.importorskip("cffi")
    script = (
        "import ctypes, cffi, memguard, memguard.cffi\n"
        "memguard.install()\n"
        "ffi = cffi.FFI()\n"
        "new = memguard.cffi.allocator(ffi)\n"
        "KEPT = [new('char[16]'), memguard.create_string_buffer(b'global')]\n"
        "ctypes.pythonapi.Py_IncRef.argtypes = [ctypes.py_object]\n"
        "ctypes.pythonapi.Py_IncRef(new('int[6]'))\n"
        "ctypes.pythonapi.Py_IncRef(memguard.process_heap().array(ctypes.c_int, 5))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # The reachable cffi buffer and the arrays alive at exit are not leaks; the cdata whose
    # reference leaked "in C" is (the ctypes array alive at exit is freed before the report).
    assert "Direct leak of 24 byte(s) in 1 object(s)" in out and "<string>:7" in out
    assert "SUMMARY: memguard: 24 byte(s) leaked in 1 allocation(s)." in out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_the_registry_lock_is_held_can_make_buffers(heap: memguard.GuardedHeap) -> None:
    import time

    from memguard.heap import arrays

    with arrays._lock:  # as if another thread were registering an array at the fork
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            try:
                buf = memguard.create_string_buffer(b"child", heap=heap)
                os._exit(0 if buf.value == b"child" else 1)
            finally:
                os._exit(2)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child hung on the registry lock")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
