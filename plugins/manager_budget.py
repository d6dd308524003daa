"""First-party plugin: verify the budget and counters of every memory manager, from the hooks alone.

At every ``memguard_manager_event`` (an allocation, a return, a collection …) it checks
the stats the manager hands the hook:

* ``allocated <= total_budget`` and ``available == total_budget - allocated``;
* ``peak_usage`` never decreases and is at least ``allocated``;
* every pool's ``available + allocated == chunk_count`` and ``chunk_count <= max_chunks``.

At every ``memguard_check`` (``heap.check()``, the end of each test under pytest) it also
checks, on one consistent ``manager.snapshot()``, that ``allocated`` equals the bytes of
the live allocations not taken from a pool plus every pool chunk (a sum over every live
allocation: done at check time so that an event costs no more than the number of pools).

Violations are reported as ``manager-budget`` findings by ``memguard_check``.

Usage::

    from memguard_plugins import manager_budget
    heap = memguard.GuardedHeap(plugins=[manager_budget])

It is also declared in the ``memguard`` entry-point group under the name
``manager_budget``, so the process-wide heap loads it unless disabled by that name.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Sequence

import memguard
from memguard import AllocationInfo, MemoryStats, Report, hookimpl

__all__ = ["KIND", "audit", "audit_sum", "memguard_manager_event", "memguard_check"]

#: The kind of every finding of this plugin.
KIND = "manager-budget"

memguard.register_kind(
    KIND, memguard.PoolError,
    description="a memory manager's counters contradict its budget, its pools or its live allocations",
)

_lock = threading.Lock()
#: manager -> violations seen at event time, reported at the next check.
_pending: weakref.WeakKeyDictionary[Any, list[Report]] = weakref.WeakKeyDictionary()
#: manager -> the highest peak_usage seen.
_peaks: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def audit(stats: MemoryStats, previous_peak: int = 0) -> list[str]:
    """What is wrong with one stats value (an empty list when nothing is)."""
    problems: list[str] = []
    if stats.allocated > stats.total_budget:
        problems.append(f"allocated ({stats.allocated}) > total_budget ({stats.total_budget})")
    if stats.available != stats.total_budget - stats.allocated:
        problems.append(f"available ({stats.available}) != total_budget - allocated")
    if stats.peak_usage < stats.allocated:
        problems.append(f"peak_usage ({stats.peak_usage}) < allocated ({stats.allocated})")
    if stats.peak_usage < previous_peak:
        problems.append(f"peak_usage decreased from {previous_peak} to {stats.peak_usage}")
    for pool in stats.pool_stats.values():
        if pool.available + pool.allocated != pool.chunk_count:
            problems.append(f"pool {pool.id!r}: available ({pool.available}) + allocated ({pool.allocated}) "
                            f"!= chunk_count ({pool.chunk_count})")
        if pool.chunk_count > pool.max_chunks:
            problems.append(f"pool {pool.id!r}: chunk_count ({pool.chunk_count}) > max_chunks ({pool.max_chunks})")
    return problems


def audit_sum(stats: MemoryStats, live: Sequence[AllocationInfo]) -> list[str]:
    """Whether ``allocated`` is the live allocations' bytes plus the pool chunks' (one snapshot)."""
    own = sum(a.size for a in live if a.pool is None)
    chunks = sum(p.chunk_count * p.chunk_size for p in stats.pool_stats.values())
    pooled = sum(1 for a in live if a.pool is not None)
    handed = sum(p.allocated for p in stats.pool_stats.values())
    problems = []
    if stats.allocated != own + chunks:
        problems.append(f"allocated ({stats.allocated}) != live allocations ({own}) + pool chunks ({chunks})")
    if stats.allocation_count != len(live):
        problems.append(f"allocation_count ({stats.allocation_count}) != live allocations ({len(live)})")
    if pooled != handed:
        problems.append(f"{pooled} live pooled allocation(s) but the pools count {handed} chunk(s) handed out")
    return problems


def _report(manager: Any, event: str, problems: list[str]) -> Report:
    return Report(kind=KIND, message=f"memory manager {manager.name!r} after {event}: " + "; ".join(problems),
                  extra={"manager": manager.name, "plugin": __name__, "event": event})


@hookimpl
def memguard_manager_event(manager: Any, event: str, allocation_id: str | None, stats: MemoryStats) -> None:
    """Check the stats after ``event``; keep any violation for the next check."""
    with _lock:
        previous = _peaks.get(manager, 0)
        _peaks[manager] = max(previous, stats.peak_usage)
        problems = audit(stats, previous)
        if problems:
            _pending.setdefault(manager, []).append(_report(manager, event, problems))


@hookimpl
def memguard_check(heap: Any) -> list[Report]:
    """The violations seen since the last check in the managers over ``heap``, and the sum of each."""
    reports: list[Report] = []
    with _lock:
        managers = [m for m in _peaks if getattr(m, "heap", None) is heap]
        for m in list(_pending):
            if getattr(m, "heap", None) is heap:
                reports.extend(_pending.pop(m))
    for m in managers:
        if m.closed:
            continue
        stats, live = m.snapshot()
        problems = audit_sum(stats, live)
        if problems:
            reports.append(_report(m, "check", problems))
    return reports
