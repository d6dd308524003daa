"""Verifying the guarded heap's blocks and writing its reports.

:class:`BlockVerifier` is the part of :class:`~memguard.heap.guarded.GuardedHeap` that
reads a block and says what is wrong with it: whether its header is intact (the seal),
its redzones (live blocks) or its poison (freed blocks), and the
:class:`~memguard.report.Report` of each finding, in AddressSanitizer's words.  A
damaged canary or poison is restored once reported, so each corruption is reported once.

Every method here runs under the heap's lock, on a block found through the heap's own
tables (never at an address it was merely given).
"""

from __future__ import annotations

import dataclasses
from types import FrameType
from math import gcd
from typing import Any

from memguard import native
from memguard.findings import bad_span, memory_window, thread_label
from memguard.heap.canary import MAX_PAD, Canaries
from memguard.heap.layout import (
    SLOT_LANES,
    ARENA_SHIFT,
    ARENA_SIZE,
    FILL_FREED,
    FREED_FILLS,
    HDR,
    HEADER_SIZE,
    LIVE,
    NEVER,
    POISON_CHUNK,
    QUARANTINED,
    RETIRED,
    SMALL_MAX,
    STATE,
    STATE_NAMES,
    STATE_OFFSET,
    Arena,
    Header,
    LargeBlock,
    cached_struct,
    freed_fill,
    header_seal,
    poison_address,
    read_header,
    round16,
)
from memguard.report import Report
from memguard.stacks import StackTable

__all__ = ["BlockVerifier"]

_lane_masks: tuple[int, int] | None = None
#: The low byte of a live and of a freed header's state, and a table marking the live ones 1.
_LIVE_LOW = bytes([LIVE & 0xFF])
_FREED_LOW = bytes([QUARANTINED & 0xFF])
_LIVE_MARKS = bytes(1 if b == LIVE & 0xFF else 0 for b in range(256))
#: The top bit of a 64-bit lane.
_TOP = 1 << 63


def _lanes(count: int) -> tuple[int, int]:
    """``(ones, ramp)`` over ``count`` 64-bit lanes: 1 in every lane, and each lane's index."""
    global _lane_masks
    if _lane_masks is None:
        _lane_masks = (
            int.from_bytes((b"\x01" + bytes(7)) * SLOT_LANES, "little"),
            int.from_bytes(b"".join(i.to_bytes(8, "little") for i in range(SLOT_LANES)), "little"),
        )
    mask = (1 << (count << 6)) - 1
    return _lane_masks[0] & mask, _lane_masks[1] & mask


