"""What the pair benchmarks share: their arguments, interleaved medians and the table.

A case is a function that runs ``n`` pairs and returns the seconds per pair. The cases
run one after another, ``reps`` times (interleaved, so each sees the same machine
state), after a warm-up; each figure is the median of its repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import memguard

Case = Callable[[int], float]


def pair_case(take: Callable[[Any], Any], give: Callable[[Any], object], arg: Any) -> Case:
    """The case that runs ``give(take(arg))`` (a heap's ``free(malloc(64))``, a pool's …)."""

    def run(n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            give(take(arg))
        return (time.perf_counter() - t) / n

    return run


def heap_case(size: int, plugins: list[object] | None = None) -> Case:
    """The guarded heap's ``malloc(size)`` + ``free`` pair (the baseline of the pool benchmarks)."""
    heap = memguard.GuardedHeap(quarantine_bytes=1 << 16, plugins=plugins or [])
    return pair_case(heap.malloc, heap.free, size)


def arguments(description: str, pairs: int, argv: list[str] | None) -> tuple[argparse.Namespace, int, int]:
    """The parsed ``--quick``, ``--json``, ``--pairs`` and ``--reps`` (and the pairs and reps to run)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="few, short repetitions (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--pairs", type=int, default=None, help="pairs per repetition")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions")
    args = parser.parse_args(argv)
    return args, args.pairs or (200 if args.quick else pairs), args.reps or (3 if args.quick else 15)


def interleaved_medians(
    cases: dict[str, Case], pairs: int, reps: int, also: Callable[[], float] | None = None
) -> tuple[dict[str, float], list[float]]:
    """Median seconds per pair of each case, and what ``also`` returned once per repetition."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    extra: list[float] = []
    for run in cases.values():
        run(max(pairs // 10, 10))  # warm up
    for _ in range(reps):
        for name, run in cases.items():
            times[name].append(run(pairs))
        if also is not None:
            extra.append(also())
    return {name: statistics.median(values) for name, values in times.items()}, extra


def print_table(title: str, medians: dict[str, float], base: str = "heap pair") -> None:
    """One line per case: microseconds per pair and the ratio to ``base``."""
    width = max(map(len, medians)) + 2
    print(title)
    for name, med in medians.items():
        print(f"  {name:<{width}} {med * 1e6:8.2f} us   x{med / medians[base]:5.2f} of {base}")
