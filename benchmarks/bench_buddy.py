"""Benchmark: BuddyAllocator allocate+release pairs, and filling then draining 4096 x 1 MiB.

Cases (each timed in interleaved repetitions; the median per pair is printed):

* ``heap pair``: ``heap.malloc(64); heap.free(p)`` on a guarded heap (the baseline);
* ``buddy pair, offsets``: ``release(allocate(1 MiB))`` on a default allocator (offsets only);
* ``buddy pair, backed``: ``release(allocate(64))`` on an allocator of 64-byte classes
  backed by a guarded heap (each region declared to a MemPool).

Then ``fill+drain``: 4096 allocations of 1 MiB on a fresh default allocator and their
release (coalescing back to one 4 GiB region), the median time of the whole run.

Run: ``python benchmarks/bench_buddy.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import memguard

MiB = 1 << 20


def heap_case() -> Callable[[int], float]:
    heap = memguard.GuardedHeap(quarantine_bytes=1 << 16)

    def run(n: int) -> float:
        malloc, free = heap.malloc, heap.free
        t = time.perf_counter()
        for _ in range(n):
            free(malloc(64))
        return (time.perf_counter() - t) / n

    return run


def buddy_case(backed: bool) -> Callable[[int], float]:
    if backed:
        buddy = memguard.BuddyAllocator(min_size=64, classes=4, backing=memguard.GuardedHeap())
        size = 64
    else:
        buddy = memguard.BuddyAllocator()
        size = MiB

    def run(n: int) -> float:
        allocate, release = buddy.allocate, buddy.release
        t = time.perf_counter()
        for _ in range(n):
            release(allocate(size))
        return (time.perf_counter() - t) / n

    return run


def fill_and_drain() -> float:
    buddy = memguard.BuddyAllocator()
    t = time.perf_counter()
    regions = [buddy.allocate(MiB) for _ in range(4096)]
    for r in regions:
        buddy.release(r)
    elapsed = time.perf_counter() - t
    if buddy.free_offsets(6) != [0]:
        raise AssertionError("the allocator did not coalesce back to one region")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few, short repetitions (a smoke test)")
    parser.add_argument("--pairs", type=int, default=None, help="pairs per repetition")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions")
    args = parser.parse_args(argv)
    pairs = args.pairs or (200 if args.quick else 5000)
    reps = args.reps or (3 if args.quick else 15)
    cases = {
        "heap pair": heap_case(),
        "buddy pair, offsets": buddy_case(backed=False),
        "buddy pair, backed": buddy_case(backed=True),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():
        run(max(pairs // 10, 10))  # warm up
    fills: list[float] = []
    for _ in range(reps):
        for name, run in cases.items():
            times[name].append(run(pairs))
        fills.append(fill_and_drain())
    base = statistics.median(times["heap pair"])
    print(f"memguard buddy benchmark: {reps} interleaved repetitions of {pairs} pairs (median per pair)")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:<24} {med * 1e6:8.2f} us   x{med / base:5.2f} of heap pair")
    print(f"  fill+drain 4096 x 1 MiB  {statistics.median(fills) * 1e3:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
