"""An instrumented fixed-size object pool: what the C original could not see.

Run: python examples/object_pool.py
"""

from __future__ import annotations

import memguard
from memguard_plugins import pool_invariants as invariants

heap = memguard.GuardedHeap(on_error="report", plugins=[invariants])
pool = memguard.ObjectPool(48, objects_per_chunk=64, heap=heap, name="nodes")

a, b = pool.get(), pool.get()
pool.view(a)[:5] = b"hello"
pool.put(a)
pool.put(a)  # double put
pool.put(b + 4)  # not an object

chunk, _ = pool.mempool.chunks()[0]
raw = heap.view(chunk)
raw[b - chunk + 48] = 0x41  # one byte past the end of b
pool.put(b)

c = pool.get()  # never put back
print(pool.stats())
for report in heap.check() + pool.destroy():
    print(report.headline())
print("kinds:", ", ".join(r.kind for r in heap.reports))
heap.close()
