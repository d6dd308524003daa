"""Leaks of fixtures wider than a test, charged to the teardown that tears them down.

A module- or session-scoped fixture set up during a checked test is not that test's:
its blocks are not charged to it.  :class:`FixtureWatch` notes the allocation serials
each such fixture's setup spanned (a wider fixture set up inside it excluded); when
pytest tears the fixture down (``pytest_fixture_post_finalizer``, during the teardown of
the last test that used it), the blocks of those spans still live are the fixture's
leaks.  The plugin reports them the way pytest reports a failing finalizer: as an error
in that test's teardown, so pytest's own count says ``1 error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memguard.leaks import LeakGroup
from memguard.reporting.retention import without_retained

if TYPE_CHECKING:
    from memguard.heap.guarded import GuardedHeap

__all__ = ["FixtureLeak", "FixtureWatch"]


@dataclass(frozen=True)
class FixtureLeak:
    """What a wide fixture left live when it was torn down.

    :ivar name: the fixture's name.
    :ivar scope: its scope (``module``, ``session``…).
    :ivar groups: its live blocks, grouped by allocation stack.
    """

    name: str
    scope: str
    groups: tuple[LeakGroup, ...]


class FixtureWatch:
    """The allocation spans of the wide fixtures set up during checked tests, until torn down."""

    def __init__(self) -> None:
        self._spans: dict[Any, list[tuple[int, int]]] = {}
        self._open: list[list[Any]] = []  # [fixturedef, serial its current span started at]

    def enter(self, fixturedef: Any, heap: GuardedHeap | None) -> None:
        """``fixturedef``'s setup starts (an outer fixture's span pauses)."""
        if heap is None or heap.closed:
            return
        now = heap.serial
        if self._open:
            outer = self._open[-1]
            self._spans[outer[0]].append((outer[1], now))
        self._open.append([fixturedef, now])
        self._spans[fixturedef] = []

    def leave(self, fixturedef: Any, heap: GuardedHeap | None) -> None:
        """``fixturedef``'s setup ended (an outer fixture's span resumes)."""
        if not self._open or self._open[-1][0] is not fixturedef:
            return
        _, start = self._open.pop()
        now = heap.serial if heap is not None and not heap.closed else start
        self._spans[fixturedef].append((start, now))
        if self._open:
            self._open[-1][1] = now

    def watching(self, fixturedef: Any) -> bool:
        """Whether ``fixturedef`` was set up during a checked test and not torn down since."""
        return fixturedef in self._spans

    def finish(self, fixturedef: Any, heap: GuardedHeap | None) -> FixtureLeak | None:
        """``fixturedef`` was torn down: its blocks still live (``None`` when nothing is)."""
        spans = [s for s in self._spans.pop(fixturedef, ()) if s[1] > s[0]]
        if not spans or heap is None or heap.closed:
            return None
        groups = []
        for group in without_retained(heap, heap.leaks(since=min(start for start, _ in spans))):
            infos = [heap.block(a) for a in group.addresses]
            mine = [b for b in infos if any(start < b.serial <= end for start, end in spans)]
            if mine:
                groups.append(LeakGroup(group.stack, sum(b.size for b in mine), len(mine),
                                        tuple(b.address for b in mine)))
        if not groups:
            return None
        return FixtureLeak(fixturedef.argname, fixturedef.scope, tuple(groups))
