"""First-party plugin: verify the budget of every buffer pool at every event, from the hooks alone.

At every ``memguard_bufpool_event`` (an allocation, a release, a close) it checks the
snapshot the pool hands the hook:

* ``used_bytes <= max_memory`` (the budget is never exceeded) and ``peak_bytes >= used_bytes``;
* ``used_bytes`` equals the sum of the live allocations' bytes;
* ``active_allocations`` equals the number of live allocations;
* every live allocation holds ``length * buffer_size`` bytes.

Violations are reported as ``bufpool-budget`` findings by ``memguard_check`` (the next
``heap.check()``, and so the end of the test under pytest).

Usage::

    from memguard_plugins import bufpool_budget
    heap = memguard.GuardedHeap(plugins=[bufpool_budget])

It is also declared in the ``memguard`` entry-point group under the name
``bufpool_budget``, so the process-wide heap loads it unless disabled by that name.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Sequence

import memguard
from memguard import BufAllocationInfo, BufPoolStats, Report, hookimpl

__all__ = ["KIND", "audit", "memguard_bufpool_event", "memguard_check"]

#: The kind of every finding of this plugin.
KIND = "bufpool-budget"

memguard.register_kind(
    KIND, memguard.PoolError,
    description="a buffer pool's counters contradict its budget or its live allocations",
)

_lock = threading.Lock()
#: pool -> violations seen at event time, reported at the next check.
_pending: weakref.WeakKeyDictionary[Any, list[Report]] = weakref.WeakKeyDictionary()


def audit(stats: BufPoolStats, live: Sequence[BufAllocationInfo]) -> list[str]:
    """What is wrong with one snapshot of a pool (an empty list when nothing is)."""
    problems: list[str] = []
    if stats.used_bytes > stats.max_memory:
        problems.append(f"used_bytes ({stats.used_bytes}) > max_memory ({stats.max_memory})")
    if stats.peak_bytes < stats.used_bytes:
        problems.append(f"peak_bytes ({stats.peak_bytes}) < used_bytes ({stats.used_bytes})")
    total = sum(a.nbytes for a in live)
    if stats.used_bytes != total:
        problems.append(f"used_bytes ({stats.used_bytes}) != the live allocations' bytes ({total})")
    if stats.active_allocations != len(live):
        problems.append(f"active_allocations ({stats.active_allocations}) != live allocations ({len(live)})")
    for a in live:
        if a.nbytes != a.length * stats.buffer_size:
            problems.append(f"allocation #{a.serial} holds {a.nbytes} bytes for {a.length} x {stats.buffer_size}")
    return problems


@hookimpl
def memguard_bufpool_event(
    pool: Any, event: str, allocation: BufAllocationInfo | None, stats: BufPoolStats, live: Sequence[BufAllocationInfo],
) -> None:
    """Check the snapshot after ``event``; keep any violation for the next check."""
    problems = audit(stats, live)
    if not problems:
        return
    report = Report(
        kind=KIND,
        address=allocation.address if allocation is not None else 0,
        size=allocation.nbytes if allocation is not None else 0,
        alloc_stack=allocation.alloc_stack if allocation is not None else (),
        message=f"pool {pool.name!r} after {event}: " + "; ".join(problems),
        extra={"pool": pool.name, "plugin": __name__, "event": event},
    )
    with _lock:
        _pending.setdefault(pool, []).append(report)


@hookimpl
def memguard_check(heap: Any) -> list[Report]:
    """The violations seen since the last check in the pools of ``heap``."""
    reports: list[Report] = []
    with _lock:
        for pool in list(_pending):
            if getattr(pool, "heap", None) is heap:
                reports.extend(_pending.pop(pool))
    return reports