class BlockVerifier:
    """Mixin of the guarded heap: block verification and finding reports.

    Headers are passed around as :class:`~memguard.heap.layout.Header` values (or any
    6-tuple in the same order).
    """

    redzone: int
    _uoff: int
    _seal_key: int
    _canaries: Canaries
    _front: list[bytes]
    _rear: list[bytes]
    _tails: list[bytes]
    _stacks: StackTable
    _arenas: dict[int, Arena] | Any
    _large: dict[int, LargeBlock] | Any
    #: slot stride -> the image of an arena of freed slots and its slots' keys (see _freed_image)
    _images: dict[int, tuple[memoryview, int, int, int, int, int]]

    def _carved(self, base: int) -> int:  # pragma: no cover - defined by the heap
        raise NotImplementedError

    def _containing(self, p: int) -> tuple[memoryview, int, int] | None:  # pragma: no cover - defined by the heap
        raise NotImplementedError

    # ------------------------------------------------------------------ headers and patterns
    def _slot_capacity(self, p: int) -> int:
        """User bytes a slot of ``p``'s arena holds (0 when ``p`` is in no arena)."""
        arena = self._arenas.get(p >> ARENA_SHIFT)
        return arena.stride - self._uoff - self.redzone if arena is not None else 0

    def _key16(self, p: int) -> int:
        """The canary key of the block at ``p`` (arena blocks: from the block's offset)."""
        arena = self._arenas.get(p >> ARENA_SHIFT)
        if arena is not None:
            return (p - arena.base - self._uoff) & 0xFF0
        return self._canaries.key16(p)

    def _expected(self, p: int, n: int) -> tuple[bytes, bytes]:
        """``(front, rear)`` redzone bytes of the ``n``-byte block at ``p``."""
        k = self._key16(p)
        return self._front[k], self._rear[k | (-n & MAX_PAD)]

    def _seal_ok(self, p: int, hdr: tuple[int, ...], hoff: int) -> bool:
        """Whether a header is intact: the seal matches and the size fits the slot."""
        n, serial, asid, seal, state, fsid = hdr
        if seal != header_seal(self._seal_key, hoff, n, serial, asid, state, fsid) or state not in STATE_NAMES:
            return False
        large = self._large.get(p)
        if large is not None:
            return large.size == n
        return n <= self._slot_capacity(p)

    # ------------------------------------------------------------------ redzones and poison
    def _diff(
        self, kind: str, view: memoryview, hoff: int, p: int, hdr: Header,
        start: int, expected: bytes, repair: bool,
    ) -> list[Report]:
        """Compare the block's bytes at user offset ``start`` with ``expected``; report a mismatch.

        The report covers the run from the first to the last bad byte, and the bytes are
        restored afterwards when ``repair`` is set, so each corruption is reported once.
        """
        u = hoff + self._uoff
        found = bytes(view[u + start : u + start + len(expected)])
        if found == expected:
            return []
        first, last = bad_span(found, expected) or (0, -1)
        report = self._corruption_report(
            kind, view, hoff, p, hdr, start + first, last - first + 1, expected[first : last + 1], found[first : last + 1]
        )
        if repair:
            view[u + start : u + start + len(expected)] = expected
        return [report]

    def _verify_redzones(self, view: memoryview, hoff: int, p: int, hdr: Header, repair: bool) -> list[Report]:
        """Front and rear redzones of a live block."""
        n = hdr.size
        front, rear = self._expected(p, n)
        return self._diff("heap-buffer-underflow", view, hoff, p, hdr, -self.redzone, front, repair) + self._after_block(
            view, hoff, p, hdr, repair
        )

    def _after_block(self, view: memoryview, hoff: int, p: int, hdr: Header, repair: bool) -> list[Report]:
        """The bytes after a block: its rear redzone (live) or its tail redzone (freed).

        A run of bad bytes that reaches the end of the block's arena slot, when the next
        slot's header is damaged too, is one write that went on into that header: it is
        reported here, on this block, and the next header is retired (never reported
        again, never trusted).
        """
        n = hdr.size
        k = self._key16(p)
        if hdr.state == LIVE:
            reports = self._diff("heap-buffer-overflow", view, hoff, p, hdr, n, self._rear[k | (-n & MAX_PAD)], repair)
        else:
            span = round16(n)
            reports = self._diff("heap-use-after-free", view, hoff, p, hdr, span, self._tails[k | (-n & MAX_PAD)], repair)
        arena = self._arenas.get(p >> ARENA_SHIFT)
        if not reports or arena is None:
            return reports
        report = reports[0]
        stride = arena.stride
        nhoff = hoff + stride
        if report.offset + report.count != stride - self._uoff or nhoff + stride > self._carved(arena.base):
            return reports
        nhdr = read_header(view, nhoff)
        if nhdr.state in (RETIRED, NEVER) or self._seal_ok(p + stride, nhdr, nhoff):
            return reports
        STATE.pack_into(view, nhoff + STATE_OFFSET, RETIRED)
        message = f"{report.message}, and on into the header of the next block (0x{p + stride:x}), now unusable"
        return [dataclasses.replace(report, message=message)]

    def _poison_intact(self, view: memoryview, u: int, p: int, span: int) -> bool:
        """Whether the ``span`` user bytes at ``p`` (view offset ``u``) are all 0xDD."""
        if span <= SMALL_MAX:
            return FILL_FREED.startswith(view[u : u + span])
        dd = poison_address()
        memcmp = native.memcmp
        for start in range(0, span, POISON_CHUNK):
            if memcmp(p + start, dd, min(POISON_CHUNK, span - start)):
                return False
        return True

    def _verify_freed(self, view: memoryview, hoff: int, p: int, hdr: Header, repair: bool) -> list[Report]:
        """A freed block: front redzone, 0xDD over the user region and padding, tail redzone."""
        n = hdr.size
        span = round16(n)
        k = self._key16(p)
        uaf = "heap-use-after-free"
        reports = self._diff(uaf, view, hoff, p, hdr, -self.redzone, self._front[k], repair)
        if not self._poison_intact(view, hoff + self._uoff, p, span):
            if span <= SMALL_MAX:
                reports += self._diff(uaf, view, hoff, p, hdr, 0, FILL_FREED[:span], repair)
            else:
                for start in range(0, span, POISON_CHUNK):
                    size = min(POISON_CHUNK, span - start)
                    reports += self._diff(uaf, view, hoff, p, hdr, start, b"\xdd" * size, repair)
        reports += self._after_block(view, hoff, p, hdr, repair)
        return reports

    # ------------------------------------------------------------------ whole-heap checks
    def _check_arena(self, arena: Arena) -> list[Report]:
        """Verify every slot of one arena; an intact slot costs a few comparisons.

        The arena is copied once and compared in place (``bytes.startswith`` at an offset),
        so no per-slot byte strings are made; a slot that fails is re-read and reported by
        :meth:`_check_one`.
        """
        view, base, stride = arena.view, arena.base, arena.stride
        reports: list[Report] = []
        uoff, rz = self._uoff, self.redzone
        front_l, rear_l, tails = self._front, self._rear, self._tails
        seal_key = self._seal_key
        fills = FREED_FILLS
        carved = self._carved(base)
        if self._arena_intact(view[:carved], stride):
            return reports
        data = view[:carved].tobytes()
        starts = data.startswith
        hoff = -stride
        for n, serial, asid, seal, state, fsid in cached_struct(f"{HDR.format}{stride - HEADER_SIZE}x").iter_unpack(data):
            hoff += stride
            if state == NEVER:
                continue
            k = hoff & 0xFF0
            u = hoff + uoff
            if seal == seal_key + hoff + n + serial + asid + state + fsid and n <= stride and starts(front_l[k], u - rz):
                if state == LIVE:
                    if starts(rear_l[k | (-n & 15)], u + n):
                        continue
                elif state == QUARANTINED:
                    span = (n + 15) & -16
                    if starts(fills[span] or freed_fill(span), u) and starts(tails[k | (-n & 15)], u + span):
                        continue
                elif state == RETIRED:
                    continue
            elif state == RETIRED:
                continue
            reports.extend(self._check_one(view, hoff, base + u))
        return reports

    def _arena_intact(self, data: memoryview, stride: int) -> bool:
        """Whether every slot of an arena (``data``: its carved slots) is intact, judged a
        whole arena at a time; False sends the arena to the slot-by-slot check.

        The headers: each field is laid in 64-bit lanes of one big integer (strided
        memoryview copies, then ``int.from_bytes``), so one sum of big integers adds every
        slot's fields at once and one comparison matches every seal (a seal is a sum below
        2**64: no lane carries into the next); the states (each live or freed) and the
        sizes (each within the slot) are matched the same way.  The bodies: the headers
        are blanked in a copy, each live block's body (front redzone, user bytes, rear
        redzone) is verified and then replaced by the freed image, and the copy is
        compared in one call with the image of an arena whose slots are all freed (front
        redzone, 0xDD, tail redzone in every slot).
        """
        count = len(data) // stride
        if not count:
            return True
        words = data.cast("I")
        s4 = stride >> 2

        def column(*pairs: tuple[int, int]) -> int:
            lanes = bytearray(count << 3)
            target = memoryview(lanes).cast("I")
            for source, at in pairs:
                target[at::2] = words[source::s4]
            return int.from_bytes(lanes, "little")

        image, keyed, ones, freed, bound, tops = self._freed_image(stride)
        if count < ARENA_SIZE // stride:
            mask = (1 << (count << 6)) - 1
            keyed, ones, freed, bound, tops = keyed & mask, ones & mask, freed & mask, bound & mask, tops & mask
        image = image[: count * stride]
        # (header words: size, serial low, serial high, alloc stack, seal low, seal high, state, free stack)
        lows = data[STATE_OFFSET::stride].tobytes()
        live = lows.count(_LIVE_LOW)
        if live + lows.count(_FREED_LOW) != count:
            return False
        states = column((6, 0))
        if live:
            marks = bytearray(count << 3)
            memoryview(marks)[::8] = lows.translate(_LIVE_MARKS)
            expected_states = freed - (QUARANTINED - LIVE) * int.from_bytes(marks, "little")
        else:
            expected_states = freed
        sizes = column((0, 0))
        if states != expected_states or (sizes + bound) & tops:
            return False  # a state neither live nor freed, or a size larger than the slot
        seals = int.from_bytes(data.cast("Q")[2 :: stride >> 3].tobytes(), "little")
        if seals != sizes + column((1, 0), (2, 1)) + column((3, 0)) + states + column((7, 0)) + keyed:
            return False
        body = bytearray(data)
        quads = memoryview(body).cast("Q")
        blank = memoryview(bytes(count << 3)).cast("Q")
        for j in range(HEADER_SIZE >> 3):
            quads[j::stride >> 3] = blank
        if live:
            uoff, rz = self._uoff, self.redzone
            front_l, rear_l = self._front, self._rear
            i = lows.find(_LIVE_LOW)
            while i >= 0:
                hoff = i * stride
                k = hoff & 0xFF0
                u = hoff + uoff
                n = words[i * s4]
                front, rear = front_l[k], rear_l[k | (-n & 15)]
                if data[u - rz : u] != front or data[u + n : u + n + len(rear)] != rear:
                    return False
                body[hoff + HEADER_SIZE : hoff + stride] = image[hoff + HEADER_SIZE : hoff + stride]
                i = lows.find(_LIVE_LOW, i + 1)
        return body == image

    def _freed_image(self, stride: int) -> tuple[memoryview, int, int, int, int, int]:
        """An arena of ``stride``-byte slots as freed slots read with blank headers, and in
        64-bit lanes: the seal key plus each slot's header offset; 1; the freed state;
        ``2**63 - 1 - stride`` (a size above the stride carries into the top bit); the top bit.

        A slot's patterns depend on its offset only through ``offset & 0xFF0``, so the
        image repeats every ``4096 / gcd(stride, 4096)`` slots: that many are built, then
        repeated.  The last few images made are kept (a few hundred KiB each).
        """
        images = self._images
        made = images.get(stride)
        if made is not None:
            return made
        if len(images) >= 8:
            images.clear()
        count = ARENA_SIZE // stride
        span = stride - self._uoff - self.redzone
        period = 4096 // gcd(stride, 4096)
        blank = bytes(HEADER_SIZE)
        fill = FILL_FREED[:span]
        front_l, tails = self._front, self._tails
        one = b"".join(
            blank + front_l[k] + fill + tails[k] for k in (hoff & 0xFF0 for hoff in range(0, period * stride, stride))
        )
        ones, ramp = _lanes(count)
        image = memoryview((one * -(-count // period))[: count * stride])
        made = images[stride] = (
            image, self._seal_key * ones + stride * ramp, ones, QUARANTINED * ones, (_TOP - 1 - stride) * ones, _TOP * ones
        )
        return made

    def _check_block(self, p: int) -> list[Report]:
        """Verify the block at ``p`` if the heap's tables say one starts there (a few
        comparisons when it is intact, as in :meth:`_check_arena`; else :meth:`_check_one`)."""
        arena = self._arenas.get(p >> ARENA_SHIFT)
        if arena is None:
            large = self._large.get(p)
            return self._check_one(large.view, large.hoff, p) if large is not None else []
        stride = arena.stride
        hoff = p - arena.user0
        if hoff < 0 or hoff % stride or hoff + stride > ARENA_SIZE:
            return []
        data = arena.view[hoff : hoff + stride].tobytes()
        n, serial, asid, seal, state, fsid = HDR.unpack_from(data)
        if state == NEVER or state == RETIRED:
            return []
        k = hoff & 0xFF0
        u = self._uoff
        starts = data.startswith
        if seal == self._seal_key + hoff + n + serial + asid + state + fsid and n <= stride and starts(self._front[k], u - self.redzone):
            if state == LIVE:
                if starts(self._rear[k | (-n & 15)], u + n):
                    return []
            elif state == QUARANTINED:
                span = (n + 15) & -16
                if starts(FREED_FILLS[span] or freed_fill(span), u) and starts(self._tails[k | (-n & 15)], u + span):
                    return []
        return self._check_one(arena.view, hoff, p)

    def _check_one(self, view: memoryview, hoff: int, p: int) -> list[Report]:
        """Verify one block in detail (the slow path of ``check()``)."""
        hdr = read_header(view, hoff)
        state = hdr.state
        if state == RETIRED:
            return []
        if not self._seal_ok(p, hdr, hoff):
            STATE.pack_into(view, hoff + STATE_OFFSET, RETIRED)
            return [self._header_report(view, hoff, p, hdr, "check()")]
        if state == LIVE:
            return self._verify_redzones(view, hoff, p, hdr, repair=True)
        return self._verify_freed(view, hoff, p, hdr, repair=True)

    # ------------------------------------------------------------------ reports
    def _memory(self, view: memoryview, hoff: int, p: int, n: int, bad: int) -> tuple[bytes, int]:
        """Up to 64 bytes of the block's own slot around address ``bad``."""
        slot_start = p - self._uoff
        return memory_window(view, slot_start - hoff, slot_start, p + round16(n) + self.redzone, bad)

    def _corruption_report(
        self, kind: str, view: memoryview, hoff: int, p: int, hdr: Header,
        offset: int, count: int, expected: bytes, found: bytes,
    ) -> Report:
        n, serial, asid, _, state, fsid = hdr
        memory, start = self._memory(view, hoff, p, n, p + offset)
        if state != LIVE and not 0 <= offset < n:
            what = f"{count} byte(s) written {'past the end' if offset >= n else 'before the start'} of a freed {n}-byte block"
        elif kind == "heap-buffer-overflow":
            what = f"{count} byte(s) corrupted {offset - n} byte(s) past the end of a {n}-byte block"
        elif kind == "heap-buffer-underflow":
            what = f"{count} byte(s) corrupted {-offset} byte(s) before the start of a {n}-byte block"
        else:
            what = f"{count} byte(s) written at offset {offset} of a freed {n}-byte block"
        return Report(
            kind=kind, address=p, size=n, offset=offset,
            alloc_stack=self._stacks.get(asid),
            free_stack=self._stacks.get(fsid) if state == QUARANTINED else (),
            stack=self._stacks.get(self._stacks.here()),
            expected=expected, found=found, thread=thread_label(), message=what,
            serial=serial, memory=memory, memory_start=start, count=count,
        )

    def _header_report(self, view: memoryview, hoff: int, p: int, hdr: Header, when: str) -> Report:
        """The finding of a damaged header (``hdr``, at ``hoff``); the header is retired.

        When the block before it in its arena is intact but the bytes after it are bad up
        to the end of its slot, one write ran from that block into this header: the
        finding is that block's overflow (or use-after-free write).  Otherwise it is a
        ``heap-header-corruption`` of this block, whose size and stacks are unknown.
        """
        raw = bytes(view[hoff : hoff + HEADER_SIZE])
        STATE.pack_into(view, hoff + STATE_OFFSET, RETIRED)
        arena = self._arenas.get(p >> ARENA_SHIFT)
        if arena is not None and hoff >= arena.stride:
            phoff, prev = hoff - arena.stride, p - arena.stride
            phdr = read_header(view, phoff)
            tail = self._tails[self._key16(prev) | (-phdr.size & MAX_PAD)]
            if (
                phdr.state in (LIVE, QUARANTINED)
                and self._seal_ok(prev, phdr, phoff)
                and view[hoff - 1] != tail[-1]
            ):
                # (put back for a moment: _after_block sees the damaged header and retires it)
                STATE.pack_into(view, hoff + STATE_OFFSET, hdr.state)
                spilled = self._after_block(view, phoff, prev, phdr, repair=True)
                STATE.pack_into(view, hoff + STATE_OFFSET, RETIRED)
                if spilled:
                    return spilled[0]
        return Report(
            kind="heap-header-corruption", address=p, size=0, offset=-self._uoff, count=HEADER_SIZE,
            stack=self._stacks.get(self._stacks.here()), thread=thread_label(), found=raw,
            message=f"the header of the block at 0x{p:x} was overwritten (detected at {when}); its size and stacks are unknown",
            memory=raw + bytes(view[hoff + HEADER_SIZE : hoff + self._uoff]), memory_start=p - self._uoff,
        )

    def _bad_free_report(self, p: int, found: tuple[memoryview, int] | None, frame: FrameType | None, op: str) -> Report:
        """A free (or realloc) of ``p`` that is not a live block: double, interior or foreign."""
        stack = self._stacks.get(self._stacks.capture(frame))
        thread = thread_label()
        if found is not None:
            view, hoff = found
            hdr = read_header(view, hoff)
            if self._seal_ok(p, hdr, hoff) and hdr.state == QUARANTINED:
                return Report(
                    kind="double-free", address=p, size=hdr.size, stack=stack, thread=thread, serial=hdr.serial,
                    alloc_stack=self._stacks.get(hdr.alloc_stack), free_stack=self._stacks.get(hdr.free_stack),
                    message=f"attempting {op} on 0x{p:x}, a {hdr.size}-byte block that was already freed",
                )
            if hdr.state != NEVER:
                return self._header_report(view, hoff, p, hdr, op)
        inside = self._containing(p)
        if inside is not None:
            view, hoff, user = inside
            hdr = read_header(view, hoff)
            if hdr.state in (LIVE, QUARANTINED) and self._seal_ok(user, hdr, hoff):
                n, serial, asid, _, state, fsid = hdr
                off = p - user
                where = f"{off} bytes inside of" if 0 <= off < n else (f"{-off} bytes to the left of" if off < 0 else f"{off - n} bytes to the right of")
                return Report(
                    kind="bad-free", address=user, size=n, offset=off, stack=stack, thread=thread, serial=serial,
                    alloc_stack=self._stacks.get(asid),
                    free_stack=self._stacks.get(fsid) if state == QUARANTINED else (),
                    message=f"attempting {op} on address which was not malloc()-ed: 0x{p:x} is located {where} {n}-byte region [0x{user:x},0x{user + n:x})",
                )
        return Report(
            kind="bad-free", address=p, stack=stack, thread=thread,
            message=f"attempting {op} on address which was not malloc()-ed: 0x{p:x}",
        )
