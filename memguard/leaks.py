"""Leak accounting: snapshots of live blocks, leak groups and per-site differences.

The shapes follow :mod:`tracemalloc` (``Snapshot``, ``statistics``, ``compare_to``,
``StatisticDiff``) and the wording follows LeakSanitizer ("Direct leak of 72 byte(s)
in 3 object(s) allocated from:").
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Iterable, NamedTuple, Protocol, Sequence

from memguard.report import Report
from memguard.stacks import Stack, format_stack

__all__ = ["BlockRecord", "LeakGroup", "Snapshot", "SiteDiff", "group_records", "format_leaks", "leaks_to_dict"]


class _StackSource(Protocol):
    def get(self, sid: int) -> Stack: ...


class BlockRecord(NamedTuple):
    """One live block in a snapshot (a named tuple: a heap makes a million of them cheaply)."""

    address: int
    size: int
    serial: int
    stack_id: int


def _fmt_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass(frozen=True)
class LeakGroup:
    """Blocks allocated from one stack: the shape of tracemalloc's ``Statistic``.

    :ivar stack: the allocation stack, most recent call first.
    :ivar size: total bytes in the group.
    :ivar count: number of blocks.
    :ivar addresses: the blocks' addresses, oldest first.
    """

    stack: Stack
    size: int
    count: int
    addresses: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"{self.size} byte(s) in {self.count} object(s) allocated from:\n{format_stack(self.stack)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "size": self.size,
            "count": self.count,
            "stack": [f.to_dict() for f in self.stack],
            "addresses": list(self.addresses),
        }

    def report(self) -> Report:
        """This group as a ``memory-leak`` :class:`Report`."""
        return Report(
            kind="memory-leak",
            address=self.addresses[0] if self.addresses else 0,
            size=self.size,
            alloc_stack=self.stack,
            count=self.count,
            message=f"{self.size} byte(s) leaked in {self.count} object(s)",
        )


@dataclass(frozen=True)
class SiteDiff:
    """Difference at one allocation site between two snapshots (tracemalloc's ``StatisticDiff``)."""

    stack: Stack
    size: int
    size_diff: int
    count: int
    count_diff: int

    def __str__(self) -> str:
        where = str(self.stack[0]).split(" in ")[0] if self.stack else "<unknown>"
        average = f", average={_fmt_size(self.size / self.count)}" if self.count else ""
        return (
            f"{where}: size={_fmt_size(self.size)} ({'+' if self.size_diff >= 0 else '-'}{_fmt_size(abs(self.size_diff))}), "
            f"count={self.count} ({self.count_diff:+d}){average}"
        )


# (by position: a BlockRecord or any tuple in its order)
_address_of, _size_of, _serial_of, _stack_of = (itemgetter(i) for i in range(4))


def group_records(records: Iterable[tuple[int, int, int, int]], stacks: _StackSource) -> list[LeakGroup]:
    """Group block records by allocation stack, largest total first.

    ``records`` are :class:`BlockRecord` values, or plain tuples in their order.
    """
    by_site: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
    for rec in records:
        by_site[rec[3]].append(rec)
    groups = []
    for sid, recs in by_site.items():
        recs.sort(key=_serial_of)
        groups.append(
            LeakGroup(
                stack=stacks.get(sid),
                size=sum(map(_size_of, recs)),
                count=len(recs),
                addresses=tuple(map(_address_of, recs)),
            )
        )
    groups.sort(key=lambda g: (-g.size, -g.count, str(g.stack[:1])))
    return groups


@dataclass(frozen=True)
class Snapshot:
    """An immutable picture of a heap's live blocks.

    :ivar serial: the heap's allocation count when the snapshot was taken; blocks with a
        larger serial were allocated after it.
    :ivar records: the live blocks, oldest first (empty for a :meth:`GuardedHeap.mark`).
    :ivar frees: the heap's free count when it was taken (-1 when unknown).
    """

    serial: int
    records: tuple[BlockRecord, ...]
    stacks: _StackSource = field(repr=False, compare=False)
    frees: int = -1

    @property
    def size(self) -> int:
        """Total live bytes."""
        return sum(r.size for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    def statistics(self) -> list[LeakGroup]:
        """Live blocks grouped by allocation stack, largest first."""
        return group_records(self.records, self.stacks)

    def compare_to(self, older: Snapshot) -> list[SiteDiff]:
        """Per-site differences from ``older`` to this snapshot, largest change first."""
        def totals(snap: Snapshot) -> dict[int, list[int]]:
            out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
            for r in snap.records:
                t = out[r.stack_id]
                t[0] += r.size
                t[1] += 1
            return out

        new, old = totals(self), totals(older)
        diffs = []
        for sid in set(new) | set(old):
            ns, nc = new.get(sid, (0, 0))
            os_, oc = old.get(sid, (0, 0))
            if ns == os_ and nc == oc:
                continue
            diffs.append(SiteDiff(self.stacks.get(sid), ns, ns - os_, nc, nc - oc))
        diffs.sort(key=lambda d: (-abs(d.size_diff), -d.size, str(d.stack[:1])))
        return diffs


def format_leaks(groups: Sequence[LeakGroup], tool: str = "memguard", pid: int | None = None) -> str:
    """LeakSanitizer-style text for ``groups``; empty string when there is nothing to say.

    ``pid`` is the process the leaks were found in (default: this one).
    """
    if not groups:
        return ""
    lines = ["=" * 65, f"=={os.getpid() if pid is None else pid}==ERROR: {tool}: detected memory leaks", ""]
    for g in groups:
        lines.append(f"Direct leak of {g.size} byte(s) in {g.count} object(s) allocated from:")
        lines.append(format_stack(g.stack))
        lines.append("")
    total = sum(g.size for g in groups)
    count = sum(g.count for g in groups)
    lines.append(f"SUMMARY: {tool}: {total} byte(s) leaked in {count} allocation(s).")
    return "\n".join(lines)


def leaks_to_dict(groups: Sequence[LeakGroup]) -> dict[str, Any]:
    """JSON-ready form of a leak report."""
    return {
        "groups": [g.to_dict() for g in groups],
        "total_bytes": sum(g.size for g in groups),
        "total_blocks": sum(g.count for g in groups),
    }
