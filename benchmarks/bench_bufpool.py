"""Benchmark: BufPool allocate(1)+release pairs against the raw guarded-heap malloc+free pair,
and a contended pool.

Cases:

* ``heap pair``: ``heap.malloc(4096); heap.free(p)``;
* ``bufpool pair``: ``pool.allocate(1).release()`` (4096-byte buffers);
* ``bufpool pair, budget plugin``: with ``memguard_plugins.bufpool_budget`` registered.

The pairs are timed in interleaved repetitions in one process; the median per pair is
printed, with its ratio to the heap pair.  Then 8 threads contend for a pool whose budget
holds 4 allocations: each thread allocates 1 to 2 buffers, writes them and releases them;
the throughput (allocations per second) and the longest single wait are printed.

Run: ``python benchmarks/bench_bufpool.py`` (``--quick`` for a smoke run, ``--json``
for machine-readable figures).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from typing import Callable

import memguard
from pairs import arguments, heap_case, interleaved_medians, print_table
from memguard_plugins import bufpool_budget

BUFFER = 4096


def pool_case(plugins: list[object]) -> Callable[[int], float]:
    heap = memguard.GuardedHeap(quarantine_bytes=1 << 16, plugins=plugins)
    pool = memguard.BufPool(buffer_size=BUFFER, max_memory=64 * BUFFER, heap=heap)

    def run(n: int) -> float:
        allocate = pool.allocate
        t = time.perf_counter()
        for _ in range(n):
            allocate(1).release()
        return (time.perf_counter() - t) / n

    return run


def contended(threads: int, seconds: float) -> dict[str, float]:
    """``threads`` threads on a pool that holds 4 allocations of 2 buffers."""
    heap = memguard.GuardedHeap(quarantine_bytes=1 << 20, on_error="report")
    pool = memguard.BufPool(buffer_size=BUFFER, max_memory=8 * BUFFER, heap=heap)
    stop = time.monotonic() + seconds
    counts: list[int] = []
    longest: list[float] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        n = worst = 0.0
        while time.monotonic() < stop:
            t = time.perf_counter()
            a = pool.allocate(rng.randint(1, 2), timeout=30)
            worst = max(worst, time.perf_counter() - t)
            a.buffer(0)[:8] = b"memguard"
            a.release()
            n += 1
        counts.append(int(n))
        longest.append(worst)

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    stats = pool.stats()
    pool.close(timeout=5)
    findings = len(heap.check())
    heap.close()
    return {
        "threads": threads,
        "allocations": sum(counts),
        "per_second": sum(counts) / elapsed,
        "longest_wait_ms": max(longest) * 1e3,
        "waits": stats.total_waits,
        "peak_bytes": stats.peak_bytes,
        "max_memory": stats.max_memory,
        "findings": findings,
    }


def main(argv: list[str] | None = None) -> int:
    args, pairs, reps = arguments(__doc__.splitlines()[0], 3000, argv)
    cases = {
        "heap pair": heap_case(BUFFER),
        "bufpool pair": pool_case([]),
        "bufpool pair, budget plugin": pool_case([bufpool_budget]),
    }
    medians, _ = interleaved_medians(cases, pairs, reps)
    base = medians["heap pair"]
    contention = contended(8, 0.3 if args.quick else 2.0)
    if args.json:
        print(json.dumps({
            "pairs": {name: {"us": med * 1e6, "ratio": med / base} for name, med in medians.items()},
            "contended": contention,
        }))
        return 0
    print_table(f"memguard bufpool benchmark: {reps} interleaved repetitions of {pairs} pairs (median per pair)", medians)
    c = contention
    print(
        f"  {c['threads']} threads, budget of 4 allocations: {c['per_second']:,.0f} allocations/s, "
        f"longest wait {c['longest_wait_ms']:.1f} ms, {c['waits']} waits, peak {c['peak_bytes']}/{c['max_memory']} bytes, "
        f"{c['findings']} findings"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
