"""More C libraries on the guarded heap: zstd, lz4 frames, libxml2 and OpenSSL 3.

Each library's tests skip with the reason when the library is missing.  libxml2 and
OpenSSL change their allocator for the whole process, so their tests run in a
subprocess (pytest has loaded ``hashlib`` and ``ssl``, which allocate through OpenSSL).
"""

from __future__ import annotations

import ctypes
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

import memguard
from memguard import clibs, native
from memguard.errors import LibraryNotFoundError
from memguard.native import trampoline

ROOT = Path(__file__).resolve().parent.parent
HERE = __file__

#: The ``heap`` fixture (tests/conftest.py) raises in this module.
HEAP_ON_ERROR = "raise"


def need(loader: Callable[[], object]) -> None:
    try:
        loader()
    except LibraryNotFoundError as exc:
        pytest.skip(str(exc))


def need_trampolines() -> None:
    """libxml2 and OpenSSL refuse to go on the heap without the trampolines (tested below)."""
    if not trampoline.available():
        pytest.skip(f"no trampolines: {trampoline.unavailable_reason()}")


def line_of(text: str) -> int:
    """The line of this file holding ``text`` (a planted bug's line)."""
    with open(HERE) as fh:
        return next(i for i, line in enumerate(fh, 1) if text in line and "line_of" not in line)


def sample(n: int, seed: int = 20) -> bytes:
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"zstd", b"lz4", b"memguard", b"\x00\x01"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + str(rng.randrange(1000)).encode() + b" "
    return bytes(out[:n])


def assert_clean(heap: memguard.GuardedHeap) -> None:
    assert heap.check() == []
    assert heap.reports == []
    assert heap.leaks() == []


# ---------------------------------------------------------------------------- zstd
def test_zstd_round_trip_on_the_guarded_heap(heap: memguard.GuardedHeap) -> None:
    need(native.zstd)
    data = sample(1 << 20)
    packed = clibs.zstd_compress(data, heap, level=5)
    assert len(packed) < len(data) // 2
    assert clibs.zstd_decompress(packed, heap) == data
    assert clibs.zstd_decompress(clibs.zstd_compress(data)) == data  # zstd's own allocator
    assert clibs.zstd_decompress(packed) == data and clibs.zstd_compress(b"", heap) != b""
    assert heap.stats().total_allocs > 0
    assert_clean(heap)


def test_zstd_multithreaded_compression_on_the_guarded_heap(heap: memguard.GuardedHeap) -> None:
    need(native.zstd)
    data = sample(3 << 20, seed=3)
    try:
        packed = clibs.zstd_compress(data, heap, level=1, workers=2)
    except clibs.CLibraryError as exc:  # a libzstd built without threads
        pytest.skip(str(exc))
    assert clibs.zstd_decompress(packed, heap) == data
    assert heap.stats().total_allocs > 10  # the worker pool's contexts and buffers too
    assert_clean(heap)


def test_zstd_leaked_context_is_reported_at_the_users_line(heap: memguard.GuardedHeap) -> None:
    need(native.zstd)
    zs = native.zstd()
    cctx = zs.ZSTD_createCCtx_advanced(clibs.zstd_custom_mem(heap))  # planted: leak
    zs.ZSTD_CCtx_setParameter(cctx, zs.ZSTD_c_compressionLevel, 3)
    [group] = heap.leaks()
    assert group.stack[0].filename == HERE and group.stack[0].lineno == line_of("planted: leak")
    assert zs.ZSTD_freeCCtx(cctx) == 0
    assert_clean(heap)


def test_zstd_writing_past_a_guarded_output_buffer_is_an_overflow(heap: memguard.GuardedHeap) -> None:
    need(native.zstd)
    zs = native.zstd()
    data = random.Random(1).randbytes(200)  # incompressible: zstd writes it all out
    out = memguard.create_string_buffer(64, heap=heap)  # planted: 64-byte output
    cctx = clibs.zstd_cctx(heap)
    src = ctypes.create_string_buffer(data, len(data))
    inb = native.ZstdInBuffer(ctypes.addressof(src), len(data), 0)
    outb = native.ZstdOutBuffer(ctypes.addressof(out), 72, 0)  # the bug: 72 is not its size
    zs.ZSTD_compressStream2(cctx, ctypes.byref(outb), ctypes.byref(inb), zs.ZSTD_e_end)
    assert outb.pos == 72
    with pytest.raises(memguard.HeapCorruptionError) as err:
        heap.check()
    report = err.value.report
    assert report.kind == "heap-buffer-overflow" and report.size == 64
    assert report.alloc_stack[0].lineno == line_of("planted: 64-byte output")
    zs.ZSTD_freeCCtx(cctx)
    del out


