"""NumPy on the guarded heap: the cost of one array, and NumPy's own test modules plain and guarded.

Run:  python benchmarks/bench_numpy.py [--quick] [--json] [--modules test_a,test_b] [--options K=V:...] [--no-suite]

1. ``np.empty(10)`` (an allocation and a free of 80 bytes) and ``np.empty(10**6)`` (8 MB:
   the heap fills it with 0xCD, poisons it with 0xDD when freed and verifies it when it
   leaves the quarantine), with NumPy's own handler and with ``memguard.numpy`` on a heap,
   in this process, interleaved; medians in microseconds and their ratio.  Goal for
   ``np.empty(10)``: <= 8 us.
2. NumPy's own tests: the nine ``numpy._core`` test modules below (``-m "not slow"``), run
   by pytest in a subprocess plain and again with ``--memguard-numpy``; for each run the
   tests, failures (failed or errors), memguard's findings (from ``--memguard-report``),
   the wall time and the children's CPU time, and the guarded/plain ratios.  Goal: the
   same failures, zero findings, CPU ratio <= 2.5.  ``--modules`` runs a subset (a loaded
   machine), ``--quick`` one small module (the test-suite's smoke run).

On a shared machine wall-clock time mostly measures the neighbours: the CPU-time ratio
is the figure to quote, with the command and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import memguard  # noqa: E402
import memguard.numpy  # noqa: E402

#: The nine numpy._core test modules of the suite run.
MODULES = [
    "test_multiarray", "test_numeric", "test_umath", "test_ufunc", "test_indexing",
    "test_dtype", "test_shape_base", "test_regression", "test_nditer",
]
QUICK_MODULES = ["test_indexerrors"]


# ----------------------------------------------------------------------------- one array
def _case(size: int, n: int) -> Callable[[], float]:
    empty = np.empty

    def run() -> float:
        t = time.perf_counter()
        for _ in range(n):
            empty(size)
        return (time.perf_counter() - t) / n * 1e6

    return run


def array_cost(reps: int, quick: bool) -> dict[str, Any]:
    """Median microseconds of ``np.empty(size)`` with NumPy's handler and with memguard's."""
    heap = memguard.GuardedHeap(quarantine_bytes=64 << 20)
    results: dict[str, Any] = {}
    for size, n in ((10, 2000 if quick else 20000), (10**6, 5 if quick else 50)):
        plain_times: list[float] = []
        guarded_times: list[float] = []
        run = _case(size, n)
        run()  # warm up
        for _ in range(reps):
            plain_times.append(run())
            with memguard.numpy.guarded(heap):
                guarded_times.append(run())
        plain, guarded = statistics.median(plain_times), statistics.median(guarded_times)
        results[f"empty_{size}"] = {"plain_us": plain, "guarded_us": guarded, "ratio": guarded / plain}
    heap.close()
    return results


# ----------------------------------------------------------------------------- numpy's tests
def _counts(xml: Path) -> tuple[int, int, int]:
    """(tests, failures, skipped) from a JUnit XML file."""
    tests = failures = skipped = 0
    for case in ET.parse(xml).getroot().iter("testcase"):
        tests += 1
        tags = {child.tag for child in case}
        failures += bool(tags & {"failure", "error"})
        skipped += "skipped" in tags
    return tests, failures, skipped


def _findings(report: Path) -> int:
    if not report.exists():
        return -1
    data = json.loads(report.read_text())
    session = data.get("session", {})
    return (sum(len(t.get("findings", ())) + len(t.get("leaks", ())) for t in data.get("tests", ()))
            + len(session.get("findings", ())) + len(session.get("leaks", ())))


def run_suite(modules: list[str], guarded: bool, work: Path, options: str = "") -> dict[str, Any]:
    """Run NumPy's test ``modules`` in a pytest subprocess; its counts and times."""
    tests_dir = Path(np.__file__).parent / "_core" / "tests"
    name = "guarded" if guarded else "plain"
    xml, report = work / f"{name}.xml", work / f"{name}.json"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", f"--junitxml={xml}"]
    if guarded:
        args += ["--memguard-numpy", f"--memguard-report={report}"]
        if options:
            args.append(f"--memguard-options={options}")
    args += [str(tests_dir / f"{m}.py") for m in modules]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMGUARD", "COVERAGE_", "COV_CORE"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=work)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tests, failures, skipped = _counts(xml) if xml.exists() else (0, 0, 0)
    return {
        "returncode": proc.returncode,
        "tests": tests,
        "failures": failures,
        "skipped": skipped,
        "findings": _findings(report) if guarded else 0,
        "wall_s": wall,
        "cpu_s": cpu,
        "tail": proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else proc.stderr.strip().splitlines()[-3:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short repetitions, one small test module")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--modules", default=None, help="comma-separated numpy._core test modules (default: the nine)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions of the array cost")
    parser.add_argument("--no-suite", action="store_true", help="only the cost of one array")
    parser.add_argument("--options", default="", help="heap options of the guarded run (--memguard-options)")
    args = parser.parse_args(argv)
    reps = args.reps or (3 if args.quick else 11)
    results: dict[str, Any] = {"load": os.getloadavg(), "cpus": os.cpu_count()}
    results.update(array_cost(reps, args.quick))
    if not args.no_suite:
        modules = args.modules.split(",") if args.modules else (QUICK_MODULES if args.quick else MODULES)
        with tempfile.TemporaryDirectory() as tmp:
            plain = run_suite(modules, False, Path(tmp))
            guarded = run_suite(modules, True, Path(tmp), args.options)
        results["suite"] = {
            "modules": modules,
            "options": args.options,
            "plain": plain,
            "guarded": guarded,
            "cpu_ratio": guarded["cpu_s"] / plain["cpu_s"] if plain["cpu_s"] else None,
            "wall_ratio": guarded["wall_s"] / plain["wall_s"] if plain["wall_s"] else None,
        }
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"machine: {results['cpus']} CPUs, load average {results['load'][0]:.1f} (shared: figures are noisy)")
    for key in ("empty_10", "empty_1000000"):
        r = results[key]
        print(f"np.{key.replace('_', '(', 1)}):  plain {r['plain_us']:.2f} us   guarded {r['guarded_us']:.2f} us"
              f"   ratio {r['ratio']:.1f}x")
    suite = results.get("suite")
    if suite:
        print(f"numpy._core tests ({', '.join(suite['modules'])}), -m 'not slow'"
              f"{', guarded with ' + suite['options'] if suite['options'] else ''}:")
        for name in ("plain", "guarded"):
            r = suite[name]
            print(f"  {name:8s} tests {r['tests']:6d}  failures {r['failures']:4d}  skipped {r['skipped']:5d}"
                  f"  findings {r['findings']:3d}  wall {r['wall_s']:8.1f} s  cpu {r['cpu_s']:8.1f} s")
        print(f"  ratio (guarded / plain): cpu {suite['cpu_ratio']:.2f}x  wall {suite['wall_ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
