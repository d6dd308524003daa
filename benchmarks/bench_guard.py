"""Guard pages: what sampling costs the heap, what guarding everything costs, in one process.

Run: ``python benchmarks/bench_guard.py`` (``--quick`` for a smoke run, ``--json`` for figures).

* the malloc+free pair of 64 bytes on a heap with ``guard_sample=1000`` against the same
  pair on a plain guarded heap (goal: within 10%, ratio <= 1.10);
* the pair with ``guard="all"`` (every block gets an mmap, an mprotect and an munmap)
  against raw ctypes ``malloc``/``free``: the ratio, and the memory per live guarded block
  (resident and virtual growth over 2000 live 64-byte blocks, from psutil);
* the generated 500-test pytest suite of ``bench_pytest.py`` under ``--memguard`` with
  ``guard_sample=100`` against ``--memguard`` alone (wall time of whole runs, best of R).

Each pair figure is the median of interleaved repetitions (plain, sampled, all, raw, …), so
every case sees the same machine state.  On a shared machine the figures are noisy: quote
them with the command and the load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import psutil

import memguard
from memguard import native

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pytest import make_suite, run as run_pytest  # noqa: E402
from pairs import interleaved_medians, pair_case  # noqa: E402

SAMPLE_TARGET = 1.10


def memory_per_block(count: int) -> tuple[float, float]:
    """Resident and virtual bytes per live 64-byte ``guard="all"`` block (growth over ``count``)."""
    heap = memguard.GuardedHeap(guard="all", guard_max=count + 1)
    proc = psutil.Process()
    before = proc.memory_info()
    blocks = [heap.malloc(64) for _ in range(count)]
    after = proc.memory_info()
    for p in blocks:
        heap.free(p)
    heap.close()
    return (after.rss - before.rss) / count, (after.vms - before.vms) / count


def pytest_figures(tests: int, repeat: int) -> dict[str, float]:
    """Best wall time of the generated suite: plain, --memguard, --memguard with guard_sample=100."""
    modes: dict[str, tuple[str, ...]] = {
        "plain": (),
        "--memguard": ("--memguard",),
        "--memguard guard_sample=100": ("--memguard", "--memguard-options=guard_sample=100"),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="memguard-bench-guard-") as tmp:
        directory = Path(tmp)
        make_suite(directory, tests)
        for _ in range(repeat):
            for mode, extra in modes.items():
                times[mode].append(run_pytest(directory, *extra))
    return {m: min(t) for m, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, a 20-test suite, no target check")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--tests", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    pairs, reps = (300, 3) if args.quick else (20000, 15)
    plain = memguard.GuardedHeap(quarantine_bytes=1 << 16)
    sampled = memguard.GuardedHeap(quarantine_bytes=1 << 16, guard_sample=1000)
    every = memguard.GuardedHeap(quarantine_bytes=1 << 16, guard="all")
    cases: dict[str, Callable[[int], float]] = {
        "heap pair": pair_case(plain.malloc, plain.free, 64),
        "guard_sample=1000": pair_case(sampled.malloc, sampled.free, 64),
        'guard="all"': pair_case(every.malloc, every.free, 64),
        "raw ctypes": pair_case(native.raw_malloc, native.raw_free, 64),
    }
    medians, _ = interleaved_medians(cases, pairs, reps)
    rss, vms = memory_per_block(200 if args.quick else 2000)
    tests, repeat = (20, 1) if args.quick else (args.tests, args.repeat)
    suite = pytest_figures(tests, repeat)
    figures: dict[str, Any] = {
        "us_per_pair": {k: v * 1e6 for k, v in medians.items()},
        "sample_1000_over_heap": medians["guard_sample=1000"] / medians["heap pair"],
        "all_over_raw": medians['guard="all"'] / medians["raw ctypes"],
        "all_over_heap": medians['guard="all"'] / medians["heap pair"],
        "all_rss_bytes_per_block": rss,
        "all_virtual_bytes_per_block": vms,
        "pytest_seconds": suite,
        "pytest_guard_sample_100_over_memguard": suite["--memguard guard_sample=100"] / suite["--memguard"],
        "pytest_tests": tests,
    }
    for heap in (plain, sampled, every):
        heap.close()
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"malloc+free of 64 bytes, median of {reps} interleaved repetitions of {pairs} pairs")
        for name, us in figures["us_per_pair"].items():
            print(f"  {name:<20} {us:8.2f} us")
        print(f"  guard_sample=1000 / heap pair: {figures['sample_1000_over_heap']:.3f} (goal <= {SAMPLE_TARGET})")
        print(f"  guard=\"all\" / raw ctypes:     {figures['all_over_raw']:.1f}")
        print(f"  guard=\"all\" memory per live 64-byte block: {rss:.0f} B resident, {vms:.0f} B virtual")
        print(f"pytest, {tests} tests, best of {repeat}:")
        for mode, t in suite.items():
            print(f"  {mode:<30} {t:7.3f} s")
        print(f"  guard_sample=100 / --memguard: {figures['pytest_guard_sample_100_over_memguard']:.3f}")
    if not args.quick and figures["sample_1000_over_heap"] > SAMPLE_TARGET:
        print("guard_sample=1000 over its goal", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
