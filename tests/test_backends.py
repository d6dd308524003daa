"""Allocator backends: the seam, the Windows backend on a stand-in, mimalloc, jemalloc, options."""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import memguard
from memguard import native
from memguard.errors import BackendError, BackendUnavailableError, OptionsError
from memguard.native import jemalloc, mimalloc
from memguard.native.windows import HEAP_ZERO_MEMORY, windows_backend
from memguard.options import Options
from winheap import HANDLE, WindowsStandIn

ROOT = Path(__file__).resolve().parent.parent
TUNABLE = f"GLIBC_TUNABLES={jemalloc.TLS_TUNABLE}"


def _mimalloc() -> native.Backend:
    try:
        return native.get_backend("mimalloc")
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


def _recording(inner: native.Backend, log: list[tuple[str, int]]) -> native.Backend:
    """``inner`` with every call logged as ``(operation, address)``."""

    def aligned_alloc(alignment: int, size: int) -> int | None:
        p = inner.aligned_alloc(alignment, size)
        log.append(("aligned_alloc", p or 0))
        return p

    def aligned_free(p: int) -> None:
        log.append(("aligned_free", p))
        inner.aligned_free(p)

    def malloc(size: int) -> int | None:
        p = inner.malloc(size)
        log.append(("malloc", p or 0))
        return p

    def free(p: int) -> None:
        log.append(("free", p))
        inner.free(p)

    return dataclasses.replace(inner, name="recording", malloc=malloc, free=free,
                               aligned_alloc=aligned_alloc, aligned_free=aligned_free)


def _workload(heap: memguard.GuardedHeap, threads: int = 4, rounds: int = 300) -> None:
    """A clean workload on ``threads`` threads: small, large and over-aligned blocks."""
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            live = []
            for i in range(rounds):
                size = (seed * 131 + i * 17) % 600 + 1 if i % 10 else 70_000 + i
                p = heap.memalign(256, 300) if i % 37 == 0 else heap.malloc(size)
                ctypes.memset(p, i & 0xFF, heap.block(p).size)
                live.append(p)
                if len(live) > 20:
                    heap.free(live.pop(seed % len(live)))
            for p in live:
                heap.free(p)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []


# ----------------------------------------------------------------------------- the seam
def test_the_default_backend_is_libc_through_the_global_symbols() -> None:
    libc = native.get_backend()
    assert libc.name == "libc" and libc is native.get_backend("libc") is native.get_backend(" LIBC ")
    assert native.raw_malloc is libc.malloc and native.raw_free is libc.free
    assert "CDLL(None)" in libc.library
    heap = memguard.GuardedHeap()
    assert heap.backend is libc
    heap.close()


@pytest.mark.parametrize("bad", ["tcmalloc", "", 3])
def test_an_unknown_backend_is_a_clear_error(bad: object) -> None:
    with pytest.raises(BackendError) as info:
        memguard.GuardedHeap(backend=bad)  # type: ignore[arg-type]
    assert "libc" in str(info.value) and "jemalloc" in str(info.value)


def test_every_native_allocation_of_a_heap_goes_through_its_backend() -> None:
    log: list[tuple[str, int]] = []
    backend = _recording(native.get_backend("libc"), log)
    heap = memguard.GuardedHeap(backend=backend)
    blocks = [heap.malloc(24), heap.malloc(500), heap.malloc(100_000), heap.memalign(4096, 64), heap.calloc(3, 9)]
    for p in blocks:
        heap.free(p)
    heap.close()
    gc.collect()
    made = [p for op, p in log if op == "aligned_alloc"]
    freed = [p for op, p in log if op == "aligned_free"]
    assert len(made) >= 4 and sorted(made) == sorted(freed)
    assert not [op for op, _ in log if op in ("malloc", "free")]


def test_a_leaked_block_keeps_its_memory_out_of_its_backend() -> None:
    log: list[tuple[str, int]] = []
    heap = memguard.GuardedHeap(on_error="report", backend=_recording(native.get_backend("libc"), log))
    heap.malloc(100_000)
    heap.close()
    gc.collect()
    assert [op for op, _ in log] == ["aligned_alloc"]


def test_owned_buffer_releases_through_the_backend_that_made_it() -> None:
    log: list[tuple[str, int]] = []
    backend = _recording(native.get_backend("libc"), log)
    address, view = native.owned_buffer(64, backend=backend)
    del view
    address2, view2 = native.owned_buffer(64, 64, backend=backend)
    del view2
    assert log == [("malloc", address), ("free", address), ("aligned_alloc", address2), ("aligned_free", address2)]


