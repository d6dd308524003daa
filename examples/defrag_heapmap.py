"""Fragment a block allocator, defragment it, and look at it: the before/after page and a heap map.

Run: python examples/defrag_heapmap.py [OUTPUT_DIR]   (default: the current directory)

Writes ``defrag.html`` (the maps before and after, side by side, with the bytes moved,
the pages freed and the fragmentation before and after), ``blocks.svg`` (the map after)
and ``blocks.json`` (the allocator's VMA-shaped dump).
"""

from __future__ import annotations

import json
import os
import random
import sys

import memguard

out = sys.argv[1] if len(sys.argv) > 1 else "."
rng = random.Random(17)

with memguard.BlockAllocator(page_size=1 << 16, name="textures") as blocks:
    live = [blocks.allocate(rng.choice((256, 1024, 4096, 700, 3000)), align=16) for _ in range(600)]
    rng.shuffle(live)
    for a in live[:420]:  # free 70% of them, at random: holes everywhere
        blocks.free(a)
    before = blocks.stats()
    stats = memguard.defrag_snapshot(blocks, os.path.join(out, "defrag.html"), algorithm="full")
    after = blocks.stats()
    memguard.heapmap(blocks, os.path.join(out, "blocks.svg"))
    with open(os.path.join(out, "blocks.json"), "w", encoding="utf-8") as f:
        json.dump(blocks.dump_stats(), f, indent=1)
    print(f"pages {before.pages} -> {after.pages}, fragmentation {before.fragmentation:.1%} -> {after.fragmentation:.1%}")
    print(f"moved {stats.bytes_moved} bytes in {stats.allocations_moved} allocations, freed {stats.pages_freed} pages")
    for a in blocks.allocations():
        blocks.free(a)
