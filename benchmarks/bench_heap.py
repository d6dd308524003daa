"""Guarded heap benchmarks: ratios against raw ctypes calls to the same allocator.

Run: ``python benchmarks/bench_heap.py`` (``--quick`` for a smoke run, ``--json`` for the
figures as JSON).

Each timing is the median of interleaved repetitions (raw, guarded, raw, guarded, …) in
one process, so both sides see the same machine state.  Each line prints its goal next to
its result (issue 19 and the README's Benchmarks table):

* malloc+free pair of 64 bytes, steady state with a full quarantine: guarded/raw <= 4.0
* the same pair from a fresh process while the default 64 MiB quarantine fills: <= 4.0
* malloc, memset of the whole block, free over sizes 16..4096: guarded/raw <= 3.0
* the pair made by helpers under a 45-frame stack, 8 frames recorded: <= 6.0, and each
  frame walked costs < 0.15 us (from the depth-32 case)
* leaks() and snapshot() of 1,000,000 live blocks: <= 1 s each
* check() over a quarantine of 64-byte blocks: >= 0.5 GB/s of user bytes
* check() over a 256 MiB quarantine (1 MiB, 64 KiB blocks): >= 60% of memcmp's speed
* malloc+free of 8 MiB vs the native work it implies (memset 0xCD, memset 0xDD, memcmp):
  native speed (<= 1.2x)
* RSS of a full default quarantine of 64-byte blocks: tracks its 64 MiB budget (<= 1.5x)
* the per-test check (``check(since=mark)`` + ``leaks(since=mark)``) of a small test on a
  heap of 400,000 live blocks vs on an empty heap: grows with the test, not the heap (<= 2x)
* 1,000,000 live 16-byte blocks: memguard's bookkeeping <= 64 bytes per block
  (measured in fresh processes: RSS growth beyond the same native bytes held raw)

The machine these figures come from has 2 cores shared with other work: run it twice
and read the spread.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

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


_FILL_CHILD = r"""
import json, sys, time
import memguard
from memguard import native
pairs, chunk = int(sys.argv[1]), int(sys.argv[2])
m, f = native.raw_malloc, native.raw_free

