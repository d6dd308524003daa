"""memguard in thirty lines: a buffer overflow, a use-after-free and a leak, found.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import ctypes

import memguard


def fill_name(heap: memguard.GuardedHeap, name: bytes) -> int:
    buf = heap.malloc(len(name))  # forgot the terminating NUL
    ctypes.memmove(buf, name + b"\0", len(name) + 1)  # writes one byte past the block
    return buf


def main() -> int:
    heap = memguard.GuardedHeap(on_error="report")
    before = heap.snapshot()
    name = fill_name(heap, b"memguard")
    heap.free(name)  # the overflow is found here, with the allocation stack

    for _ in range(3):
        heap.malloc(24)  # leaked: never freed

    stale = heap.malloc(32)
    heap.free(stale)
    ctypes.memset(stale, 0, 4)  # use after free: found by check()
    heap.check()

    for report in heap.reports:
        print(report)
    print(memguard.format_leaks(heap.leaks(since=before)))
    return 1 if heap.reports else 0


if __name__ == "__main__":
    raise SystemExit(main())