def test_zstd_errors_reach_the_caller_unchanged_and_free_everything(heap: memguard.GuardedHeap) -> None:
    need(native.zstd)
    packed = clibs.zstd_compress(sample(100_000), heap)
    with pytest.raises(clibs.CLibraryError, match="Unknown frame descriptor") as bad:
        clibs.zstd_decompress(b"not a zstd frame at all", heap)
    assert bad.value.library == "zstd" and bad.value.code == 10  # ZSTD_error_prefix_unknown
    with pytest.raises(clibs.CLibraryError, match="truncated input"):
        clibs.zstd_decompress(packed[:-7], heap)
    corrupt = bytearray(packed)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with pytest.raises(clibs.CLibraryError):
        clibs.zstd_decompress(bytes(corrupt), heap)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        clibs.zstd_compress(b"x", heap, workers=-1)
    with pytest.raises(TypeError, match="level must be an int"):
        clibs.zstd_cctx(heap, level=1.5)  # type: ignore[arg-type]
    assert_clean(heap)
    closed = memguard.GuardedHeap()
    closed.close()
    with pytest.raises(MemoryError, match="returned NULL"):
        clibs.zstd_dctx(closed)
    with pytest.raises(MemoryError, match="returned NULL"):
        clibs.zstd_cctx(closed)



# ---------------------------------------------------------------------------- lz4 frames
def test_lz4_frames_round_trip_on_the_guarded_heap(heap: memguard.GuardedHeap) -> None:
    need(native.lz4)
    data = sample(3 << 20, seed=4)
    packed = clibs.lz4_compress(data, heap)
    assert len(packed) < len(data) // 2
    assert clibs.lz4_decompress(packed, heap) == data
    assert clibs.lz4_decompress(clibs.lz4_compress(data, level=9)) == data  # lz4's own allocator
    assert clibs.lz4_decompress(clibs.lz4_compress(b"", heap), heap) == b""
    assert heap.stats().total_allocs >= 4  # both contexts and their buffers
    assert_clean(heap)


def test_lz4_leaked_context_is_reported_at_the_users_lines(heap: memguard.GuardedHeap) -> None:
    need(native.lz4)
    lz = native.lz4()
    cctx = lz.LZ4F_createCompressionContext_advanced(clibs.lz4_custom_mem(heap), lz.LZ4F_VERSION)  # planted: ctx
    out = ctypes.create_string_buffer(64)
    assert lz.LZ4F_compressBegin(cctx, out, 64, None) == 7  # planted: its buffers
    lines = {g.stack[0].lineno for g in heap.leaks()}
    assert lines == {line_of("planted: ctx"), line_of("planted: its buffers")}
    assert lz.LZ4F_freeCompressionContext(cctx) == 0
    assert_clean(heap)


def test_lz4_writing_past_a_guarded_frame_buffer_is_an_overflow(heap: memguard.GuardedHeap) -> None:
    need(native.lz4)
    lz = native.lz4()
    data = random.Random(2).randbytes(40)
    size = len(clibs.lz4_compress(data))  # header, one raw block, end mark, checksum
    out = memguard.create_string_buffer(size - 4, heap=heap)  # planted: frame buffer
    prefs = native.Lz4fPreferences()
    prefs.frameInfo.contentChecksumFlag = 1
    bound = lz.LZ4F_compressFrameBound(len(data), ctypes.byref(prefs))
    n = lz.LZ4F_compressFrame(out, bound, data, len(data), ctypes.byref(prefs))  # the bug: `bound` is not its size
    assert n == size
    with pytest.raises(memguard.HeapCorruptionError) as err:
        heap.check()
    assert err.value.report.kind == "heap-buffer-overflow" and err.value.report.size == size - 4
    assert err.value.report.alloc_stack[0].lineno == line_of("planted: frame buffer")
    del out


def test_lz4_errors_reach_the_caller_unchanged_and_free_everything(heap: memguard.GuardedHeap) -> None:
    need(native.lz4)
    packed = clibs.lz4_compress(sample(200_000), heap)
    with pytest.raises(clibs.CLibraryError, match="ERROR_frameType_unknown") as bad:
        clibs.lz4_decompress(b"not an lz4 frame", heap)
    assert bad.value.library == "lz4" and bad.value.code == 13  # LZ4F_ERROR_frameType_unknown
    with pytest.raises(clibs.CLibraryError, match="truncated input"):
        clibs.lz4_decompress(packed[:-3], heap)
    corrupt = bytearray(packed)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with pytest.raises(clibs.CLibraryError, match="ERROR_"):
        clibs.lz4_decompress(bytes(corrupt), heap)
    with pytest.raises(TypeError, match="level must be an int"):
        clibs.lz4_compress(b"x", heap, level="9")  # type: ignore[arg-type]
    assert_clean(heap)
    closed = memguard.GuardedHeap()
    closed.close()
    with pytest.raises(MemoryError, match="returned NULL"):
        clibs.lz4_cctx(closed)
    with pytest.raises(MemoryError, match="returned NULL"):
        clibs.lz4_dctx(closed)


