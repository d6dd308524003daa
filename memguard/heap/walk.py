"""Walking a guarded heap: its regions and slots from a snapshot taken under the lock.

:meth:`GuardedHeap.walk <memguard.heap.guarded.GuardedHeap.walk>` copies what it needs
while it holds the heap's lock (the headers of every carved slot, the large blocks'
headers, the quarantine) into a :class:`WalkSnapshot`; :func:`iter_regions` turns it into
:class:`~memguard.heap.layout.HeapRegion` values after the lock is released, so the
caller's code never runs under the lock and never sees a heap half changed.
"""

from __future__ import annotations

from typing import Container, Iterable, Iterator, NamedTuple

from memguard.heapmaps import HeapMap, MapBlock, MapRow, fragmentation_of

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

__all__ = ["ArenaCopy", "LargeCopy", "WalkSnapshot", "copy_arena", "iter_regions", "heap_map"]

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


def heap_map(regions: Iterable[HeapRegion], uoff: int, title: str, leaked: Container[int] = ()) -> HeapMap:
    """The :class:`~memguard.heapmaps.HeapMap` of a walk: a row per arena size class, one for large blocks.

    The arenas of a size class are laid end to end in address order (each slot drawn over
    its user bytes, at its place in its arena); the large blocks likewise.  A live block
    whose address is in ``leaked`` is drawn ``"leaked"``.  Fragmentation counts, per
    arena, the runs of free slots and of space never handed out (a large block is never
    free space).
    """
    classes: dict[int, list[HeapRegion]] = {}
    large: list[HeapRegion] = []
    for region in regions:
        if region.kind == "arena":
            classes.setdefault(region.slot_size, []).append(region)
        else:
            large.append(region)
    rows: list[MapRow] = []
    free_runs: list[int] = []
    for stride in sorted(classes):
        arenas = classes[stride]
        blocks: list[MapBlock] = []
        add = blocks.append
        base_off = 0
        for region in arenas:
            base = region.address
            run = 0
            end = 0
            for p, n, state, serial in region.slots:
                start = p - uoff - base
                end = start + stride
                if state == "free":
                    run += stride
                else:
                    if run:
                        free_runs.append(run)
                        run = 0
                if state == "corrupt":
                    add(MapBlock(base_off + start, stride, "corrupt", address=p))
                elif state == "live" and p in leaked:
                    add(MapBlock(base_off + p - base, n or 1, "leaked", serial, address=p))
                else:
                    add(MapBlock(base_off + p - base, n or 1, state, serial, address=p))
            run += region.size - end
            if run:
                free_runs.append(run)
            base_off += region.size
        label = f"arenas of {stride}-byte slots ({len(arenas)} arena(s))"
        rows.append(MapRow(label, arenas[0].address if len(arenas) == 1 else 0, base_off, tuple(blocks)))
    if large:
        blocks = []
        off = 0
        for region in large:
            for p, n, state, serial in region.slots:
                if state == "corrupt":
                    blocks.append(MapBlock(off, region.size, "corrupt", address=p))
                else:
                    blocks.append(MapBlock(off + p - region.address, n or 1,
                                           "leaked" if state == "live" and p in leaked else state, serial, address=p))
            off += region.size
        rows.append(MapRow(f"large blocks ({len(large)})", large[0].address if len(large) == 1 else 0, off, tuple(blocks)))
    return HeapMap(title, tuple(rows), fragmentation_of(free_runs))
