"""Real C libraries on the guarded heap: zlib, bzip2, liblzma, expat (in process), SQLite (subprocess).

Each library's tests skip with the reason when the library is missing from the machine.
"""

from __future__ import annotations

import bz2 as py_bz2
import ctypes
import importlib
import json
import lzma as py_lzma
import os
import pkgutil
import random
import subprocess
import sys
import zlib as py_zlib
from pathlib import Path
from typing import Callable

import pytest

import memguard
from memguard import clibs, native
from memguard.heap.c_allocator import CAllocator, allocator_for
from memguard.errors import LibraryNotFoundError

ROOT = Path(__file__).resolve().parent.parent


def c_allocator(heap: memguard.GuardedHeap) -> CAllocator:
    """``heap.c_allocator()``, one per heap."""
    return allocator_for(heap)


def need(loader: Callable[[], object]) -> None:
    try:
        loader()
    except LibraryNotFoundError as exc:
        pytest.skip(str(exc))


def need_sqlite() -> None:
    """SQLite, and the trampolines its adapter needs (tests/test_trampoline.py covers their absence)."""
    need(native.sqlite3)
    if not native.trampoline.available():
        pytest.skip(f"the SQLite adapter needs the trampolines: {native.trampoline.unavailable_reason()}")


def sample(n: int, seed: int = 6) -> bytes:
    """Compressible but not trivial data: words with random numbers."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"memguard", b"zlib", b"heap", b"\x00\x01\x02"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + str(rng.randrange(10000)).encode() + b" "
    return bytes(out[:n])


def generated_xml(n_items: int) -> bytes:
    parts = [b'<?xml version="1.0"?>\n<catalog xmlns:x="urn:x">']
    for i in range(n_items):
        parts.append(
            b'<item id="%d" kind="k%d" x:tag="t"><title>Title &amp; %d</title><price cur="EUR">%d.50</price>'
            b"<![CDATA[raw <%d>]]><!-- c --></item>\n" % (i, i % 50, i, i % 1000, i)
        )
    parts.append(b"</catalog>\n")
    return b"".join(parts)


#: The ``heap`` fixture (tests/conftest.py) raises in this module.
HEAP_ON_ERROR = "raise"


def assert_clean(heap: memguard.GuardedHeap) -> None:
    assert heap.check() == []
    assert heap.reports == []
    assert heap.leaks() == []


# ---------------------------------------------------------------------------- the packages
def _public_modules(package: object) -> list[object]:
    """The modules of ``package`` whose every public name the package re-exports."""
    # Helpers for the sibling modules (of loader only load_library is public; the
    # trampolines are used as native.trampoline); the C-callable allocator is memguard.CAllocator.
    skip = {"loader", "common", "callbacks", "trampoline"}
    names = [m.name for m in pkgutil.iter_modules(package.__path__) if m.name not in skip]  # type: ignore[attr-defined]
    return [importlib.import_module(f"{package.__name__}.{name}") for name in names]


@pytest.mark.parametrize("package", [native, clibs], ids=["native", "clibs"])
def test_each_package_re_exports_its_modules_public_names(package: object) -> None:
    modules = _public_modules(package)
    libraries = {"libz", "libbz2", "liblzma", "libexpat", "libsqlite3"}  # one module per C library
    assert libraries <= {module.__name__.rpartition(".")[2] for module in modules}  # type: ignore[attr-defined]
    exported = set(package.__all__)  # type: ignore[attr-defined]
    defined = {name: getattr(module, name) for module in modules for name in module.__all__}  # type: ignore[attr-defined]
    assert set(defined) <= exported, set(defined) - exported
    for name in exported:
        value = getattr(package, name)
        assert defined.get(name, value) is value
    assert len(package.__all__) == len(exported)  # type: ignore[attr-defined]


def test_importing_the_packages_opens_no_c_library() -> None:
    # Every library load goes through ctypes.CDLL (WinDLL is a subclass); record them.
    code = (
        "import ctypes, json, sys\n"
        "opened = []\n"
        "real = ctypes.CDLL.__init__\n"
        "def spy(self, name, *args, **kwargs):\n"
        "    opened.append(name)\n"
        "    real(self, name, *args, **kwargs)\n"
        "ctypes.CDLL.__init__ = spy\n"
        "import memguard.native, memguard.clibs\n"
        "at_import = list(opened)\n"
        "try:\n"
        "    memguard.native.zlib()\n"
        "except memguard.errors.LibraryNotFoundError:\n"
        "    pass\n"
        "print(json.dumps({'at_import': at_import, 'after': opened, 'posix': sys.platform != 'win32'}))\n"
    )
    proc = _run(["-c", code])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    if result["posix"]:
        assert result["at_import"] == [None]  # the process's own symbol table, for malloc/free
    assert not any(name and ("z" in os.path.basename(name) or "expat" in name) for name in result["at_import"])
    assert len(result["after"]) > len(result["at_import"])  # the spy sees a real load


# ---------------------------------------------------------------------------- zlib
def test_zlib_deflate_and_inflate_a_few_mib(heap: memguard.GuardedHeap) -> None:
    need(native.zlib)
    data = sample(4 << 20)
    packed = clibs.deflate(data, heap)
    assert py_zlib.decompress(packed) == data
    assert clibs.inflate(py_zlib.compress(data, 9), heap) == data
    assert clibs.inflate(packed, c_allocator(heap)) == data
    stats = heap.stats()
    assert stats.total_allocs >= 6 and stats.peak_bytes > 200_000  # zlib's state, window, tables
    assert_clean(heap)


def test_zlib_without_deflate_end_leaks_from_the_init_line(heap: memguard.GuardedHeap) -> None:
    need(native.zlib)
    z = native.zlib()
    strm = clibs.zlib_stream(heap)
    mark = heap.snapshot()
    line = sys._getframe().f_lineno + 1
    rc = z.deflateInit2_(ctypes.byref(strm), 6, z.Z_DEFLATED, 15, 8, 0, z.version, ctypes.sizeof(strm))
    assert rc == z.Z_OK
    (group,) = heap.leaks(since=mark)
    assert group.count >= 4 and group.size > 200_000
    assert (group.stack[0].filename, group.stack[0].lineno) == (__file__, line)
    assert z.deflateEnd(ctypes.byref(strm)) == z.Z_OK
    assert heap.leaks(since=mark) == []


def test_zlib_sees_null_from_the_allocator_as_z_mem_error() -> None:
    need(native.zlib)
    h = memguard.GuardedHeap()
    alloc = c_allocator(h)
    h.close()
    with pytest.raises(MemoryError, match="zlib deflateInit2_"):
        clibs.deflate(b"data", alloc)
    assert alloc.null_returns >= 1


def test_zlib_bad_data_is_a_clear_error_and_frees_everything(heap: memguard.GuardedHeap) -> None:
    need(native.zlib)
    with pytest.raises(clibs.CLibraryError, match="zlib") as info:
        clibs.inflate(b"\x78\x9c not zlib at all", heap)
    error = info.value
    assert isinstance(error, memguard.MemguardError) and isinstance(error, RuntimeError)
    assert (error.library, error.code) == ("zlib", -3)  # Z_DATA_ERROR
    assert error.message.startswith("inflate: ") and str(error) == f"zlib: {error.message} (code -3)"
    with pytest.raises(clibs.CLibraryError, match="truncated"):
        clibs.inflate(py_zlib.compress(sample(100_000))[:500], heap)
    with pytest.raises(TypeError):
        clibs.deflate("text", heap)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        clibs.deflate(b"x", heap, level=12)
    assert_clean(heap)


# ---------------------------------------------------------------------------- bzip2
def test_bzip2_round_trip(heap: memguard.GuardedHeap) -> None:
    need(native.bz2)
    data = sample(1 << 20)
    packed = clibs.bz2_compress(data, heap, level=1)
    assert py_bz2.decompress(packed) == data
    assert clibs.bz2_decompress(packed, heap) == data
    assert heap.stats().total_allocs >= 4
    with pytest.raises(clibs.CLibraryError, match="bzip2"):
        clibs.bz2_decompress(b"BZh9 definitely not bzip2 data", heap)
    assert_clean(heap)


def test_bzip2_without_compress_end_leaks(heap: memguard.GuardedHeap) -> None:
    need(native.bz2)
    bz = native.bz2()
    strm = clibs.bz_stream(heap)
    line = sys._getframe().f_lineno + 1
    assert bz.BZ2_bzCompressInit(ctypes.byref(strm), 1, 0, 0) == bz.BZ_OK
    groups = heap.leaks()
    assert groups and all(g.stack[0].lineno == line for g in groups)
    assert bz.BZ2_bzCompressEnd(ctypes.byref(strm)) == bz.BZ_OK
    assert_clean(heap)


# ---------------------------------------------------------------------------- liblzma
def test_lzma_round_trip(heap: memguard.GuardedHeap) -> None:
    need(native.lzma)
    data = sample(2 << 20)
    packed = clibs.lzma_compress(data, heap, preset=1)
    assert py_lzma.decompress(packed) == data
    assert clibs.lzma_decompress(packed, heap) == data
    assert clibs.lzma_decompress(py_lzma.compress(data, preset=0), heap) == data
    with pytest.raises(clibs.CLibraryError, match="liblzma"):
        clibs.lzma_decompress(b"\xfd7zXZ\x00 broken", heap)
    assert_clean(heap)


def test_lzma_allocator_structure_and_leak(heap: memguard.GuardedHeap) -> None:
    need(native.lzma)
    lz = native.lzma()
    strm = clibs.lzma_stream(heap)
    assert strm.allocator.contents.alloc is not None
    line = sys._getframe().f_lineno + 1
    assert lz.lzma_easy_encoder(ctypes.byref(strm), 0, lz.LZMA_CHECK_CRC64) == lz.LZMA_OK
    assert heap.leaks() and all(g.stack[0].lineno == line for g in heap.leaks())
    lz.lzma_end(ctypes.byref(strm))
    assert_clean(heap)


# ---------------------------------------------------------------------------- expat
def test_expat_parses_a_generated_document(heap: memguard.GuardedHeap) -> None:
    need(native.expat)
    xml = generated_xml(20_000)
    names: dict[bytes, int] = {}

    def start(name: bytes) -> None:
        names[name] = names.get(name, 0) + 1

    count = clibs.expat_parse(xml, heap, chunk_size=64 << 10, start=start)
    assert count == 1 + 3 * 20_000
    assert names == {b"catalog": 1, b"item": 20_000, b"title": 20_000, b"price": 20_000}
    assert clibs.expat_parse(xml, heap) == 0  # no handler: no Python per element
    assert heap.stats().total_allocs > 10
    assert_clean(heap)


def test_expat_errors_and_parser_leak(heap: memguard.GuardedHeap) -> None:
    need(native.expat)
    with pytest.raises(clibs.CLibraryError, match="mismatched tag at line 1"):
        clibs.expat_parse(b"<a><b></a>", heap)
    assert_clean(heap)
    ex = native.expat()
    line = sys._getframe().f_lineno + 1
    parser = clibs.expat_parser(heap)
    assert ex.XML_Parse(parser, b"<doc><x a='1'/>", 15, 0) == ex.XML_STATUS_OK
    groups = heap.leaks()
    assert groups and groups[0].stack[0].lineno in (line, line + 1)
    assert any(g.stack[0].lineno == line for g in groups)  # XML_ParserCreate_MM's own blocks
    ex.XML_ParserFree(parser)
    assert_clean(heap)


# ---------------------------------------------------------------------------- SQLite
def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # Not under coverage: coverage keeps its data in SQLite, and SQLite must be configured
    # with memguard's allocator before anything in the process has loaded it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_sqlite_on_the_guarded_heap_in_a_subprocess() -> None:
    need_sqlite()
    proc = _run([str(ROOT / "examples" / "sqlite_guarded.py"), "--rows", "1500"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 1500 and summary["close_rc"] == 0
    assert summary["allocations"] > 1000
    assert summary["reports"] == [] and summary["leaked_bytes"] == 0


def test_sqlite_leaked_connection_is_reported_in_a_subprocess() -> None:
    need_sqlite()
    script = ROOT / "examples" / "sqlite_guarded.py"
    proc = _run([str(script), "--leak", "--rows", "200"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["close_rc"] == 5  # SQLITE_BUSY: the statement was never finalized
    assert summary["leaked_bytes"] > 0
    source = script.read_text().splitlines()
    open_line = next(i for i, text in enumerate(source, 1) if "sqlite3_open(" in text)
    prepare_line = next(i for i, text in enumerate(source, 1) if "sqlite3_prepare_v2(" in text)
    assert open_line in summary["leak_lines"] and prepare_line in summary["leak_lines"]
    assert "Direct leak of" in proc.stdout


def test_sqlite_config_refused_once_initialised_in_a_subprocess() -> None:
    need_sqlite()
    code = (
        "import memguard; from memguard import clibs, native\n"
        "native.sqlite3().sqlite3_initialize()\n"
        "try:\n    clibs.sqlite_configure(memguard.GuardedHeap())\n"
        "except clibs.CLibraryError as e:\n    print('refused:', e)\n"
    )
    proc = _run(["-c", code])
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "already initialised" in proc.stdout


# ---------------------------------------------------------------------------- example, benchmark
def test_zlib_leak_example_points_at_the_deflate_init_line() -> None:
    need(native.zlib)
    script = ROOT / "examples" / "zlib_leak.py"
    proc = _run([str(script)])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(i for i, text in enumerate(script.read_text().splitlines(), 1) if "deflateInit2_(" in text)
    assert "Direct leak of" in proc.stdout
    assert f"zlib_leak.py:{line} in compress_but_forget_deflate_end" in proc.stdout.split("allocated from:")[1].splitlines()[1]


def test_benchmark_script_runs_quick() -> None:
    need(native.zlib)
    need(native.expat)
    proc = _run([str(ROOT / "benchmarks" / "bench_clibs.py"), "--quick", "--no-valgrind"], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "zlib" in proc.stdout and "expat" in proc.stdout and "ratio" in proc.stdout
