"""Per-test memory limits under pytest: their settings, the measurements, the saved baseline.

The decisions are pure functions of :mod:`memguard.reporting.limits`; this module
reads the limits from the ``memguard`` marker and the ini file, measures a test on the
process heap (a peak window per test, so a test's peak is its own), finds the sites
that allocated during a test that passed a limit, and loads the report that
``--memguard-fail-on-increase`` compares with.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import pytest

from memguard.reporting import verdicts as _v
from memguard.reporting.limits import Limits, Usage, parse_count

if TYPE_CHECKING:
    from memguard.heap.guarded import GuardedHeap
    from memguard.leaks import LeakGroup

__all__ = ["LIMIT_KEYS", "Meter", "load_baseline", "parse_limits", "allocation_sites"]

#: The ``memguard`` marker's limit arguments (and, prefixed ``memguard_``, the ini keys).
LIMIT_KEYS: tuple[str, ...] = ("max_peak", "max_allocations")
#: The largest saved report ``--memguard-fail-on-increase`` reads.
_MAX_BASELINE_BYTES = 256 << 20


def parse_limits(values: Mapping[str, Any], sources: Mapping[str, str], default: Limits = Limits()) -> Limits:
    """The limits in ``values`` (``max_peak``, ``max_allocations``) over ``default``.

    :param sources: for each key, how an error names where its value came from.
    :raises pytest.UsageError: a bad value, naming its source.
    """
    try:
        peak = default.max_peak
        if values.get("max_peak") is not None:
            peak = _v.parse_size(values["max_peak"], sources["max_peak"])
        allocations = default.max_allocations
        if values.get("max_allocations") is not None:
            allocations = parse_count(values["max_allocations"], sources["max_allocations"])
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    return Limits(peak, allocations)


@dataclass
class Meter:
    """A test's measurements on the process heap, from its start to the end of its teardown."""

    allocs0: int = 0
    live0: int = 0
    allocated0: int = 0
    started: float = 0.0

    def start(self, heap: GuardedHeap | None) -> None:
        """The test starts: note the counters and open a peak window."""
        self.started = time.perf_counter()
        if heap is not None and not heap.closed:
            heap.reset_peak()
            s = heap.stats()
            self.allocs0, self.live0, self.allocated0 = s.total_allocs, s.live_bytes, heap.allocated_bytes

    def stop(self, heap: GuardedHeap | None, own: list[Any]) -> Usage:
        """The test ended: what it allocated from the process heap and from its own heaps."""
        duration = time.perf_counter() - self.started
        allocations = allocated = peak = 0
        if heap is not None and not heap.closed:
            peak = max(heap.reset_peak() - self.live0, 0)
            allocations = heap.stats().total_allocs - self.allocs0
            allocated = heap.allocated_bytes - self.allocated0
        for obj in own:
            stats = getattr(obj, "stats", None)
            if stats is not None and not obj.closed:
                s = stats()
                allocations += s.total_allocs
                allocated += obj.allocated_bytes
                peak = max(peak, s.peak_bytes)
        return Usage(allocations, allocated, peak, duration)


def allocation_sites(heap: GuardedHeap | None, since: int) -> list[LeakGroup]:
    """The blocks allocated after serial ``since`` that memguard still knows (live, or freed
    and not yet reused), grouped by allocation stack, largest first."""
    from memguard.leaks import LeakGroup

    if heap is None or heap.closed:
        return []
    sites: dict[Any, list[int]] = {}
    for region in heap.walk():
        for slot in region.slots:
            if slot.serial <= since or slot.state == "corrupt":
                continue
            try:
                info = heap.block(slot.address)
            except Exception:  # noqa: BLE001 - a slot reused since the walk
                continue
            entry = sites.setdefault(info.alloc_stack, [0, 0])
            entry[0] += info.size
            entry[1] += 1
    groups = [LeakGroup(stack, size, count) for stack, (size, count) in sites.items()]
    groups.sort(key=lambda g: (-g.size, -g.count, str(g.stack[:1])))
    return groups


def load_baseline(path: str) -> dict[str, Mapping[str, Any]]:
    """The per-test records of a saved ``--memguard-report``, by node id.

    :raises pytest.UsageError: unreadable, not JSON, or not a memguard pytest report.
    """
    where = f"--memguard-fail-on-increase: {path}"
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_BASELINE_BYTES + 1)
    except OSError as exc:
        raise pytest.UsageError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    if len(raw) > _MAX_BASELINE_BYTES:
        raise pytest.UsageError(f"{where}: larger than {_MAX_BASELINE_BYTES >> 20} MiB")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise pytest.UsageError(f"{where}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != "memguard.pytest-report" or not isinstance(
        doc.get("tests"), list
    ):
        raise pytest.UsageError(f"{where}: not a memguard pytest report (written by --memguard-report)")
    return {str(t["nodeid"]): t for t in doc["tests"] if isinstance(t, dict) and "nodeid" in t}
