"""Benchmark: heap maps and the HTML exit report of big heaps (render time, file size).

For 10k, 100k and 1M live blocks (16 to 256 bytes, log-uniform, every tenth block freed
so the map has holes) on a guarded heap, and for a block allocator of as many
allocations (every third freed): the time of ``heap.heapmap()`` (a walk, then sub-pixel
aggregation, then the SVG), the SVG's size, and the time and size of the self-contained
HTML exit report (``report_format=html``: build, maps, page).

Run: ``python benchmarks/bench_heapmap.py`` (``--quick``: 10k and 100k only).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time

import memguard
from memguard.options import Options
from memguard.reporting.exitreport import build_report
from memguard.reporting.html import render_html


def heap_case(n: int) -> dict[str, object]:
    rng = random.Random(n)
    heap = memguard.GuardedHeap(name="bench", quarantine_bytes=1 << 16)
    try:
        ptrs = [heap.malloc(int(2 ** rng.uniform(4, 8))) for _ in range(n)]
        for p in ptrs[::10]:
            heap.free(p)
        t = time.perf_counter()
        svg = heap.heapmap()
        svg_s = time.perf_counter() - t
        t = time.perf_counter()
        result = build_report(heap, Options(report_format="html", leak_check=False))
        page = render_html(result)
        html_s = time.perf_counter() - t
        json_bytes = len(json.dumps([m.to_dict() for m in result.heap_maps]))
        return {"case": "guarded heap", "blocks": n, "svg_s": round(svg_s, 3), "svg_bytes": len(svg),
                "html_s": round(html_s, 3), "html_bytes": len(page), "json_maps_bytes": json_bytes}
    finally:
        heap.close(check=False)


def blocks_case(n: int) -> dict[str, object]:
    rng = random.Random(n)
    with memguard.BlockAllocator(page_size=1 << 20, heap=memguard.GuardedHeap(quarantine_bytes=1 << 16)) as blocks:
        allocs = [blocks.allocate(int(2 ** rng.uniform(4, 8))) for _ in range(n)]
        for a in allocs[::3]:
            blocks.free(a)
        t = time.perf_counter()
        svg = blocks.heapmap()
        svg_s = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            path = memguard.heapmap(blocks, os.path.join(d, "b.html"))
            html_s = time.perf_counter() - t
            html_bytes = os.path.getsize(path)
        for a in blocks.allocations():
            blocks.free(a)
        return {"case": "block allocator", "blocks": n - len(allocs[::3]), "svg_s": round(svg_s, 3),
                "svg_bytes": len(svg), "html_s": round(html_s, 3), "html_bytes": html_bytes, "json_maps_bytes": ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k blocks only")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
    rows = [case(n) for n in sizes for case in (heap_case, blocks_case)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    head = ("case", "blocks", "svg_s", "svg_bytes", "html_s", "html_bytes", "json_maps_bytes")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(r[k]) for k in head))


if __name__ == "__main__":
    main()
