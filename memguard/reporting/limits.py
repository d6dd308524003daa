"""Pure decisions about per-test memory limits (no pytest, no heap access).

The pytest plugin measures each checked test (allocations, bytes allocated, peak live
bytes above the test's start) and asks this module whether a limit was passed
(``max_peak``, ``max_allocations``), whether a measure grew since a saved run
(``--memguard-fail-on-increase``), and how the most allocating tests read
(``--memguard-top``).  The failure text has the shape pytest-memray's users know:
``Test was limited to 24.0MiB but peaked at 31.2MiB``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from memguard.leaks import LeakGroup
from memguard.stacks import format_stack

__all__ = [
    "Limits",
    "Usage",
    "format_size",
    "parse_count",
    "judge_limits",
    "judge_increase",
    "format_sites",
    "top_tests",
]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_size(n: int) -> str:
    """A byte count the way pytest-memray prints one: ``"24.0MiB"``, ``"512.0B"``."""
    value = float(n)
    for unit in _UNITS[:-1]:
        if abs(value) < 1024:
            return f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}{_UNITS[-1]}"


def parse_count(value: object, source: str) -> int:
    """A count of allocations: an int >= 0 (or its decimal text); :class:`ValueError` naming ``source``."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"{source}: expected a number of allocations (an int >= 0), got {value!r}")


@dataclass(frozen=True)
class Limits:
    """The limits one test is held to (``None``: no limit).

    :ivar max_peak: peak live bytes above the test's start.
    :ivar max_allocations: allocations made by the test (setup, call, teardown).
    """

    max_peak: int | None = None
    max_allocations: int | None = None


@dataclass(frozen=True)
class Usage:
    """What one test did with memory that went through memguard.

    :ivar allocations: blocks allocated.
    :ivar allocated_bytes: bytes allocated (freed or not).
    :ivar peak_bytes: the highest live bytes above those live when the test started.
    :ivar duration: seconds spent in setup, call and teardown.
    """

    allocations: int = 0
    allocated_bytes: int = 0
    peak_bytes: int = 0
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the per-test keys of the pytest report)."""
        return {
            "allocations": self.allocations,
            "allocated_bytes": self.allocated_bytes,
            "peak_bytes": self.peak_bytes,
            "duration": round(self.duration, 6),
        }


def judge_limits(limits: Limits, usage: Usage) -> list[str]:
    """One line per limit ``usage`` passed (empty when within every limit)."""
    reasons = []
    if limits.max_peak is not None and usage.peak_bytes > limits.max_peak:
        reasons.append(
            f"Test was limited to {format_size(limits.max_peak)} but peaked at {format_size(usage.peak_bytes)}"
        )
    if limits.max_allocations is not None and usage.allocations > limits.max_allocations:
        reasons.append(
            f"Test was limited to {limits.max_allocations} allocations but made {usage.allocations}"
        )
    return reasons


def judge_increase(previous: Mapping[str, Any] | None, usage: Usage, leaked_bytes: int, source: str) -> list[str]:
    """One line per measure (peak, leaked bytes) that grew since ``previous``, the test's
    record in the saved report ``source`` (nothing when the test was not in it)."""
    if previous is None:
        return []
    reasons = []
    for key, now, what in (("peak_bytes", usage.peak_bytes, "peak"), ("leaked_bytes", leaked_bytes, "leaked bytes")):
        before = previous.get(key)
        if isinstance(before, int) and not isinstance(before, bool) and now > before:
            reasons.append(f"{what} grew from {format_size(before)} to {format_size(now)} since {source}")
    return reasons


def format_sites(groups: Sequence[LeakGroup], top: int = 5) -> str:
    """The top allocating sites, pytest-memray's "List of allocations:" with memguard's stacks."""
    lines = ["List of allocations:"]
    for g in list(groups)[:top]:
        lines.append(f"    - {format_size(g.size)} in {g.count} block(s) allocated here:")
        lines.append(format_stack(g.stack, indent="        "))
    if len(lines) == 1:
        lines.append("    (no block allocated in the test is left to show)")
    return "\n".join(lines)


def top_tests(records: Iterable[Mapping[str, Any]], n: int) -> list[str]:
    """The lines of ``--memguard-top=N``: the ``n`` tests that allocated the most bytes."""
    ranked = sorted(
        (r for r in records if r.get("allocated_bytes")),
        key=lambda r: (-int(r["allocated_bytes"]), str(r.get("nodeid", ""))),
    )[:n]
    lines = [f"top {n} allocating tests (bytes allocated, allocations, peak):"]
    for r in ranked:
        count = int(r.get("allocations", 0))
        lines.append(
            f"  {format_size(int(r['allocated_bytes'])):>10} {count:>8} {'allocation' if count == 1 else 'allocations'}, "
            f"peak {format_size(int(r.get('peak_bytes', 0)))}: {r.get('nodeid', '')}"
        )
    if not ranked:
        lines.append("  (no test allocated through memguard)")
    return lines