# ---------------------------------------------------------------------------- subprocesses
def run_python(
    args: list[str], timeout: float = 120, env: dict[str, str] | None = None, coverage: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run Python in a subprocess (measured by coverage unless ``coverage=False``: coverage
    imports ``hashlib``, after which OpenSSL refuses a new allocator)."""
    env = {**{k: v for k, v in os.environ.items() if coverage or not k.startswith("COVERAGE_")}, **(env or {})}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env.pop("MEMGUARD_OPTIONS", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def last_json(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    import json

    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def example_line(name: str, text: str) -> int:
    source = (ROOT / "examples" / name).read_text().splitlines()
    return next(i for i, line in enumerate(source, 1) if text in line)


# ---------------------------------------------------------------------------- libxml2
def test_libxml2_clean_workload_and_error_path_in_a_subprocess() -> None:
    need(native.xml2)
    need_trampolines()
    proc = run_python([str(ROOT / "examples" / "libxml2_guarded.py"), "--docs", "150"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = last_json(proc)
    assert summary["elements"] == sum(i % 50 for i in range(150))
    assert summary["allocations"] > 10_000  # (a strdup on the heap among them)
    assert summary["reports"] == [] and summary["leaked_bytes"] == 0
    # libxml2's error path freed on the heap; the message reached the caller unchanged.
    assert summary["error"] == "Premature end of data in tag catalog line 1 at line 1"


def test_libxml2_overflow_use_after_free_and_leak_in_a_subprocess() -> None:
    need(native.xml2)
    need_trampolines()
    name = "libxml2_guarded.py"
    proc = run_python([str(ROOT / "examples" / name), "--docs", "5", "--bugs"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = last_json(proc)
    dump = example_line(name, "xmlDocDumpMemory(doc")
    assert summary["reports"] == [["heap-buffer-overflow", dump], ["heap-use-after-free", dump]]
    assert summary["leak_lines"] == [example_line(name, "no xmlFreeDoc")]
    assert "freed here:" in proc.stdout and "Direct leak of" in proc.stdout


def test_libxml2_is_refused_once_loaded_in_a_subprocess() -> None:
    need(native.xml2)
    need_trampolines()
    code = textwrap.dedent("""
        import ctypes, memguard
        from memguard import clibs, native
        native.xml2()  # loaded (as lxml would) before memguard was asked
        heap = memguard.GuardedHeap()
        try:
            clibs.xml2_configure(heap)
        except clibs.CLibraryError as exc:
            print("refused:", exc)
    """)
    proc = run_python(["-c", code])
    assert proc.returncode == 0, proc.stderr
    assert "refused: libxml2: libxml2 is already loaded in this process" in proc.stdout
    code = textwrap.dedent("""
        import memguard
        from memguard import clibs
        heap = memguard.GuardedHeap()
        assert clibs.xml2_configure(heap) is clibs.xml2_configure(heap.c_allocator())
        try:
            clibs.xml2_configure(memguard.GuardedHeap())
        except clibs.CLibraryError as exc:
            print("refused:", exc)
        try:
            clibs.xml2_parse("text")
        except TypeError as exc:
            print("type:", exc)
    """)
    proc = run_python(["-c", code])
    assert proc.returncode == 0, proc.stderr
    assert "refused: libxml2: libxml2 is already on another heap" in proc.stdout
    assert "type: data must be bytes-like" in proc.stdout
    proc = run_python(["-c", code], env={"MEMGUARD_NO_TRAMPOLINE": "1"})
    assert "TrampolineUnavailableError: memguard.clibs.xml2_configure" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------- OpenSSL 3
def need_openssl3() -> None:
    need(native.crypto)
    if native.crypto().version_num < 0x30000000:
        pytest.skip(f"OpenSSL 3 is needed, found {native.crypto().version.decode()}")


def test_openssl_clean_workload_error_path_and_hashlib_in_a_subprocess() -> None:
    need_openssl3()
    need_trampolines()
    proc = run_python([str(ROOT / "examples" / "openssl_guarded.py")], coverage=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # and no crash at exit (OPENSSL_INIT_NO_ATEXIT)
    summary = last_json(proc)
    assert summary["same_as_hashlib"] is True and summary["allocations"] > 1000
    assert summary["reports"] == [] and summary["leaks"] == []
    assert summary["suppressed_leaks"] > 0  # OpenSSL's caches, suppressed by OPENSSL_SUPPRESSIONS
    # OpenSSL's error path allocated and freed on the heap; its message reached the caller unchanged.
    assert summary["error"].startswith("EVP_MD_fetch('NO-SUCH-DIGEST'): error:") and "unsupported" in summary["error"]
    # The ssl module's error path frees with its SSLError set: the same error as without memguard.
    assert summary["ssl_error"].startswith("no start line: cadata does not contain a certificate")


def test_openssl_leak_overflow_and_use_after_free_name_c_and_python_lines_in_a_subprocess() -> None:
    need_openssl3()
    need_trampolines()
    name = "openssl_guarded.py"
    proc = run_python([str(ROOT / "examples" / name), "--bugs"], coverage=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = last_json(proc)
    hexstr = example_line(name, "OPENSSL_buf2hexstr(")
    kinds = [kind for kind, _ in summary["reports"]]  # type: ignore[union-attr]
    assert kinds == ["heap-buffer-overflow", "heap-use-after-free"]
    for _, (c_frame, py_frame) in summary["reports"]:  # type: ignore[union-attr]
        assert c_frame.endswith(".c:" + c_frame.rsplit(":", 1)[1]) and "crypto/" in c_frame  # OpenSSL's file:line
        assert py_frame.endswith(f"{name}:{hexstr}")
    [[c_frame, py_frame]] = summary["leaks"]  # type: ignore[misc]
    assert "crypto/evp/digest.c:" in c_frame and py_frame.endswith(f"{name}:{example_line(name, 'EVP_MD_CTX_new()')}")
    assert "Direct leak of" in proc.stdout and "in <C>" in proc.stdout


def test_openssl_is_refused_once_it_has_allocated_in_a_subprocess() -> None:
    need_openssl3()
    need_trampolines()
    code = textwrap.dedent("""
        import hashlib, memguard
        from memguard import clibs
        hashlib.sha256(b"x").digest()
        try:
            clibs.openssl_configure(memguard.GuardedHeap())
        except clibs.CLibraryError as exc:
            print("refused:", exc)
    """)
    proc = run_python(["-c", code], coverage=False)
    assert proc.returncode == 0, proc.stderr
    assert "refused: openssl: CRYPTO_set_mem_functions refused: OpenSSL has already allocated" in proc.stdout
    code = textwrap.dedent("""
        import memguard
        from memguard import clibs
        heap = memguard.GuardedHeap()
        assert clibs.openssl_configure(heap, warm_up=False) is clibs.openssl_configure(heap)
        try:
            clibs.openssl_configure(memguard.GuardedHeap())
        except clibs.CLibraryError as exc:
            print("refused:", exc)
        try:
            clibs.openssl_digest(b"SHA256", b"")
        except TypeError as exc:
            print("type:", exc)
        print(clibs.openssl_digest("SHA256", b"abc").hex())
    """)
    proc = run_python(["-c", code], coverage=False)
    assert proc.returncode == 0, proc.stderr
    assert "refused: openssl: OpenSSL is already on another heap" in proc.stdout
    assert "type: name must be a str" in proc.stdout
    assert "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" in proc.stdout
    proc = run_python(["-c", code], env={"MEMGUARD_NO_TRAMPOLINE": "1"}, coverage=False)
    assert "TrampolineUnavailableError: memguard.clibs.openssl_configure" in proc.stderr, proc.stderr


def test_openssl_digest_in_process_and_configure_refused_here() -> None:
    need_openssl3()
    import hashlib

    assert clibs.openssl_digest("SHA256", b"abc") == hashlib.sha256(b"abc").digest()  # OpenSSL's own allocator
    assert clibs.openssl_digest("SHA3-512", bytearray(b"x" * 1000)) == hashlib.sha3_512(b"x" * 1000).digest()
    with pytest.raises(clibs.CLibraryError, match=r"EVP_MD_fetch\('NO-SUCH'\): error:.*unsupported") as err:
        clibs.openssl_digest("NO-SUCH", b"")
    assert err.value.library == "openssl" and err.value.code != 0
    with pytest.raises(TypeError, match="data must be bytes-like"):
        clibs.openssl_digest("SHA256", "text")  # type: ignore[arg-type]
    maps = Path("/proc/self/maps")
    mapped = {line.split()[-1] for line in maps.read_text().splitlines() if "libcrypto" in line} if maps.exists() else set()
    if len(mapped) != 1 or not trampoline.available():
        pytest.skip("hashlib and memguard may not share one libcrypto here")
    with pytest.raises(clibs.CLibraryError, match="OpenSSL has already allocated memory in this process"):
        clibs.openssl_configure(memguard.GuardedHeap())  # pytest's process has used hashlib