def run():
    heap = memguard.GuardedHeap()  # the defaults: a 64 MiB quarantine, 8 frames per stack
    hm, hf = heap.malloc, heap.free
    raw = guarded = 0.0
    ratios = []
    for _ in range(pairs // chunk):
        t = time.perf_counter()
        for _ in range(chunk):
            f(m(64))
        r = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(chunk):
            hf(hm(64))
        g = time.perf_counter() - t
        raw, guarded = raw + r, guarded + g
        ratios.append(g / r)
    assert not heap.reports
    return {"ratio": guarded / raw, "raw_ns": raw / pairs * 1e9, "guarded_ns": guarded / pairs * 1e9,
            "worst_chunk_ratio": max(ratios), "quarantined_blocks": heap.stats().quarantined_blocks}

print(json.dumps(run()))
"""


def bench_fill(pairs: int, chunk: int) -> dict[str, float]:
    """The 64-byte pair from the first allocation of a fresh process, default heap (the
    quarantine fills: no block leaves it for the first ~500k pairs); raw and guarded
    alternate by chunks."""
    out = subprocess.run(
        [sys.executable, "-c", _FILL_CHILD, str(pairs), str(chunk)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def bench_records(count: int, repeat: int) -> dict[str, float]:
    """leaks() and snapshot() of ``count`` live blocks (sizes 16..64), best of ``repeat``."""
    heap = memguard.GuardedHeap()
    m = heap.malloc
    keep = [m(16 + (i & 3) * 16) for i in range(count)]
    best = {"leaks_s": float("inf"), "snapshot_s": float("inf"), "check_s": float("inf")}
    for _ in range(repeat):
        for key, fn in (("leaks_s", heap.leaks), ("snapshot_s", heap.snapshot), ("check_s", heap.check)):
            t = time.perf_counter()
            result = fn()
            best[key] = min(best[key], time.perf_counter() - t)
            del result
    assert len(heap.snapshot()) == count and not heap.reports
    for p in keep:
        heap.free(p)
    heap.close()
    return best


def bench_small_check(total_mb: int, repeat: int) -> dict[str, float]:
    """check() of a quarantine holding ``total_mb`` MiB of 64-byte blocks (user bytes)."""
    count = (total_mb << 20) // 64
    heap = memguard.GuardedHeap(quarantine_bytes=count * 128 + (1 << 20))
    for p in [heap.malloc(64) for _ in range(count)]:
        heap.free(p)
    assert heap.stats().quarantined_blocks == count
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        if heap.check():
            raise AssertionError("false positive")
        times.append(time.perf_counter() - t)
    heap.close()
    t = statistics.median(times)
    return {"blocks": count, "check_ms": t * 1e3, "GBps": count * 64 / t / 1e9}


def bench_large_pair(size: int, repeat: int) -> dict[str, float]:
    """malloc+free of ``size`` bytes vs the native work it implies: malloc, memset 0xCD,
    memset 0xDD, memcmp against 0xDD, free (the guarded free verifies at eviction)."""
    heap = memguard.GuardedHeap()
    m, f, ms, mc = native.raw_malloc, native.raw_free, native.memset, native.memcmp
    dd_addr, dd_view = native.owned_buffer(size)
    ms(dd_addr, 0xDD, size)
    hm, hf = heap.malloc, heap.free

    def raw() -> None:
        p = m(size)
        ms(p, 0xCD, size)
        ms(p, 0xDD, size)
        if mc(p, dd_addr, size):
            raise AssertionError("memset did not set")
        f(p)

    def guarded() -> None:
        hf(hm(size))

    for _ in range(12):  # the quarantine fills: every free then evicts one block
        guarded()
    t = interleaved({"raw": raw, "guarded": guarded}, repeat)
    assert not heap.reports
    heap.close()
    del dd_view
    return {"native_ms": t["raw"] * 1e3, "guarded_ms": t["guarded"] * 1e3, "ratio": t["guarded"] / t["raw"]}


_QRSS_CHILD = r"""
import gc, json, sys, psutil, memguard
proc = psutil.Process()
heap = memguard.GuardedHeap()  # default 64 MiB quarantine
gc.collect()
before = proc.memory_info().rss
m, f = heap.malloc, heap.free
budget = heap.quarantine_bytes
while heap.stats().quarantined_blocks * 64 < budget // 2 or heap.stats().total_frees == heap.stats().quarantined_blocks:
    for _ in range(10000):
        f(m(64))
s = heap.stats()
print(json.dumps({"rss_growth": proc.memory_info().rss - before, "budget": budget,
                  "quarantined_slot_bytes": s.quarantined_slot_bytes, "quarantined_blocks": s.quarantined_blocks}))
"""


def bench_quarantine_rss() -> dict[str, float]:
    """RSS growth of a fresh process whose default quarantine is full of 64-byte blocks."""
    out = subprocess.run([sys.executable, "-c", _QRSS_CHILD], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    r["rss_over_budget"] = r["rss_growth"] / r["budget"]
    return r  # type: ignore[no-any-return]


def in_child(case: str, *args: int) -> dict[str, float]:
    """Run ``case(*args)`` of this module in a fresh process (no other benchmark's leftovers)."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_heap; "
        f"print(json.dumps(bench_heap.{case}(*{args!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def bench_per_test(live: int, test_blocks: int, repeat: int) -> dict[str, float]:
    """The pytest plugin's per-test work (``mark()``, the test, ``check(since=mark)``,
    ``leaks(since=mark)``) for a test that allocates ``test_blocks`` blocks and frees all
    but one: on an empty heap and on one holding ``live`` live blocks."""

    def one(heap: memguard.GuardedHeap) -> float:
        gc.collect()  # (so that no full collection, whatever the heap's size, lands in the timing)
        mark = heap.mark()
        blocks = [heap.malloc(48) for _ in range(test_blocks)]
        for p in blocks[1:]:
            heap.free(p)
        t = time.perf_counter()
        heap.check(since=mark)
        groups = heap.leaks(since=mark)
        spent = time.perf_counter() - t
        assert sum(g.count for g in groups) == 1
        heap.free(blocks[0])
        return spent

    empty = memguard.GuardedHeap(quarantine_bytes=1 << 20)
    full = memguard.GuardedHeap(quarantine_bytes=1 << 20)
    keep = [full.malloc(16 + (i & 7) * 16) for i in range(live)]
    times_e: list[float] = []
    times_f: list[float] = []
    for _ in range(repeat):  # interleaved
        times_e.append(one(empty))
        times_f.append(one(full))
    e, f = statistics.median(times_e), statistics.median(times_f)
    for p in keep:
        full.free(p)
    empty.close()
    full.close()
    return {"empty_ms": e * 1e3, "full_ms": f * 1e3, "ratio": f / e}


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
    heap = memguard.GuardedHeap(quarantine_bytes=count * (block + 4096))  # (the budget counts slots)
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
        "fill_200k": bench_fill(20000 if quick else 200_000, 2000 if quick else 10000),
        "memset_16_4096": bench_memset(2000 if quick else 20000, 3 if quick else 9, q),
        "helper_pair_64": bench_helper_pair(2000 if quick else 20000, 3 if quick else 9, q),
        "deep_pair_depth_8": bench_deep_pair(2000 if quick else 20000, 3 if quick else 7, q, 45, 8),
        "deep_pair_depth_32": bench_deep_pair(2000 if quick else 20000, 3 if quick else 7, q, 45, 32),
        "records_1m": bench_records(20000 if quick else 1_000_000, 1 if quick else 3),
        "check_small_blocks": bench_small_check(1 if quick else 32, 3 if quick else 5),
        "check_quarantine": bench_check(8 if quick else 256, 1024, 3 if quick else 5),
        "large_pair_8m": bench_large_pair(8 << 20, 3 if quick else 15),
        "per_test_check": in_child("bench_per_test", 20000 if quick else 400_000, 1000, 3 if quick else 9),
        "rss_1m_blocks": bench_rss(20000 if quick else 1_000_000),
    }
    if not quick:
        results["fill_1m"] = bench_fill(1_000_000, 10000)
        results["check_quarantine_64k_blocks"] = bench_check(256, 64, 5)
        results["quarantine_rss"] = bench_quarantine_rss()
    d8, d32 = results["deep_pair_depth_8"], results["deep_pair_depth_32"]
    results["frame_walk_us"] = (d32["guarded_ns"] - d8["guarded_ns"]) / 24 / 1e3
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results, q)
    return 0