def test_a_backend_returning_null_is_a_memory_error() -> None:
    failing = dataclasses.replace(native.get_backend("libc"), name="empty", aligned_alloc=lambda a, s: None)
    heap = memguard.GuardedHeap(backend=failing)
    with pytest.raises(MemoryError, match="100000 bytes"):
        heap.malloc(100_000)
    heap.close()


# ----------------------------------------------------------------------------- windows
@pytest.fixture
def standin() -> WindowsStandIn:
    return WindowsStandIn()


def test_the_windows_backend_has_windows_semantics(standin: WindowsStandIn) -> None:
    win = windows_backend(standin.kernel32, standin.crt)
    p = win.malloc(40)
    assert p and standin.calls[-1] == ("HeapAlloc", 0, 40)
    z = win.calloc(4, 8)
    assert standin.calls[-1] == ("HeapAlloc", HEAP_ZERO_MEMORY, 32) and ctypes.string_at(z, 32) == bytes(32)
    assert win.usable_size is not None and win.usable_size(z) == 32
    q = win.realloc(p, 4000)
    assert q and standin.calls[-1][0] == "HeapReAlloc"
    standin.fail_next = 1
    assert win.realloc(q, 1 << 20) is None  # NULL, and the old block is untouched
    assert q in standin.heap_blocks
    a = win.aligned_alloc(4096, 100)
    assert a and a % 4096 == 0 and standin.calls[-1] == ("_aligned_malloc", 100, 4096)
    win.aligned_free(a)
    win.free(q)
    win.free(z)
    assert standin.names()[-3:] == ["_aligned_free", "HeapFree", "HeapFree"]
    assert standin.violations == [] and standin.heap_blocks == {} and standin.aligned_blocks == {}


def test_the_windows_backend_refuses_a_foreign_block(standin: WindowsStandIn) -> None:
    win = windows_backend(standin.kernel32, standin.crt)
    foreign = native.malloc(32)
    try:
        with pytest.raises(OSError, match="HeapFree"):
            win.free(foreign)
        with pytest.raises(OSError, match="HeapSize"):
            win.usable_size(foreign)  # type: ignore[misc]
    finally:
        native.free(foreign)
    assert len(standin.violations) == 2


def test_the_stand_in_rejects_wrong_handles_and_flags(standin: WindowsStandIn) -> None:
    alloc = standin.kernel32.HeapAlloc
    alloc.restype, alloc.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t]
    assert alloc(HANDLE + 16, 0, 8) is None
    assert alloc(HANDLE, 0x4, 8) is None  # HEAP_GENERATE_EXCEPTIONS
    assert len(standin.violations) == 2


def test_a_heap_on_the_windows_backend(standin: WindowsStandIn) -> None:
    win = windows_backend(standin.kernel32, standin.crt)
    heap = memguard.GuardedHeap(backend=win)
    _workload(heap)
    address, view = native.owned_buffer(48, backend=win)
    del view
    assert heap.check() == [] and heap.leaks() == []
    heap.close()
    gc.collect()
    names = standin.names()
    assert {"_aligned_malloc", "_aligned_free"} <= set(names)
    assert names.count("HeapAlloc") == 1 and names.count("HeapFree") == 1  # the owned_buffer only
    assert standin.violations == [] and standin.aligned_blocks == {} and standin.heap_blocks == {}


def test_a_block_freed_through_the_wrong_backend_is_a_bad_free(standin: WindowsStandIn) -> None:
    other = memguard.GuardedHeap(backend=_mimalloc())
    heap = memguard.GuardedHeap(on_error="report", backend=windows_backend(standin.kernel32, standin.crt))
    for size in (24, 100_000):
        p = other.malloc(size)
        before = len(standin.calls)
        heap.free(p)
        assert heap.reports[-1].kind == "bad-free"
        assert standin.calls[before:] == []
        other.free(p)
    heap.close(check=False)
    other.close()
    assert standin.violations == []


# ----------------------------------------------------------------------------- mimalloc
def test_mimalloc_declares_every_prototype_and_runs_threads() -> None:
    mi = _mimalloc()
    assert mi.library in mimalloc.SONAMES and mi.usable_size is not None
    lib = ctypes.CDLL(mi.library)
    mimalloc.mimalloc_backend(lib, mi.library)
    for name in ("mi_malloc", "mi_calloc", "mi_realloc", "mi_free", "mi_malloc_aligned", "mi_usable_size"):
        fn = getattr(lib, name)
        assert fn.argtypes and fn.restype in (ctypes.c_void_p, ctypes.c_size_t, None)
    heap = memguard.GuardedHeap(backend="mimalloc")
    _workload(heap)
    assert heap.check() == [] and heap.leaks() == []
    heap.close()


