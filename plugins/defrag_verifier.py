"""First-party plugin: verify every defragmentation pass of a block allocator, from the hooks alone.

At ``memguard_defrag_pass(phase="apply")`` (``end_pass()`` is about to carry out the
moves: the memory is as the caller left it) it checksums every live allocation of the
:class:`memguard.BlockAllocator` and notes whether its margin holds only poison (no-man's land, or a returned region); at
``phase="end"`` it checks:

* every allocation still live holds exactly the bytes it held (at its new place when it moved);
* every copied allocation is where its move said (``dst_offset``);
* no two live allocations (with their margins) overlap, and each one lies inside its page;
* a margin that held only poison before the pass still does after it;
* the statistics add up: ``bytes_moved`` and ``allocations_moved`` grew by the copies of
  the pass, and the allocator counts the allocations it lists.

Violations are ``defrag-verify`` findings, reported by ``memguard_check`` (the next
``heap.check()``, and so the end of the test under pytest).

Usage::

    from memguard_plugins import defrag_verifier
    heap = memguard.GuardedHeap(plugins=[defrag_verifier])

It is also declared in the ``memguard`` entry-point group under the name
``defrag_verifier``, so the process-wide heap loads it unless disabled by that name.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
import zlib
from typing import Any, Sequence

import memguard
from memguard import Allocation, Move, Report, hookimpl

__all__ = ["KIND", "memguard_defrag_pass", "memguard_check"]

#: The kind of every finding of this plugin.
KIND = "defrag-verify"
#: The bytes a margin may hold: MemPool's no-man's land, or a returned region still in its quarantine.
_POISON = b"\xfa\xdd"

memguard.register_kind(
    KIND, memguard.PoolError,
    description="a defragmentation pass lost or misplaced bytes, overlapped allocations or miscounted",
)

_lock = threading.Lock()
#: context -> (stats before, [(allocation, checksum, margin intact)]) between "apply" and "end".
_before: weakref.WeakKeyDictionary[Any, tuple[Any, list[tuple[Allocation, int, bool]]]] = weakref.WeakKeyDictionary()
#: allocator -> violations seen at "end", reported at the next check.
_pending: weakref.WeakKeyDictionary[Any, list[Report]] = weakref.WeakKeyDictionary()


def _margin_intact(a: Allocation, margin: int) -> bool:
    return margin == 0 or not ctypes.string_at(a.address + a.size, margin).translate(None, _POISON)


def _violation(context: Any, message: str, a: Allocation | None = None) -> Report:
    return Report(
        kind=KIND, address=a.address if a is not None and a.valid else 0, size=a.size if a is not None else 0,
        serial=a.serial if a is not None else 0, alloc_stack=a.alloc_stack if a is not None and a.valid else (),
        message=f"pass {context.pass_number} of the defragmentation of {context.allocator.name!r}: {message}",
        extra={"pool": context.allocator.name, "plugin": __name__, "pass": context.pass_number},
    )


def audit(context: Any, before: Any, snapshot: list[tuple[Allocation, int, bool]], moves: Sequence[Move]) -> list[Report]:
    """What is wrong after a pass of ``context`` (an empty list when nothing is)."""
    blocks = context.allocator
    margin = blocks.margin
    out: list[Report] = []
    for a, crc, intact in snapshot:
        if not a.valid:
            continue
        if zlib.crc32(a.view()) != crc:
            out.append(_violation(context, f"allocation #{a.serial} does not hold the bytes it held before the pass", a))
        if intact and not _margin_intact(a, margin):
            out.append(_violation(context, f"the margin after allocation #{a.serial} was overwritten by the pass", a))
    copies = [m for m in moves if m.op == "copy" and m.allocation.valid]
    for m in copies:
        if m.allocation.offset != m.dst_offset:
            out.append(_violation(
                context, f"allocation #{m.allocation.serial} is at offset {m.allocation.offset}, its move said "
                f"{m.dst_offset}", m.allocation,
            ))
    sizes = {p.index: p.size for p in blocks.pages()}
    live = blocks.allocations()
    previous: Allocation | None = None
    for a in live:
        if a.offset + a.size + margin > sizes.get(a.page, -1):
            out.append(_violation(context, f"allocation #{a.serial} does not lie inside page {a.page}", a))
        if previous is not None and previous.page == a.page and previous.offset + previous.size + margin > a.offset:
            out.append(_violation(context, f"allocations #{previous.serial} and #{a.serial} overlap", a))
        previous = a
    after = context.stats
    moved = sum(m.size for m in copies)
    if after.bytes_moved - before.bytes_moved != moved or after.allocations_moved - before.allocations_moved != len(copies):
        out.append(_violation(
            context, f"the statistics count {after.bytes_moved - before.bytes_moved} bytes in "
            f"{after.allocations_moved - before.allocations_moved} move(s), the pass copied {moved} in {len(copies)}",
        ))
    if blocks.stats().allocations != len(live):
        out.append(_violation(context, f"the allocator counts {blocks.stats().allocations} allocations, lists {len(live)}"))
    return out


@hookimpl
def memguard_defrag_pass(context: Any, phase: str, moves: Sequence[Move]) -> None:
    """Checksum the allocations before the moves are carried out; verify them after."""
    if phase == "apply":
        margin = context.allocator.margin
        snapshot = [(a, zlib.crc32(a.view()), _margin_intact(a, margin)) for a in context.allocator.allocations()]
        with _lock:
            _before[context] = (context.stats, snapshot)
    elif phase == "end":
        with _lock:
            taken = _before.pop(context, None)
        if taken is None:
            return
        reports = audit(context, taken[0], taken[1], moves)
        if reports:
            with _lock:
                _pending.setdefault(context.allocator, []).extend(reports)


@hookimpl
def memguard_check(heap: Any) -> list[Report]:
    """The violations seen since the last check in the block allocators of ``heap``."""
    reports: list[Report] = []
    with _lock:
        for blocks in list(_pending):
            if getattr(blocks, "heap", None) is heap:
                reports.extend(_pending.pop(blocks))
    return reports
