"""Guarded heap benchmarks: ratios against raw ctypes calls to the same allocator.

Run: ``python benchmarks/bench_heap.py`` (``--quick`` for a smoke run).

Each timing is the median of interleaved repetitions (raw, guarded, raw, guarded, …) in
one process, so both sides see the same machine state.  Targets (the README's Benchmarks table):

* malloc+free pair of 64 bytes, steady state with a full quarantine: guarded/raw <= 4.0
* malloc, memset of the whole block, free over sizes 16..4096: guarded/raw <= 3.0
* the pair made by helpers under a 45-frame stack (a test suite's), 8 frames recorded: <= 6.0
* check() over a 256 MiB quarantine: >= 60% of libc memcmp's speed over the same bytes
* 1,000,000 live 16-byte blocks: memguard's bookkeeping <= 64 bytes per block
  (measured in fresh processes: RSS growth beyond the same native bytes held raw)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time
from typing import Callable

import memguard
from memguard import native


def interleaved(fns: dict[str, Callable[[], None]], repeat: int) -> dict[str, float]:
    """Median seconds of each function, run in interleaved order ``repeat`` times."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_pair(n: int, repeat: int, quarantine: int) -> dict[str, float]:
    heap = memguard.GuardedHeap(redzone=16, stack_depth=8, quarantine_bytes=quarantine)
    # Fill the quarantine so every free evicts (steady state).
    blocks = [heap.malloc(64) for _ in range(quarantine // 64 + 16)]
    for p in blocks:
        heap.free(p)
    m, f = native.raw_malloc, native.raw_free
    hm, hf = heap.malloc, heap.free

    def raw() -> None:
        for _ in range(n):
            f(m(64))

    def guarded() -> None:
        for _ in range(n):
            hf(hm(64))

    t = interleaved({"raw": raw, "guarded": guarded}, repeat)
    assert not heap.reports
    heap.close()
    return {"raw_ns": t["raw"] / n * 1e9, "guarded_ns": t["guarded"] / n * 1e9, "ratio": t["guarded"] / t["raw"]}


def bench_helper_pair(n: int, repeat: int, quarantine: int) -> dict[str, float]:
    """The pair made by helper functions called in a loop: a new frame per call, as in
    most programs (no target; the tight loop above reuses one frame)."""
    heap = memguard.GuardedHeap(redzone=16, stack_depth=8, quarantine_bytes=quarantine)
    for p in [heap.malloc(64) for _ in range(quarantine // 64 + 16)]:
        heap.free(p)
    m, f = native.raw_malloc, native.raw_free
    hm, hf = heap.malloc, heap.free

    def raw_alloc() -> int:
        return m(64)

    def raw_release(p: int) -> None:
        f(p)

    def alloc() -> int:
        return hm(64)

    def release(p: int) -> None:
        hf(p)

    def raw() -> None:
        for _ in range(n):
            raw_release(raw_alloc())

    def guarded() -> None:
        for _ in range(n):
            release(alloc())

    t = interleaved({"raw": raw, "guarded": guarded}, repeat)
    assert not heap.reports
    heap.close()
    return {"raw_ns": t["raw"] / n * 1e9, "guarded_ns": t["guarded"] / n * 1e9, "ratio": t["guarded"] / t["raw"]}


def bench_deep_pair(n: int, repeat: int, quarantine: int, stack: int, depth: int) -> dict[str, float]:
    """The pair made by helpers two levels deep under a ``stack``-frame Python stack (a test
    suite's depth), recording ``depth`` frames per stack: every capture walks ``depth`` frames."""
    heap = memguard.GuardedHeap(redzone=16, stack_depth=depth, quarantine_bytes=quarantine)
    for p in [heap.malloc(64) for _ in range(quarantine // 64 + 16)]:
        heap.free(p)
    m, f = native.raw_malloc, native.raw_free
    hm, hf = heap.malloc, heap.free

    def alloc() -> int:
        return hm(64)

    def release(p: int) -> None:
        hf(p)

    def outer_alloc() -> int:
        return alloc()

    def outer_release(p: int) -> None:
        release(p)

    def raw_alloc() -> int:
        return m(64)

    def raw_release(p: int) -> None:
        f(p)

    def raw_outer_alloc() -> int:
        return raw_alloc()

    def raw_outer_release(p: int) -> None:
        raw_release(p)

    def nested(levels: int, fn: Callable[[], None]) -> None:
        if levels:
            nested(levels - 1, fn)
        else:
            fn()

    def raw() -> None:
        for _ in range(n):
            raw_outer_release(raw_outer_alloc())

    def guarded() -> None:
        for _ in range(n):
            outer_release(outer_alloc())

    below = max(0, stack - len(_stack_of()) - 3)
    t = interleaved({"raw": lambda: nested(below, raw), "guarded": lambda: nested(below, guarded)}, repeat)
    assert not heap.reports
    heap.close()
    return {"raw_ns": t["raw"] / n * 1e9, "guarded_ns": t["guarded"] / n * 1e9, "ratio": t["guarded"] / t["raw"]}


def _stack_of() -> list[object]:
    """The caller's Python frames."""
    frames = []
    f = sys._getframe(1)
    while f is not None:
        frames.append(f)
        f = f.f_back
    return frames


def bench_memset(n: int, repeat: int, quarantine: int) -> dict[str, float]:
    heap = memguard.GuardedHeap(redzone=16, stack_depth=8, quarantine_bytes=quarantine)
    sizes = [16 + (i * 37) % 4081 for i in range(n)]
    for s in sizes * (1 + quarantine // max(1, sum(sizes))):
        heap.free(heap.malloc(s))
    m, f, ms = native.raw_malloc, native.raw_free, ctypes.memset
    hm, hf = heap.malloc, heap.free

    def raw() -> None:
        for s in sizes:
            p = m(s)
            ms(p, 0x5A, s)
            f(p)

    def guarded() -> None:
        for s in sizes:
            p = hm(s)
            ms(p, 0x5A, s)
            hf(p)

    t = interleaved({"raw": raw, "guarded": guarded}, repeat)
    assert not heap.reports
    heap.close()
    return {"raw_ns": t["raw"] / n * 1e9, "guarded_ns": t["guarded"] / n * 1e9, "ratio": t["guarded"] / t["raw"]}


def bench_check(total_mb: int, block_kb: int, repeat: int) -> dict[str, float]:
    block = block_kb << 10
    count = (total_mb << 20) // block
    heap = memguard.GuardedHeap(quarantine_bytes=(total_mb << 20) + block)
    blocks = [heap.malloc(block) for _ in range(count)]
    for p in blocks:
        heap.free(p)
    assert heap.stats().quarantined_bytes == count * block
    const_addr, const_view = native.owned_buffer(block)
    native.memset(const_addr, 0xDD, block)
    memcmp = native.memcmp

    def raw() -> None:
        for p in blocks:
            if memcmp(p, const_addr, block):
                raise AssertionError("poison differs")

    def guarded() -> None:
        if heap.check():
            raise AssertionError("false positive")

    t = interleaved({"memcmp": raw, "check": guarded}, repeat)
    heap.close()
    del const_view
    speed = t["memcmp"] / t["check"]
    return {
        "memcmp_ms": t["memcmp"] * 1e3,
        "check_ms": t["check"] * 1e3,
        "check_speed_vs_memcmp": speed,
        "check_GBps": (total_mb << 20) / t["check"] / 1e9,
    }


_RSS_CHILD = r"""
import gc, json, sys, psutil, memguard
from memguard import native
mode, count = sys.argv[1], int(sys.argv[2])
proc = psutil.Process()
GuardedHeap = memguard.GuardedHeap  # the facade imports lazily: load the heap's modules before measuring
gc.collect()
keep = [0] * count          # the address list costs the same on every side
before = proc.memory_info().rss
if mode == "guarded":
    heap = GuardedHeap(redzone=16, stack_depth=8)
    m = heap.malloc
    for i in range(count):
        keep[i] = m(16)
else:
    size = int(mode)
    m = native.raw_malloc
    for i in range(count):
        keep[i] = m(size)
gc.collect()
print(json.dumps({"rss_growth": proc.memory_info().rss - before}))
"""


def bench_rss(count: int) -> dict[str, float]:
    heap = memguard.GuardedHeap(redzone=16)
    p = heap.malloc(16)
    slot = heap._arenas[p >> 18][2]  # the native bytes one guarded 16-byte block occupies
    heap.close(check=False)

    def run(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, mode, str(count)], capture_output=True, text=True, check=True
        )
        return int(json.loads(out.stdout)["rss_growth"])

    guarded = run("guarded")
    raw_same_native = run(str(slot - 16))  # malloc(64): a 80-byte chunk, as the slot
    raw_user = run("16")
    return {
        "slot_bytes": slot,
        "guarded_bytes_per_block": guarded / count,
        "raw_same_native_bytes_per_block": raw_same_native / count,
        "raw_16_bytes_per_block": raw_user / count,
        "bookkeeping_bytes_per_block": (guarded - raw_same_native) / count,
        "overhead_vs_raw_16_per_block": (guarded - raw_user) / count,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--quarantine-mb", type=float, default=4.0, help="quarantine for the pair/memset loops")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    quick = args.quick
    q = int(args.quarantine_mb * (1 << 20)) if not quick else 1 << 16
    results = {
        "python": sys.version.split()[0],
        "pair_64": bench_pair(2000 if quick else 50000, 3 if quick else 9, q),
        "memset_16_4096": bench_memset(2000 if quick else 20000, 3 if quick else 9, q),
        "helper_pair_64": bench_helper_pair(2000 if quick else 20000, 3 if quick else 9, q),
        "deep_pair_depth_8": bench_deep_pair(2000 if quick else 20000, 3 if quick else 7, q, 45, 8),
        "deep_pair_depth_32": bench_deep_pair(2000 if quick else 20000, 3 if quick else 7, q, 45, 32),
        "check_quarantine": bench_check(8 if quick else 256, 1024, 3 if quick else 5),
        "rss_1m_blocks": bench_rss(20000 if quick else 1_000_000),
    }
    if not quick:
        results["check_quarantine_64k_blocks"] = bench_check(256, 64, 5)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"Python {results['python']}, quarantine {q >> 10} KiB for the loops")
        pr, ms = results["pair_64"], results["memset_16_4096"]
        print(f"malloc+free 64 B     raw {pr['raw_ns']:7.0f} ns  guarded {pr['guarded_ns']:7.0f} ns  ratio {pr['ratio']:.2f}  (target <= 4.0)")
        print(f"malloc+memset+free   raw {ms['raw_ns']:7.0f} ns  guarded {ms['guarded_ns']:7.0f} ns  ratio {ms['ratio']:.2f}  (target <= 3.0)")
        hp = results["helper_pair_64"]
        print(f"pair via helpers     raw {hp['raw_ns']:7.0f} ns  guarded {hp['guarded_ns']:7.0f} ns  ratio {hp['ratio']:.2f}  (a new frame per call; no target)")
        for key, goal in (("deep_pair_depth_8", "goal <= 6"), ("deep_pair_depth_32", "no goal")):
            d = results[key]
            print(f"pair, helpers under a 45-frame stack, stack_depth={key.rsplit('_', 1)[1]:<2}  raw {d['raw_ns']:5.0f} ns  "
                  f"guarded {d['guarded_ns']:6.0f} ns  ratio {d['ratio']:.2f}  ({goal})")
        for key in ("check_quarantine", "check_quarantine_64k_blocks"):
            if key in results:
                c = results[key]
                label = "1 MiB" if key == "check_quarantine" else "64 KiB"
                print(
                    f"check() quarantine, {label} blocks: memcmp {c['memcmp_ms']:.1f} ms  check {c['check_ms']:.1f} ms  "
                    f"speed {c['check_speed_vs_memcmp']:.0%} of memcmp ({c['check_GBps']:.1f} GB/s)  (target >= 60%)"
                )
        r = results["rss_1m_blocks"]
        print(
            f"live 16-byte blocks: guarded {r['guarded_bytes_per_block']:.1f} B/block, raw malloc({r['slot_bytes'] - 16}) "
            f"{r['raw_same_native_bytes_per_block']:.1f}, raw malloc(16) {r['raw_16_bytes_per_block']:.1f} -> "
            f"bookkeeping {r['bookkeeping_bytes_per_block']:.1f} B/block (target <= 64), "
            f"all-in overhead vs malloc(16) {r['overhead_vs_raw_16_per_block']:.1f} B/block"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