def test_an_unloadable_backend_names_the_library_and_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mimalloc, "SONAMES", ("libmimalloc-missing.so.9",))
    with pytest.raises(BackendUnavailableError) as info:
        mimalloc.load()
    assert "libmimalloc-missing.so.9" in str(info.value) and "apt-get install libmimalloc2.0" in str(info.value)
    assert info.value.package == "libmimalloc2.0"


# ----------------------------------------------------------------------------- jemalloc
def _jemalloc_installed() -> bool:
    return any(Path(d, "libjemalloc.so.2").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"))


needs_jemalloc = pytest.mark.skipif(not _jemalloc_installed(), reason="libjemalloc2 is not installed")


@needs_jemalloc
def test_jemalloc_without_the_tunable_names_both_fixes() -> None:
    code = "import memguard; memguard.GuardedHeap(backend='jemalloc')"
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    if out.returncode == 0:
        pytest.skip("this jemalloc loads without the tunable")
    assert "BackendUnavailableError" in out.stderr
    assert jemalloc.TLS_TUNABLE in out.stderr and "LD_PRELOAD" in out.stderr


@needs_jemalloc
def test_the_corpus_and_threads_on_jemalloc() -> None:
    if jemalloc.TLS_TUNABLE in os.environ.get("GLIBC_TUNABLES", ""):
        pytest.skip("this process has the tunable: the tests below run here")
    env = dict(os.environ, GLIBC_TUNABLES=jemalloc.TLS_TUNABLE)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-k", "jemalloc",
         "tests/test_backend_corpus.py", "tests/test_backends.py::test_jemalloc_in_this_process"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "skipped" not in out.stdout and " passed" in out.stdout


def test_jemalloc_in_this_process() -> None:
    if jemalloc.TLS_TUNABLE not in os.environ.get("GLIBC_TUNABLES", ""):
        pytest.skip("run by test_the_corpus_and_threads_on_jemalloc, with the tunable")
    je = native.get_backend("jemalloc")
    assert je.name == "jemalloc" and je.library in jemalloc.SONAMES
    heap = memguard.GuardedHeap(backend="jemalloc")
    _workload(heap)
    assert heap.check() == [] and heap.leaks() == []
    heap.close()


@needs_jemalloc
def test_memguard_run_with_jemalloc_sets_the_tunable(tmp_path: Path) -> None:
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import os, memguard
        from memguard import process
        p = memguard.malloc(100_000)
        memguard.free(p)
        print("backend", process.install().backend.name, os.environ["GLIBC_TUNABLES"])
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MEMGUARD_OPTIONS")}
    out = subprocess.run([sys.executable, "-m", "memguard", "run", "-o", "backend=jemalloc", str(script)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"backend jemalloc {jemalloc.TLS_TUNABLE}" in out.stdout


# ----------------------------------------------------------------------------- options
def test_the_backend_option() -> None:
    assert Options.resolve(env="backend=MiMalloc").backend == "mimalloc"
    assert Options.resolve(env=None).backend is None
    assert Options.resolve(env="backend=mimalloc").heap_kwargs()["backend"] == "mimalloc"
    with pytest.raises(OptionsError, match="jemalloc"):
        Options.resolve(env="backend=tcmalloc")


# ----------------------------------------------------------------------------- pytest
pytest_plugins = ["pytester"]


def test_the_pytest_marker_and_ini_choose_the_backend(pytester: pytest.Pytester) -> None:
    _mimalloc()
    pytester.makeini("[pytest]\nmemguard_options = backend=mimalloc\n")
    pytester.makepyfile(test_b="""
        import pytest

        def test_ini(guarded_heap):
            assert guarded_heap.backend.name == "mimalloc"

        @pytest.mark.memguard(backend="libc")
        def test_marker(guarded_heap):
            assert guarded_heap.backend.name == "libc"
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    pytester.makepyfile(test_b="""
        import pytest

        @pytest.mark.memguard(backend="tcmalloc")
        def test_bad(guarded_heap):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*bad value 'tcmalloc' for 'backend': expected libc, windows, mimalloc or jemalloc*"])
