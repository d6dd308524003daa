"""Walking a guarded heap: its regions and slots from a snapshot taken under the lock.

:meth:`GuardedHeap.walk <memguard.heap.guarded.GuardedHeap.walk>` copies what it needs
while it holds the heap's lock (the headers of every carved slot, the large blocks'
headers, the quarantine) into a :class:`WalkSnapshot`; :func:`iter_regions` turns it into
:class:`~memguard.heap.layout.HeapRegion` values after the lock is released, so the
caller's code never runs under the lock and never sees a heap half changed.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

from memguard.heap.layout import (
    ARENA_SIZE,
    HDR,
    HEADER_SIZE,
    LARGE_MARK,
    LIVE,
    QUARANTINED,
    Arena,
    HeapRegion,
    HeapSlot,
    SlotState,
    cached_struct,
    header_seal,
)

__all__ = ["ArenaCopy", "LargeCopy", "WalkSnapshot", "copy_arena", "iter_regions"]

_CORRUPT: SlotState = "corrupt"


class ArenaCopy(NamedTuple):
    """An arena as the walk saw it: where it is and its slots' headers."""

    base: int
    stride: int
    #: user address of slot 0
    user0: int
    #: the headers of the carved slots, one after the other (:data:`HDR` each)
    headers: bytes


class LargeCopy(NamedTuple):
    """A large block as the walk saw it."""

    #: the native allocation's address and size
    address: int
    total: int
    #: the user address, and its size as the heap's table records it
    user: int
    size: int
    #: offset of the header in the native allocation, and the header's fields
    hoff: int
    header: tuple[int, int, int, int, int, int]


class WalkSnapshot(NamedTuple):
    """Everything :func:`iter_regions` needs, copied under the heap's lock."""

    arenas: list[ArenaCopy]
    large: list[LargeCopy]
    #: the quarantine's entries (``address << 13 | size``)
    quarantine: list[int]
    #: the heap's seal key and geometry (header + front redzone, redzone)
    seal_key: int
    uoff: int
    redzone: int


def copy_arena(arena: Arena, carved: int) -> ArenaCopy:
    """The headers of an arena's ``carved`` bytes of slots (a few bytes per slot; call under the lock)."""
    stride = arena.stride
    heads = cached_struct(f"{HEADER_SIZE}s{stride - HEADER_SIZE}x").iter_unpack(arena.view[:carved])
    return ArenaCopy(arena.base, stride, arena.user0, b"".join([h for h, in heads]))


def iter_regions(snap: WalkSnapshot) -> Iterator[HeapRegion]:
    """The regions of a snapshot, by address: arenas with every carved slot, large blocks.

    A slot whose header is intact (its seal matches and its size fits) is ``"live"``,
    ``"quarantined"`` (freed, in the quarantine) or ``"free"`` (freed, out of the
    quarantine); any other is ``"corrupt"``, with size and serial 0.
    """
    seal_key, uoff, rz = snap.seal_key, snap.uoff, snap.redzone
    quarantined = {e >> 13 for e in snap.quarantine if e & LARGE_MARK != LARGE_MARK}
    regions: list[tuple[int, bool, ArenaCopy | LargeCopy]] = [(a.base, True, a) for a in snap.arenas]
    regions += [(b.address, False, b) for b in snap.large]
    regions.sort(key=lambda r: r[0])
    make = HeapSlot._make
    for _, is_arena, region in regions:
        if is_arena:
            assert isinstance(region, ArenaCopy)
            stride, user0 = region.stride, region.user0
            capacity = stride - uoff - rz
            rows: list[tuple[int, int, SlotState, int]] = []
            add = rows.append
            hoff = -stride
            for n, serial, asid, seal, state, fsid in HDR.iter_unpack(region.headers):
                hoff += stride
                p = user0 + hoff
                if seal == header_seal(seal_key, hoff, n, serial, asid, state, fsid) and n <= capacity:
                    if state == LIVE:
                        add((p, n, "live", serial))
                        continue
                    if state == QUARANTINED:
                        add((p, n, "quarantined" if p in quarantined else "free", serial))
                        continue
                add((p, 0, _CORRUPT, 0))
            yield HeapRegion("arena", region.base, ARENA_SIZE, stride, tuple(map(make, rows)))
        else:
            assert isinstance(region, LargeCopy)
            n, serial, asid, seal, state, fsid = region.header
            p = region.user
            if seal == header_seal(seal_key, region.hoff, n, serial, asid, state, fsid) and n == region.size and state in (LIVE, QUARANTINED):
                slot = HeapSlot(p, n, "live" if state == LIVE else "quarantined", serial)
            else:
                slot = HeapSlot(p, 0, _CORRUPT, 0)
            yield HeapRegion("large", region.address, region.total, region.total, (slot,))
