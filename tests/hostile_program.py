"""A real exit report of a hostile program: its function and file names are markup.

The allocating function is compiled under the name ``<script>alert(1)</script>`` and the
file name ``"><img src=x onerror=alert(2)>.py``; the report has an overflow (with its
hexdump), leaks from three call sites, a block allocator and its heap maps.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable

import memguard
from memguard.options import Options
from memguard.reporting.exitreport import ExitReport, build_report

__all__ = ["EVIL_NAME", "EVIL_FILE", "hostile_report", "evil_function"]

EVIL_NAME = "<script>alert(1)</script>"
EVIL_FILE = '"><img src=x onerror=alert(2)>.py'


def evil_function(body: Callable[[], Any]) -> Callable[[], Any]:
    """``body`` called from a function whose code is named :data:`EVIL_NAME` in :data:`EVIL_FILE`."""
    ns: dict[str, Any] = {"body": body}
    exec(compile("def f():\n    return body()\n", EVIL_FILE, "exec"), ns)
    f = ns["f"]
    names = {"co_name": EVIL_NAME}
    if hasattr(f.__code__, "co_qualname"):  # Python 3.11+
        names["co_qualname"] = EVIL_NAME
    f.__code__ = f.__code__.replace(**names)
    return f  # type: ignore[no-any-return]


def leak_a(heap: memguard.GuardedHeap) -> int:
    return heap.malloc(40)


def leak_b(heap: memguard.GuardedHeap) -> int:
    return heap.malloc(5000)


def hostile_report(heap: memguard.GuardedHeap, report_format: str = "json") -> tuple[ExitReport, memguard.BlockAllocator]:
    """Fill ``heap`` (overflow, leaks, a fragmented block allocator) and build its exit report."""
    evil = evil_function(lambda: leak_a(heap))
    for _ in range(3):
        evil()
    leak_b(heap)
    p = heap.malloc(24)
    ctypes.memset(p, 0x41, 25)
    blocks = memguard.BlockAllocator(page_size=4096, heap=heap, name=EVIL_NAME)
    allocations = [blocks.allocate(64 + i % 50) for i in range(120)]
    for a in allocations[::2]:
        blocks.free(a)
    result = build_report(heap, Options(report_format=report_format), argv=["app.py", EVIL_NAME])
    return result, blocks
