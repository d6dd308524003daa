"""Real C libraries: their own allocator versus memguard's guarded heap (and valgrind).

Run:  python benchmarks/bench_clibs.py [--quick] [--reps N] [--no-valgrind]

Same work, same process: zlib compressing 64 MiB, expat parsing a generated 20 MiB
XML document, zstd compressing 64 MiB (one thread, then two workers) and lz4 framing
64 MiB, first with the library's default allocator (the baseline), then with the guarded
heap behind the library's allocator hooks.  Repetitions are interleaved (plain, guarded,
guarded, plain, …) and medians compared.  Targets: zlib, zstd and lz4 ratio <= 1.10,
expat ratio <= 3.0.  A second table gives the cost of one small operation (a 4 KiB
buffer through a fresh zstd or lz4 context, whose allocations the guarded heap makes), in
microseconds, plain and guarded.  libxml2 and OpenSSL take one allocator for the whole
process, so they cannot be compared in one process and are not here.  Ratios are of process CPU time (``time.process_time``): on a shared
machine wall-clock time mostly measures the neighbours; the wall-clock ratio is printed too.

When ``valgrind`` is on PATH the same workloads (smaller, because memcheck is slow:
see the size column) run under ``valgrind --tool=memcheck`` in a subprocess, timed
inside the workload (interpreter start-up excluded), against the plain run of the same
size in this process.  ``--quick`` uses small sizes (for the test-suite).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import memguard  # noqa: E402
from memguard import clibs, native  # noqa: E402
from memguard.heap.c_allocator import allocator_for  # noqa: E402

MiB = 1 << 20


def sample(n: int) -> bytes:
    """``n`` bytes of compressible text-like data (a 1 MiB random tile, repeated)."""
    rng = random.Random(64)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"memguard", b"zlib", b"heap", b"expat"]
    tile = bytearray()
    while len(tile) < MiB:
        tile += rng.choice(words) + str(rng.randrange(100000)).encode() + b" "
    tile = tile[:MiB]
    return (bytes(tile) * (n // MiB + 1))[:n]


def wide_sample(n: int) -> bytes:
    """Like :func:`sample`, but repeating only every 8 MiB: zstd's window (2 MiB at level 3)
    never sees the repetition, so it compresses the text rather than matching whole tiles."""
    rng = random.Random(8)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"memguard", b"zstd", b"heap", b"lz4"]
    want = min(n, 8 * MiB)
    tile = bytearray()
    while len(tile) < want:
        tile += b" ".join(rng.choice(words) + str(rng.randrange(100000)).encode() for _ in range(64)) + b"\n"
    tile = tile[:want]
    return (bytes(tile) * (n // len(tile) + 1))[:n]


def xml_document(n: int) -> bytes:
    """A generated XML catalog of about ``n`` bytes (attributes, text, entities, CDATA)."""
    parts = [b'<?xml version="1.0"?>\n<catalog xmlns:x="urn:x">\n']
    size = len(parts[0])
    i = 0
    while size < n:
        item = (
            b'<item id="%d" kind="k%d" x:tag="t%d"><title>Title &amp; %d</title><price cur="EUR">%d.50</price>'
            b"<tags><tag>a%d</tag><tag>b</tag></tags><![CDATA[raw <%d>]]></item>\n" % (i, i % 50, i % 7, i, i % 1000, i % 13, i)
        )
        parts.append(item)
        size += len(item)
        i += 1
    parts.append(b"</catalog>\n")
    return b"".join(parts)


def zlib_work(data: bytes, allocator: object) -> None:
    """Compress ``data`` at level 6 (the library's allocator when ``allocator`` is None)."""
    clibs.deflate(data, allocator, level=6)


def expat_work(data: bytes, allocator: object) -> None:
    """Parse ``data`` with no handlers (the library's allocator when ``allocator`` is None)."""
    clibs.expat_parse(data, allocator)


def zstd_work(data: bytes, allocator: object) -> None:
    """Compress ``data`` with zstd at level 3 on one thread."""
    clibs.zstd_compress(data, allocator, level=3)


def zstd_mt_work(data: bytes, allocator: object) -> None:
    """Compress ``data`` with zstd at level 3 and two worker threads (``ZSTD_c_nbWorkers``)."""
    clibs.zstd_compress(data, allocator, level=3, workers=2)


def lz4_work(data: bytes, allocator: object) -> None:
    """Compress ``data`` into one lz4 frame."""
    clibs.lz4_compress(data, allocator)


WORKLOADS: dict[str, tuple[Callable[[int], bytes], Callable[[bytes, object], None]]] = {
    "zlib": (sample, zlib_work),
    "expat": (xml_document, expat_work),
    "zstd": (wide_sample, zstd_work),
    "zstd-mt": (wide_sample, zstd_mt_work),
    "lz4": (sample, lz4_work),
}

#: The library each workload needs (its loader in memguard.native).
LIBRARIES = {"zlib": "zlib", "expat": "expat", "zstd": "zstd", "zstd-mt": "zstd", "lz4": "lz4"}

#: One small operation per call: a 4 KiB buffer compressed through a fresh context.
SMALL_OPS: dict[str, Callable[[bytes, object], None]] = {
    "zlib 4K": lambda data, a: clibs.deflate(data, a, level=6),
    "zstd 4K": lambda data, a: clibs.zstd_compress(data, a, level=3),
    "lz4 4K": lambda data, a: clibs.lz4_compress(data, a),
}


def available(library: str) -> bool:
    """Whether the C library is installed (a missing one is skipped, with a line saying so)."""
    try:
        getattr(native, library)()
    except memguard.LibraryNotFoundError:
        return False
    return True


def per_operation(name: str, count: int, reps: int) -> tuple[float, float]:
    """Microseconds of one small operation, plain and guarded (interleaved medians)."""
    work = SMALL_OPS[name]
    data = sample(4096)
    heap = memguard.GuardedHeap(on_error="raise")
    alloc = allocator_for(heap)
    work(data, None)
    work(data, alloc)

    def loop(allocator: object) -> float:
        t = time.perf_counter()
        for _ in range(count):
            work(data, allocator)
        return (time.perf_counter() - t) / count * 1e6

    plain, guarded = [], []
    for rep in range(reps):
        order = [(plain, None), (guarded, alloc)]
        if rep % 2:
            order.reverse()
        for bucket, allocator in order:
            bucket.append(loop(allocator))
    assert heap.check() == [] and heap.leaks() == [], "memguard found something in a clean run"
    heap.close()
    return statistics.median(plain), statistics.median(guarded)


def timed(fn: Callable[[], None]) -> float:
    """Process CPU seconds of one call."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def timed_both(fn: Callable[[], None]) -> tuple[float, float]:
    """``(CPU seconds, wall seconds)`` of one call."""
    w = time.perf_counter()
    t = time.process_time()
    fn()
    return time.process_time() - t, time.perf_counter() - w


def compare(name: str, size: int, reps: int) -> dict[str, float]:
    """Interleaved plain/guarded runs of one workload; medians, ratio, allocations per run."""
    make, work = WORKLOADS[name]
    data = make(size)
    heap = memguard.GuardedHeap(on_error="raise")
    alloc = allocator_for(heap)  # heap.c_allocator(), one per heap
    work(data, None)  # warm up both paths (library load, page faults)
    work(data, alloc)
    plain: list[tuple[float, float]] = []
    guarded: list[tuple[float, float]] = []
    before = heap.stats().total_allocs
    for rep in range(reps):
        order = [(plain, None), (guarded, alloc)]
        if rep % 2:
            order.reverse()
        for bucket, allocator in order:
            bucket.append(timed_both(lambda: work(data, allocator)))
    allocs = (heap.stats().total_allocs - before) / reps
    assert heap.check() == [] and heap.leaks() == [], "memguard found something in a clean run"
    heap.close()
    p, g = statistics.median(t[0] for t in plain), statistics.median(t[0] for t in guarded)
    pw, gw = statistics.median(t[1] for t in plain), statistics.median(t[1] for t in guarded)
    return {"size": len(data), "plain": p, "guarded": g, "ratio": g / p, "wall_ratio": gw / pw, "allocs": allocs}


def worker(name: str, size: int) -> None:
    """Run one plain workload and print its time as JSON (the valgrind subprocess)."""
    make, work = WORKLOADS[name]
    data = make(size)
    print(json.dumps({"seconds": timed(lambda: work(data, None))}))


def under_valgrind(name: str, size: int) -> float | None:
    """Seconds the plain workload takes under memcheck (timed inside it); None on failure."""
    cmd = [
        "valgrind", "--tool=memcheck", "--leak-check=no", "-q", "--error-limit=no",
        sys.executable, __file__, "--worker", name, "--size", str(size),
    ]
    env = dict(os.environ, PYTHONMALLOC="malloc")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  valgrind run of {name} failed: {exc}", file=sys.stderr)
        return None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return float(json.loads(line)["seconds"])
    print(f"  valgrind run of {name} failed (rc {proc.returncode}): {proc.stderr[-500:]}", file=sys.stderr)
    return None


def main() -> int:
    """Print the comparison tables; exit 1 when a target is missed (full runs only)."""
    parser = argparse.ArgumentParser(description="C libraries: plain allocator vs memguard (vs valgrind)")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--reps", type=int, default=0, help="interleaved repetitions (default 5, quick 3)")
    parser.add_argument("--no-valgrind", action="store_true", help="skip the valgrind comparison")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.size)
        return 0
    reps = args.reps or (3 if args.quick else 5)
    big = 4 * MiB if args.quick else 64 * MiB
    sizes = {"zlib": big, "expat": 2 * MiB if args.quick else 20 * MiB, "zstd": big, "zstd-mt": big, "lz4": big}
    vg_sizes = {"zlib": 1 * MiB, "expat": MiB // 2} if args.quick else {"zlib": 8 * MiB, "expat": 4 * MiB}
    targets = {"zlib": 1.10, "expat": 3.0, "zstd": 1.10, "zstd-mt": 1.10, "lz4": 1.10}
    print(f"Python {sys.version.split()[0]}, {reps} interleaved repetitions, medians")
    print("CPU seconds (process_time); 'wall' is the wall-clock ratio")
    header = f"{'workload':<8} {'size':>8} {'allocs/run':>10} {'plain s':>9} {'memguard s':>11} {'ratio':>6} {'target':>7} {'wall':>6}"
    print(header)
    print("-" * len(header))
    failed = False
    for name, size in sizes.items():
        if not available(LIBRARIES[name]):
            print(f"{name:<8} (library not installed)")
            continue
        r = compare(name, size, reps)
        ok = r["ratio"] <= targets[name]
        failed |= not ok
        print(
            f"{name:<8} {r['size'] / MiB:>6.1f}Mi {r['allocs']:>10.0f} {r['plain']:>9.3f} {r['guarded']:>11.3f} "
            f"{r['ratio']:>6.2f} {'<= %.2f' % targets[name]:>7} {r['wall_ratio']:>6.2f}{'' if ok else '  MISSED'}"
        )
    count = 30 if args.quick else 300
    print(f"\nOne small operation (a fresh context, 4 KiB in), microseconds, {count} per repetition:")
    header = f"{'operation':<9} {'plain us':>9} {'memguard us':>12} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for name in SMALL_OPS:
        if not available(name.split()[0]):
            print(f"{name:<9} (library not installed)")
            continue
        p_us, g_us = per_operation(name, count, reps)
        print(f"{name:<9} {p_us:>9.1f} {g_us:>12.1f} {g_us / p_us:>6.2f}")
    if not args.no_valgrind:
        if shutil.which("valgrind") is None:
            print("\nvalgrind is not on PATH: no memcheck comparison")
        else:
            print("\nvalgrind --tool=memcheck (PYTHONMALLOC=malloc), smaller workloads, CPU time inside the workload:")
            header = f"{'workload':<8} {'size':>8} {'plain s':>9} {'memcheck s':>11} {'ratio':>7}"
            print(header)
            print("-" * len(header))
            for name, size in vg_sizes.items():
                make, work = WORKLOADS[name]
                data = make(size)
                work(data, None)
                plain = statistics.median(timed(lambda: work(data, None)) for _ in range(reps))
                vg = under_valgrind(name, size)
                shown = f"{vg:>11.3f} {vg / plain:>7.1f}" if vg is not None else f"{'n/a':>11} {'n/a':>7}"
                print(f"{name:<8} {size / MiB:>6.1f}Mi {plain:>9.3f} {shown}")
    return 1 if failed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
