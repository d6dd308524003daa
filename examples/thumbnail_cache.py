"""An image-thumbnail cache on a MemoryManager: a pool of thumbnails, full images under a budget, GC, defragmentation.

Run: python examples/thumbnail_cache.py [OUTPUT_DIR]   (writes ``thumbnails.svg`` there when given)

Full-size images are decoded into ``image_buffer`` allocations (short lifetime: the
collector frees the ones nobody looked at for a minute); their thumbnails come from a
``thumbnails`` pool of 64x64 RGBA chunks (LRU: the chunk reused is the one looked at
least recently).  The budget holds a handful of images: when a new one does not fit,
the manager collects the expired ones first.  At the end a deliberate bug, a write
through a view of an image the collector freed, is reported as ``pool-use-after-free``
naming ``garbage_collect()``.
"""

from __future__ import annotations

import os
import sys

import memguard

IMAGE = 256 * 256 * 4
THUMB = 64 * 64 * 4


class Clock:
    """Simulated seconds (a real cache passes nothing: ``time.monotonic``)."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


class ThumbnailCache:
    """Images by name, each with a thumbnail from the pool."""

    def __init__(self, mm: memguard.MemoryManager) -> None:
        self.mm = mm
        mm.create_pool("thumbnails", chunk_size=THUMB, initial_count=4, max_count=16, strategy="lru")
        self.images: dict[str, tuple[str, str]] = {}

    def add(self, name: str, shade: int) -> None:
        image_id, pixels = self.mm.allocate(IMAGE, type="image_buffer", lifetime="short")
        pixels[:] = bytes([shade]) * IMAGE
        thumb_id, thumb = self.mm.allocate_from_pool("thumbnails", type="thumbnail")
        thumb[:] = bytes(pixels[:: IMAGE // THUMB])  # a crude downscale: every 16th byte
        self.images[name] = (image_id, thumb_id)

    def thumbnail(self, name: str) -> bytes:
        return bytes(self.mm.access(self.images[name][1])[:4])

    def forget(self, name: str) -> None:
        image_id, thumb_id = self.images.pop(name)
        self.mm.return_to_pool("thumbnails", thumb_id)
        try:
            self.mm.deallocate(image_id)
        except memguard.AllocationNotFoundError:
            pass  # the collector already freed the full image


def main() -> None:
    clock = Clock()
    heap = memguard.GuardedHeap(on_error="report")
    mm = memguard.MemoryManager(total_budget=6 * IMAGE, heap=heap, clock=clock, name="thumbs",
                                page_size=1 << 20)
    cache = ThumbnailCache(mm)
    for i in range(12):  # twice what the budget holds: expired images are collected to make room
        clock.now += 20
        cache.add(f"photo{i}", shade=i)
        stats = mm.get_stats()
        assert stats.allocated <= stats.total_budget
    print(f"budget held: {stats.allocated} of {stats.total_budget} bytes allocated, peak {stats.peak_usage}, "
          f"{stats.allocation_count} allocations")
    print(f"thumbnail of photo11 starts {cache.thumbnail('photo11').hex()}")
    for i in range(0, 12, 2):
        cache.forget(f"photo{i}")
    before = mm.get_stats().fragmentation_ratio
    after = mm.defragment().fragmentation_ratio
    print(f"fragmentation {before:.1%} -> {after:.1%} after defragment(); ids still valid: "
          f"{cache.thumbnail('photo11').hex()}")
    if len(sys.argv) > 1:
        print("heap map:", memguard.heapmap(mm, os.path.join(sys.argv[1], "thumbnails.svg")))

    image_id, stale = mm.allocate(IMAGE, type="image_buffer", lifetime="short")
    clock.now += 61
    mm.garbage_collect()  # nobody looked at it for a minute: freed
    stale[0] = 255  # the bug: a view kept after the collector freed the image
    for report in heap.check():
        print(f"{report.kind}: {report.message}")
    for name in list(cache.images):
        cache.forget(name)
    mm.close()
    heap.close()


if __name__ == "__main__":
    main()
