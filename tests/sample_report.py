"""A real exit report for the tests of report loading: a finding, a leak and stacks."""

from __future__ import annotations

import json
from typing import Any

import memguard
from memguard.reporting.exitreport import build_report, render_json

__all__ = ["real_report"]


def real_report() -> dict[str, Any]:
    """A real exit report with a finding, a leak and a stack (as ``report_format=json`` writes it)."""
    heap = memguard.GuardedHeap(on_error="report")
    try:
        heap.malloc(24)
        p = heap.malloc(8)
        heap.free(p)
        heap.free(p)
        return json.loads(render_json(build_report(heap, memguard.Options())))
    finally:
        heap.close(check=False)
