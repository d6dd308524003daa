"""The guarded heap's values: block and arena layout, states, fills, and the records it hands out.

Block layout (every block, small or large)::

    [pad][header 32][front redzone R][user region n][rear redzone: pad to 16 + R]

The header (:data:`HDR`, read as a :class:`Header`) holds the size, the serial number,
the allocation stack id, a seal, the state and the free stack id.  The seal is the sum of
a per-heap secret, the block's offset and every other field (:func:`header_seal`), so a stray
write to any field memguard trusts breaks it.  The seal, the state and the free stack id
are the header's last 16 bytes, next to the front redzone: freeing a block rewrites them
and poisons the block in one write.

Small blocks (up to :data:`SMALL_MAX` bytes) live in size-class arenas of
:data:`ARENA_SIZE` bytes, aligned to their size (:class:`Arena`); larger and
over-aligned blocks get a native allocation each.

Nothing here holds state of a heap: these are constants, tables shared by every heap,
and immutable records.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple

from memguard import native
from memguard.stacks import Stack

__all__ = [
    # geometry
    "SMALL_MAX",
    "ARENA_SHIFT",
    "ARENA_SIZE",
    "ARENA_MASK",
    "SLOT_LANES",
    "HDR",
    "HEADER_SIZE",
    "STATE",
    "STATE_OFFSET",
    "SEAL_OFFSET",
    "FREE_MARK",
    "FREE_DELTA",
    "header_seal",
    "MAX_BLOCK",
    "SIZE_MAX",
    # states
    "LIVE",
    "QUARANTINED",
    "RETIRED",
    "NEVER",
    "STATE_NAMES",
    "LIVE_LOW",
    "LARGE_MARK",
    # fills and tables
    "UNPACK_MAX",
    "FILL_NEW",
    "FILL_FREED",
    "FREED_FILLS",
    "freed_fill",
    "POISON_CHUNK",
    "poison_address",
    "CLASS_OF",
    "PAD_OF",
    "PADS",
    "cached_struct",
    "round16",
    # records
    "Header",
    "read_header",
    "Arena",
    "LargeBlock",
    "BlockInfo",
    "HeapStats",
    "HeapSlot",
    "HeapRegion",
    "SlotState",
]

#: Largest block served from a size-class arena.
SMALL_MAX = 4096
#: log2 of :data:`ARENA_SIZE`: ``address >> ARENA_SHIFT`` names the arena of an address.
ARENA_SHIFT = 18
#: Size (and alignment) of a size-class arena.
ARENA_SIZE = 1 << ARENA_SHIFT
#: Offset of an address inside its arena: ``address & ARENA_MASK``.
ARENA_MASK = ARENA_SIZE - 1
#: Most slots an arena holds (the smallest slot is 64 bytes: header, two redzones).
SLOT_LANES = ARENA_SIZE // 64
#: The block header: size, serial, alloc stack, seal, state, free stack (see :class:`Header`).
HDR = struct.Struct("<IQIQII")
#: Bytes of block header in front of the front redzone.
HEADER_SIZE = HDR.size
#: The state field alone, at :data:`STATE_OFFSET` in the header.
STATE = struct.Struct("<I")
STATE_OFFSET = 24
#: Where the seal is: the seal, the state and the free stack id are the header's last 16 bytes.
SEAL_OFFSET = 16
#: What a free writes at :data:`SEAL_OFFSET`: the new seal, the state, the free stack id.
FREE_MARK = struct.Struct("<QII")
#: Largest block (the header holds the size in 32 bits).
MAX_BLOCK = 0xFFFFFFFF
SIZE_MAX = native.SIZE_MAX

#: Header states.
LIVE = 0xA110C8ED
QUARANTINED = 0xDEADF4EE
#: A block whose header was found damaged: reported once, never reused.
RETIRED = 0xBADB10C5
#: Arenas are filled with 0xDD, so a slot that was never handed out reads as this state.
NEVER = 0xDDDDDDDD
STATE_NAMES = {LIVE: "live", QUARANTINED: "quarantined", RETIRED: "corrupt"}
#: What freeing a live block adds to its seal, besides the free stack id.
FREE_DELTA = QUARANTINED - LIVE


def header_seal(key: int, hoff: int, size: int, serial: int, alloc_stack: int, state: int, free_stack: int) -> int:
    """The seal of a header: the heap's key, the header's offset and every other field, summed.

    A change of any one field changes the sum; the key (below 2**62) keeps it below
    2**64.  The fast paths compute the same sum inline.
    """
    return key + hoff + size + serial + alloc_stack + state + free_stack
#: The low byte of ``LIVE`` as stored (little-endian): unique among the states.
LIVE_LOW = LIVE & 0xFF
#: Quarantine entries are ``address << 13 | size``; this size marks a large block.
LARGE_MARK = 0x1FFF

#: Poison spans up to this size are verified by unpacking; larger ones by ``startswith``.
UNPACK_MAX = 256
#: Fresh memory (``malloc``) and freed memory fills, long enough for any small block.
FILL_NEW = b"\xcd" * SMALL_MAX
FILL_FREED = b"\xdd" * SMALL_MAX
#: ``FREED_FILLS[n]``: ``n`` bytes of 0xDD, made on first use by :func:`freed_fill`.
FREED_FILLS: list[bytes | None] = [None] * (SMALL_MAX + 1)


def freed_fill(n: int) -> bytes:
    """``n`` (at most :data:`SMALL_MAX`) bytes of 0xDD, kept in :data:`FREED_FILLS`."""
    fill = FREED_FILLS[n] = FILL_FREED[:n]
    return fill


#: Large blocks' poison is compared against a buffer of 0xDD in chunks of this size.
POISON_CHUNK = 1 << 20
_poison_buffer: tuple[int, memoryview] | None = None


def poison_address() -> int:
    """Address of a 1 MiB buffer of 0xDD bytes (for memcmp against large blocks)."""
    global _poison_buffer
    if _poison_buffer is None:
        address, view = native.owned_buffer(POISON_CHUNK)
        native.memset(address, 0xDD, POISON_CHUNK)
        _poison_buffer = (address, view)
    return _poison_buffer[0]


#: Size class (user bytes rounded up to 16, over 16) and padding of every small size.
CLASS_OF = [(n + 15) >> 4 for n in range(SMALL_MAX + 1)]
PAD_OF = [-n & 15 for n in range(SMALL_MAX + 1)]

#: ``PADS[pad]`` writes ``pad`` bytes (the rear redzone's part inside a 16-byte span).
PADS = [struct.Struct(f"{pad}s").pack_into for pad in range(16)]

_struct_cache: dict[str, struct.Struct] = {}


def cached_struct(fmt: str) -> struct.Struct:
    """``struct.Struct(fmt)``, compiled once per format (the cache is bounded)."""
    s = _struct_cache.get(fmt)
    if s is None:
        if len(_struct_cache) > 65536:  # pragma: no cover - bounded for huge odd sizes
            _struct_cache.clear()
        s = _struct_cache[fmt] = struct.Struct(fmt)
    return s


def round16(n: int) -> int:
    """``n`` rounded up to a multiple of 16."""
    return (n + 15) & ~15


class Header(NamedTuple):
    """A block header as stored, field by field in :data:`HDR`'s order.

    ``Header._make(HDR.unpack_from(view, offset))`` reads one.
    """

    size: int
    serial: int
    alloc_stack: int
    seal: int
    state: int
    free_stack: int


_tuple_new = tuple.__new__
_unpack_header = HDR.unpack_from


def read_header(view: memoryview, hoff: int) -> Header:
    """The header at offset ``hoff`` of ``view``."""
    return _tuple_new(Header, _unpack_header(view, hoff))


class Arena(NamedTuple):
    """A size-class arena: where its slots are and how a slot is read and freed.

    The canary key of a slot is its offset in the arena ``& 0xFF0``.
    """

    #: the arena's memory (it owns the native allocation)
    view: memoryview
    #: address of the arena (a multiple of :data:`ARENA_SIZE`)
    base: int
    #: bytes per slot: header, front redzone, user bytes of the class, rear redzone
    stride: int
    #: user address of slot 0
    user0: int
    #: ``read(view, header offset)``: size, serial, alloc stack, seal, state, front
    #: redzone, the last 16 bytes of the user region, the tail redzone (the fast free's reader)
    read: Callable[[Any, int], tuple[Any, ...]]
    #: ``poison(view, seal offset, seal, state, free stack, front redzone, fill)``: frees a slot
    poison: Callable[..., None]


class LargeBlock(NamedTuple):
    """A large or over-aligned block: a native allocation of its own."""

    #: the whole native allocation (it owns the memory)
    view: memoryview
    #: offset of the block's header in ``view`` (the padding before it aligns the user address)
    hoff: int
    #: user bytes
    size: int


@dataclass(frozen=True)
class BlockInfo:
    """What memguard knows about one block.

    :ivar state: ``"live"``, ``"quarantined"`` (freed and still poisoned: in the quarantine,
        or out of it and waiting for its slot to be reused) or ``"corrupt"`` (its header was
        found damaged; never reused).
    """

    address: int
    size: int
    serial: int
    state: str
    alloc_stack: Stack
    free_stack: Stack


@dataclass(frozen=True)
class HeapStats:
    """Counters of a heap (sizes are user bytes, but for ``quarantined_slot_bytes``).

    :ivar quarantined_slot_bytes: the native bytes the quarantined blocks occupy (each
        one's slot: header, redzones, padding; a large block's whole native allocation).
        This is what the heap's ``quarantine_bytes`` budget counts.
    """

    live_blocks: int
    live_bytes: int
    peak_bytes: int
    total_allocs: int
    total_frees: int
    quarantined_blocks: int
    quarantined_bytes: int
    arena_bytes: int
    large_blocks: int
    quarantined_slot_bytes: int = 0


#: The states :meth:`GuardedHeap.walk` gives a slot.
SlotState = Literal["live", "quarantined", "free", "corrupt"]


class HeapSlot(NamedTuple):
    """One block's place in a :class:`HeapRegion`, as :meth:`GuardedHeap.walk` saw it.

    :ivar address: the user address (what ``malloc`` returned).
    :ivar size: user bytes (of the block that last occupied the slot, for a ``"free"``
        slot; 0 for a ``"corrupt"`` one, whose header cannot be trusted).
    :ivar state: ``"live"``; ``"quarantined"`` (freed, still in the quarantine);
        ``"free"`` (freed, out of the quarantine, poisoned and waiting for reuse);
        ``"corrupt"`` (its header is damaged; never reused).
    :ivar serial: the allocation number (of the last occupant for a ``"free"`` slot; 0
        for a ``"corrupt"`` one).
    """

    address: int
    size: int
    state: SlotState
    serial: int


class HeapRegion(NamedTuple):
    """A native allocation of a heap, as :meth:`GuardedHeap.walk` saw it.

    :ivar kind: ``"arena"`` (a size-class arena of small blocks) or ``"large"`` (one
        large or over-aligned block).
    :ivar address: where the region starts.
    :ivar size: bytes the region spans: :data:`ARENA_SIZE` for an arena (the space
        slots may occupy; what no slot covers was never handed out), the whole native
        allocation for a large block.
    :ivar slot_size: bytes per slot (header and redzones included) for an arena; the
        whole native allocation for a large block.
    :ivar slots: the slots handed out so far, by address (a large region has one).
    """

    kind: Literal["arena", "large"]
    address: int
    size: int
    slot_size: int
    slots: tuple[HeapSlot, ...]
