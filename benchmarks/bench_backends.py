"""The guarded heap on each allocator backend, against the same backend raw.

Run: ``python benchmarks/bench_backends.py`` (``--quick`` for a smoke run).

For every backend that loads on this machine (``libc``, ``mimalloc``; ``jemalloc`` in a
child process started with the glibc tunable it needs), in one process per backend:

* the malloc+free pair of 64 bytes with a full quarantine, guarded / the backend raw;
* malloc, memset of the whole block, free over sizes 16..4096, guarded / the backend raw;
* the backend's raw pair against libc's raw pair, for context.

Each figure is the median of interleaved repetitions (raw, guarded, raw, …).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
from typing import Any

import memguard
from memguard import native
from memguard.errors import BackendUnavailableError

from bench_heap import interleaved

_TUNABLE = "glibc.rtld.optional_static_tls=16384"


def measure(name: str, quick: bool) -> dict[str, Any]:
    """The three figures of one backend, in this process."""
    backend = native.get_backend(name)
    libc = native.get_backend("libc")
    n, repeat = (2000, 3) if quick else (30000, 7)
    quarantine = 1 << 16 if quick else 4 << 20
    heap = memguard.GuardedHeap(redzone=16, stack_depth=8, quarantine_bytes=quarantine, backend=name)
    for p in [heap.malloc(64) for _ in range(quarantine // 64 + 16)]:
        heap.free(p)
    hm, hf = heap.malloc, heap.free
    bm, bf, lm, lf = backend.malloc, backend.free, libc.malloc, libc.free
    sizes = [16 + (i * 37) % 4081 for i in range(n)]
    memset = ctypes.memset

    def raw() -> None:
        for _ in range(n):
            bf(bm(64))

    def guarded() -> None:
        for _ in range(n):
            hf(hm(64))

    def raw_libc() -> None:
        for _ in range(n):
            lf(lm(64))

    def raw_memset() -> None:
        for s in sizes:
            p = bm(s)
            memset(p, 0x5A, s)
            bf(p)

    def guarded_memset() -> None:
        for s in sizes:
            p = hm(s)
            memset(p, 0x5A, s)
            hf(p)

    t = interleaved({"raw": raw, "guarded": guarded, "libc": raw_libc,
                     "raw_memset": raw_memset, "guarded_memset": guarded_memset}, repeat)
    assert not heap.reports
    heap.close()
    return {
        "backend": name,
        "raw_pair_ns": t["raw"] / n * 1e9,
        "pair_ratio": t["guarded"] / t["raw"],
        "memset_ratio": t["guarded_memset"] / t["raw_memset"],
        "raw_vs_libc": t["raw"] / t["libc"],
    }


def in_child(name: str, quick: bool) -> dict[str, Any] | str:
    """:func:`measure` in a new process with the glibc tunable jemalloc needs."""
    env = dict(os.environ)
    tunables = env.get("GLIBC_TUNABLES")
    env["GLIBC_TUNABLES"] = f"{tunables}:{_TUNABLE}" if tunables else _TUNABLE
    args = [sys.executable, __file__, "--child", name] + (["--quick"] if quick else [])
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    if out.returncode:
        return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit status {out.returncode}"
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.quick)))
        return 0
    results: dict[str, dict[str, Any] | str] = {}
    for name in ("libc", "mimalloc", "jemalloc"):
        try:
            results[name] = measure(name, args.quick)
        except BackendUnavailableError as exc:
            results[name] = in_child(name, args.quick) if name == "jemalloc" else str(exc).splitlines()[0]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"Python {sys.version.split()[0]}; guarded / the same backend raw; raw pair / libc's raw pair")
    for name, r in results.items():
        if isinstance(r, str):
            print(f"  {name:<9} not measured: {r}")
        else:
            print(f"  {name:<9} raw pair {r['raw_pair_ns']:5.0f} ns ({r['raw_vs_libc']:.2f}x libc)   "
                  f"pair {r['pair_ratio']:.2f}x   malloc+memset+free {r['memset_ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
