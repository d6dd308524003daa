"""Benchmark: the pytest plugin's cost on a generated suite of small tests.

Generates N tests (500 by default) that each allocate and free a few blocks through
the process-wide heap, runs the suite plainly, with ``--memguard`` and (when
pytest-memray is installed) with ``--memray``, and prints the best wall time of each
and the ratios.  ``--quick`` runs 100 tests, once each (a smoke test, no target).

    python benchmarks/bench_pytest.py [--quick] [--tests N] [--repeat R]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST = """
def test_{i}():
    blocks = [memguard.malloc({size}) for _ in range(3)]
    for p in blocks:
        memguard.free(p)
"""

TARGET = 1.15


def make_suite(directory: Path, n: int) -> None:
    """Write the generated suite into ``directory``."""
    body = "".join(TEST.format(i=i, size=16 + (i % 4) * 16) for i in range(n))
    (directory / "test_generated.py").write_text("import memguard\n" + body)
    (directory / "pytest.ini").write_text("[pytest]\n")


def run(directory: Path, *args: str) -> float:
    """Wall time of one pytest run (a fresh interpreter each time)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *args]
    env = {**os.environ, "MEMGUARD_OPTIONS": ""}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 tests, one run each, no target check")
    parser.add_argument("--tests", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n, repeat = (100, 1) if args.quick else (args.tests, args.repeat)
    modes: dict[str, tuple[str, ...]] = {"plain": (), "--memguard": ("--memguard",)}
    if importlib.util.find_spec("pytest_memray") is not None:
        modes["--memray"] = ("--memray",)
    with tempfile.TemporaryDirectory(prefix="memguard-bench-") as tmp:
        directory = Path(tmp)
        make_suite(directory, n)
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(repeat):  # interleaved, so load on the machine hits every mode alike
            for mode, extra in modes.items():
                times[mode].append(run(directory, *extra))
    best = {m: min(t) for m, t in times.items()}
    print(f"{n} tests, best of {repeat} run(s) each (wall time of the whole pytest process)")
    for mode, t in best.items():
        print(f"  {mode:<12} {t:7.3f} s   (all: {', '.join(f'{x:.3f}' for x in times[mode])})")
    ratio = best["--memguard"] / best["plain"]
    print(f"ratio --memguard / plain: {ratio:.3f} (target <= {TARGET})")
    if "--memray" in best:
        print(f"ratio --memray / plain:   {best['--memray'] / best['plain']:.3f}")
    else:
        print("pytest-memray is not installed: no --memray column")
    if not args.quick and ratio > TARGET:
        print("over target")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
