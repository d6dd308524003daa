"""Benchmark: BlockAllocator allocate+free pairs, and a full defragmentation of a fragmented heap.

Pairs (interleaved repetitions, the median per pair):

* ``heap pair``: ``heap.malloc(64); heap.free(p)`` on a guarded heap (the baseline);
* ``blocks pair, <strategy>``: ``blocks.free(blocks.allocate(64, strategy=...))`` on an
  allocator holding 2000 live allocations in 1 MiB pages (so there are ranges to choose from).

Defragmentation: ``--allocations`` (100k by default, 10k with ``--quick``) allocations of
16 B to 4 KiB (log-uniform, placed ``min_offset``) in pages of 1 MiB, half of them freed
at random, then ``defragment("full")`` with no budget: its passes, wall time, bytes and
allocations moved, fragmentation and pages before and after, and its copy throughput
against one ``ctypes.memmove`` of as many bytes (the physical limit).

Run: ``python benchmarks/bench_blocks.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import ctypes
import json
import math
import random
import sys
import time
from typing import Any, Callable

import memguard
from pairs import arguments, heap_case, interleaved_medians, pair_case, print_table

MiB = 1 << 20


def blocks_case(strategy: str) -> Callable[[int], float]:
    blocks = memguard.BlockAllocator(page_size=MiB, heap=memguard.GuardedHeap(quarantine_bytes=1 << 16))
    rng = random.Random(1)
    kept = [blocks.allocate(rng.randint(16, 1024)) for _ in range(4000)]
    for a in kept[::2]:
        blocks.free(a)
    return pair_case(lambda size: blocks.allocate(size, strategy=strategy), blocks.free, 64)


def fragmented(n: int, seed: int = 7) -> memguard.BlockAllocator:
    """``n`` allocations of 16 B-4 KiB in 1 MiB pages, half of them freed at random."""
    rng = random.Random(seed)
    blocks = memguard.BlockAllocator(page_size=MiB, heap=memguard.GuardedHeap(quarantine_bytes=1 << 16))
    live = [blocks.allocate(int(math.exp(rng.uniform(math.log(16), math.log(4096)))), strategy="min_offset")
            for _ in range(n)]
    for a in rng.sample(live, n // 2):
        blocks.free(a)
    return blocks


def defrag_figures(n: int) -> dict[str, Any]:
    blocks = fragmented(n)
    before = blocks.stats()
    t = time.perf_counter()
    stats = blocks.defragment("full")
    wall = time.perf_counter() - t
    after = blocks.stats()
    src = (ctypes.c_char * max(stats.bytes_moved, 1))()
    dst = (ctypes.c_char * max(stats.bytes_moved, 1))()
    t = time.perf_counter()
    ctypes.memmove(dst, src, stats.bytes_moved)
    limit = time.perf_counter() - t
    blocks.heap.close(check=False)
    return {
        "allocations": n, "live": after.allocations, "passes": stats.passes, "seconds": wall,
        "bytes_moved": stats.bytes_moved, "allocations_moved": stats.allocations_moved,
        "pages_before": before.pages, "pages_after": after.pages, "pages_freed": stats.pages_freed,
        "fragmentation_before": before.fragmentation, "fragmentation_after": after.fragmentation,
        "copy_mb_s": stats.bytes_moved / wall / 1e6, "memmove_mb_s": stats.bytes_moved / max(limit, 1e-9) / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    extra = [a for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--allocations=")]
    rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in extra]
    args, pairs, reps = arguments(__doc__.splitlines()[0], 5000, rest)
    n = int(extra[-1].split("=", 1)[1]) if extra else (10_000 if args.quick else 100_000)
    cases = {"heap pair": heap_case(64)}
    for strategy in ("min_memory", "min_time", "min_offset"):
        cases[f"blocks pair, {strategy}"] = blocks_case(strategy)
    medians, _ = interleaved_medians(cases, pairs, reps)
    d = defrag_figures(n)
    if args.json:
        print(json.dumps({"pairs": {name: {"us": med * 1e6, "ratio": med / medians["heap pair"]}
                                    for name, med in medians.items()}, "defragment": d}))
        return 0
    print_table(f"memguard blocks benchmark: {reps} interleaved repetitions of {pairs} pairs (median per pair)", medians)
    print(f"full defragmentation: {d['allocations']} allocations of 16 B-4 KiB in 1 MiB pages, half freed "
          f"({d['live']} live)")
    print(f"  {d['passes']} passes in {d['seconds']:.2f} s; {d['allocations_moved']} allocations, "
          f"{d['bytes_moved'] / MiB:.1f} MiB moved")
    print(f"  pages {d['pages_before']} -> {d['pages_after']} ({d['pages_freed']} freed); fragmentation "
          f"{d['fragmentation_before']:.3f} -> {d['fragmentation_after']:.3f}")
    print(f"  copy throughput {d['copy_mb_s']:.0f} MB/s (one memmove of as many bytes: {d['memmove_mb_s']:.0f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
