"""Benchmark: cffi's ``ffi.new`` and ctypes' ``create_string_buffer`` on the guarded heap.

Cases (each timed in interleaved repetitions; the median per pair is printed):

* ``ffi.new``: ``ffi.new("char[64]")`` and dropping it (cffi's own allocator, the baseline);
* ``guarded new``: the same through ``memguard.cffi.allocator(ffi, heap)``: cffi calls the
  heap's C-callable ``malloc`` and ``free`` (through the trampolines when memguard has them);
* ``heap pair``: ``heap.malloc(64)`` + ``free`` (what the guarded new costs at least);
* ``create_string_buffer``: ``ctypes.create_string_buffer(64)`` and dropping it;
* ``guarded buffer``: ``memguard.create_string_buffer(64, heap=heap)`` and dropping it.

Run: ``python benchmarks/bench_cffi.py`` (``--quick`` for a smoke run; needs cffi).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import memguard  # noqa: E402
import memguard.cffi  # noqa: E402
from pairs import arguments, heap_case, interleaved_medians, pair_case, print_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    _, pairs, reps = arguments(__doc__.splitlines()[0], 5000, argv)
    import cffi

    ffi = cffi.FFI()
    heap = memguard.GuardedHeap(quarantine_bytes=1 << 16)
    new = memguard.cffi.allocator(ffi, heap)
    kind = ffi.typeof("char[64]")
    cases = {
        "ffi.new": pair_case(ffi.new, lambda p: None, kind),
        "guarded new": pair_case(new, lambda p: None, kind),
        "heap pair": heap_case(64),
        "create_string_buffer": pair_case(ctypes.create_string_buffer, lambda p: None, 64),
        "guarded buffer": pair_case(lambda n: memguard.create_string_buffer(n, heap=heap), lambda p: None, 64),
    }
    medians, _ = interleaved_medians(cases, pairs, reps)
    assert heap.check() == [] and heap.reports == [] and heap.leaks() == [], "findings in a clean run"
    print(f"Python {sys.version.split()[0]}, {reps} interleaved repetitions of {pairs} pairs, medians")
    print_table("cffi:", {k: medians[k] for k in ("ffi.new", "guarded new", "heap pair")}, base="ffi.new")
    print_table("ctypes:", {k: medians[k] for k in ("create_string_buffer", "guarded buffer")}, base="create_string_buffer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
