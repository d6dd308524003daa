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

import json
import statistics
import sys
import time
from typing import Callable

import memguard
from pairs import arguments, heap_case, interleaved_medians, pair_case, print_table

MiB = 1 << 20


def buddy_case(backed: bool) -> Callable[[int], float]:
    if backed:
        buddy = memguard.BuddyAllocator(min_size=64, classes=4, backing=memguard.GuardedHeap())
        size = 64
    else:
        buddy = memguard.BuddyAllocator()
        size = MiB

    return pair_case(buddy.allocate, buddy.release, size)


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
    args, pairs, reps = arguments(__doc__.splitlines()[0], 5000, argv)
    cases = {
        "heap pair": heap_case(64),
        "buddy pair, offsets": buddy_case(backed=False),
        "buddy pair, backed": buddy_case(backed=True),
    }
    medians, fills = interleaved_medians(cases, pairs, reps, also=fill_and_drain)
    fill = statistics.median(fills)
    if args.json:
        print(json.dumps({"pairs": {name: {"us": med * 1e6, "ratio": med / medians["heap pair"]}
                                    for name, med in medians.items()}, "fill_and_drain_ms": fill * 1e3}))
        return 0
    print_table(f"memguard buddy benchmark: {reps} interleaved repetitions of {pairs} pairs (median per pair)", medians)
    print(f"  fill+drain 4096 x 1 MiB  {fill * 1e3:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
