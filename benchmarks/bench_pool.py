"""Benchmark: ObjectPool get+put pairs against the raw guarded-heap malloc+free pair.

Cases (each timed in interleaved repetitions; the median per pair is printed):

* ``heap pair``: ``heap.malloc(40); heap.free(p)`` on a heap with no plugin manager;
* ``heap pair, idle plugins``: the same with a plugin manager and a plugin that
  implements only ``memguard_report`` (the per-allocation seams stay ``None``: this
  must not move);
* ``heap pair, alloc+free plugin``: a plugin implementing ``memguard_alloc``/``memguard_free``;
* ``pool pair``: ``ObjectPool.get(); put()``;
* ``pool pair, invariants plugin``: with ``memguard_plugins.pool_invariants`` registered.

Run: ``python benchmarks/bench_pool.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import sys
from typing import Callable

import memguard
from pairs import arguments, heap_case, interleaved_medians, pair_case, print_table
from memguard_plugins import pool_invariants as invariants


class IdlePlugin:
    """Implements a hook that is not on the allocation path."""

    @memguard.hookimpl
    def memguard_report(self, report: memguard.Report) -> None:
        pass


class CountingPlugin:
    """Implements the allocation-path hooks."""

    def __init__(self) -> None:
        self.n = 0

    @memguard.hookimpl
    def memguard_alloc(self, heap: memguard.GuardedHeap, block: memguard.BlockInfo) -> None:
        self.n += 1

    @memguard.hookimpl
    def memguard_free(self, heap: memguard.GuardedHeap, block: memguard.BlockInfo) -> None:
        self.n -= 1


def pool_case(plugins: list[object]) -> Callable[[int], float]:
    heap = memguard.GuardedHeap(plugins=plugins)
    pool = memguard.ObjectPool(40, heap=heap)

    return pair_case(lambda _: pool.get(), pool.put, None)


def main(argv: list[str] | None = None) -> int:
    _, pairs, reps = arguments(__doc__.splitlines()[0], 5000, argv)
    cases = {
        "heap pair": heap_case(40),
        "heap pair, idle plugins": heap_case(40, [IdlePlugin()]),
        "heap pair, alloc+free plugin": heap_case(40, [CountingPlugin()]),
        "pool pair": pool_case([]),
        "pool pair, invariants plugin": pool_case([invariants]),
    }
    medians, _ = interleaved_medians(cases, pairs, reps)
    print_table(f"memguard pool benchmark: {reps} interleaved repetitions of {pairs} pairs (median per pair)", medians)
    print(f"  invariants plugin overhead on the pool pair: x{medians['pool pair, invariants plugin'] / medians['pool pair']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