def print_table(results: dict[str, object], q: int) -> None:
    """The figures, each with its goal."""

    def line(what: str, result: str, goal: str, met: bool | None) -> None:
        verdict = "" if met is None else ("  met" if met else "  NOT MET")
        print(f"{what:<62} {result:<48} goal {goal}{verdict}")

    r: dict[str, Any] = results  # type: ignore[assignment]
    print(f"Python {r['python']}, quarantine {q >> 10} KiB for the steady-state loops")
    pr, ms, hp = r["pair_64"], r["memset_16_4096"], r["helper_pair_64"]
    line("malloc+free 64 B, full quarantine", f"{pr['ratio']:.2f}x ({pr['guarded_ns']:.0f} vs {pr['raw_ns']:.0f} ns)", "<= 4.0x", pr["ratio"] <= 4.0)
    for key, label in (("fill_200k", "first 200k pairs"), ("fill_1m", "first 1M pairs")):
        if key in r:
            fl = r[key]
            line(f"64 B pair, fresh process, default quarantine, {label}",
                 f"{fl['ratio']:.2f}x (worst chunk {fl['worst_chunk_ratio']:.2f}x)", "<= 4.0x", fl["ratio"] <= 4.0)
    line("malloc+memset+free, sizes 16..4096", f"{ms['ratio']:.2f}x ({ms['guarded_ns']:.0f} vs {ms['raw_ns']:.0f} ns)", "<= 3.0x", ms["ratio"] <= 3.0)
    line("pair via helpers (a new frame per call)", f"{hp['ratio']:.2f}x", "-", None)
    d8, d32 = r["deep_pair_depth_8"], r["deep_pair_depth_32"]
    line("pair, helpers under a 45-frame stack, stack_depth=8", f"{d8['ratio']:.2f}x ({d8['guarded_ns']:.0f} ns)", "<= 6.0x", d8["ratio"] <= 6.0)
    line("  the same, stack_depth=32", f"{d32['ratio']:.2f}x ({d32['guarded_ns']:.0f} ns)", "-", None)
    line("  cost per frame walked (depth 32 - depth 8) / 24", f"{r['frame_walk_us']:.3f} us", "< 0.15 us", r["frame_walk_us"] < 0.15)
    rec = r["records_1m"]
    line("leaks() of 1e6 live blocks", f"{rec['leaks_s']:.2f} s", "<= 1 s", rec["leaks_s"] <= 1)
    line("snapshot() of 1e6 live blocks", f"{rec['snapshot_s']:.2f} s", "<= 1 s", rec["snapshot_s"] <= 1)
    line("  check() of the same heap", f"{rec['check_s']:.2f} s", "-", None)
    sc = r["check_small_blocks"]
    line(f"check() of a quarantine of {sc['blocks']} 64 B blocks", f"{sc['GBps']:.2f} GB/s ({sc['check_ms']:.0f} ms)", ">= 0.5 GB/s", sc["GBps"] >= 0.5)
    for key, label in (("check_quarantine", "1 MiB"), ("check_quarantine_64k_blocks", "64 KiB")):
        if key in r:
            c = r[key]
            line(f"check() of a 256 MiB quarantine, {label} blocks",
                 f"{c['check_speed_vs_memcmp']:.0%} of memcmp ({c['check_GBps']:.1f} GB/s)", ">= 60%", c["check_speed_vs_memcmp"] >= 0.6)
    lp = r["large_pair_8m"]
    line("malloc+free 8 MiB vs memset+memset+memcmp", f"{lp['ratio']:.2f}x ({lp['guarded_ms']:.2f} vs {lp['native_ms']:.2f} ms)", "<= 1.2x", lp["ratio"] <= 1.2)
    if "quarantine_rss" in r:
        qr = r["quarantine_rss"]
        line("RSS of a full default quarantine of 64 B blocks",
             f"{qr['rss_growth'] / 2**20:.0f} MiB for {qr['budget'] / 2**20:.0f} MiB ({qr['rss_over_budget']:.2f}x)", "<= 1.5x", qr["rss_over_budget"] <= 1.5)
    pt = r["per_test_check"]
    line("per-test check, 400k live blocks vs empty heap", f"{pt['ratio']:.2f}x ({pt['full_ms']:.2f} vs {pt['empty_ms']:.2f} ms)", "<= 2x", pt["ratio"] <= 2)
    rs = r["rss_1m_blocks"]
    line("bookkeeping of 1e6 live 16 B blocks", f"{rs['bookkeeping_bytes_per_block']:.1f} B/block", "<= 64 B", rs["bookkeeping_bytes_per_block"] <= 64)


if __name__ == "__main__":
    sys.exit(main())
