"""Benchmark: the MemoryManager's pairs against the guarded heap's and the object pool's, and a collection.

Cases:

* ``heap pair``: ``heap.malloc(4096); heap.free(p)``;
* ``manager pair``: ``aid, _ = mm.allocate(4096); mm.deallocate(aid)``;
* ``object pool pair``: ``pool.put(pool.get())`` (4096-byte objects);
* ``manager pool pair``: ``aid, _ = mm.allocate_from_pool("p"); mm.return_to_pool("p", aid)`` (4096-byte chunks);
* ``garbage_collect``: one ``mm.garbage_collect()`` freeing ``--gc`` expired allocations
  (100 000 by default; the time to allocate them is not counted).

The pairs are timed in interleaved repetitions in one process; the median per pair is
printed, with its ratio to the heap pair.

Run: ``python benchmarks/bench_manager.py`` (``--quick`` for a smoke run, ``--json``
for machine-readable figures, ``--gc N`` for the size of the collection).
"""

from __future__ import annotations

import json
import sys
import time

import memguard
from pairs import arguments, heap_case, interleaved_medians, pair_case, print_table

SIZE = 4096


class Clock:
    """A clock the benchmark moves by hand."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


def manager() -> memguard.MemoryManager:
    heap = memguard.GuardedHeap(quarantine_bytes=1 << 16, plugins=[])
    return memguard.MemoryManager(1 << 30, heap=heap, page_size=1 << 20)


def manager_case() -> object:
    mm = manager()
    return pair_case(lambda _: mm.allocate(SIZE)[0], mm.deallocate, None)


def manager_pool_case() -> object:
    mm = manager()
    mm.create_pool("p", SIZE, initial_count=4, max_count=8, strategy="lifo")
    return pair_case(lambda _: mm.allocate_from_pool("p")[0], lambda aid: mm.return_to_pool("p", aid), None)


def objpool_case() -> object:
    heap = memguard.GuardedHeap(quarantine_bytes=1 << 16, plugins=[])
    pool = memguard.ObjectPool(SIZE, heap=heap)
    return pair_case(lambda _: pool.get(), pool.put, None)


def collection(n: int) -> float:
    """Seconds of one garbage_collect() that frees ``n`` expired allocations."""
    clock = Clock()
    heap = memguard.GuardedHeap(plugins=[])
    mm = memguard.MemoryManager(1 << 34, heap=heap, clock=clock, page_size=1 << 22)
    for _ in range(n):
        mm.allocate(64, lifetime="short")
    clock.now += 61
    t = time.perf_counter()
    stats = mm.garbage_collect()
    took = time.perf_counter() - t
    assert stats.allocation_count == 0
    mm.close()
    heap.close()
    return took


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table (or JSON)."""
    rest = list(sys.argv[1:] if argv is None else argv)
    gc_n = 0
    if "--gc" in rest:
        i = rest.index("--gc")
        gc_n = int(rest[i + 1]) if i + 1 < len(rest) else 0
        del rest[i : i + 2]
        if gc_n < 1:
            raise SystemExit("--gc takes a positive number of allocations")
    args, pairs, reps = arguments(__doc__ or "", 20_000, rest)
    gc_n = gc_n or (2_000 if args.quick else 100_000)
    cases = {
        "heap pair": heap_case(SIZE),
        "manager pair": manager_case(),
        "object pool pair": objpool_case(),
        "manager pool pair": manager_pool_case(),
    }
    medians, _ = interleaved_medians(cases, pairs, reps)  # type: ignore[arg-type]
    gc_seconds = collection(gc_n)
    if args.json:
        print(json.dumps({"pairs_us": {k: v * 1e6 for k, v in medians.items()},
                          "garbage_collect": {"allocations": gc_n, "seconds": gc_seconds}}))
        return 0
    print_table(f"MemoryManager pairs ({SIZE} bytes, median of {reps} x {pairs})", medians)
    print(f"  object pool pair -> manager pool pair: x{medians['manager pool pair'] / medians['object pool pair']:.2f}")
    print(f"garbage_collect of {gc_n} expired allocations: {gc_seconds * 1e3:.1f} ms "
          f"({gc_seconds / gc_n * 1e6:.2f} us each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
