"""Redzone canaries keyed per block.

A fixed redzone byte (the classic 0xFD) can be written by accident: a string of
0xFD bytes copied one past the end would go unseen.  memguard therefore derives
each block's redzone bytes from a per-heap secret and the block's address.  There
are 256 keys; each key owns a front pattern (the bytes just before the user region)
and a rear pattern (the bytes from the end of the user region to the end of the
slot).  Pattern bytes are drawn from values no program writes by habit: never 0x00,
0xFF, the fill bytes 0xCD/0xDD, nor 0xFD.

``canary="fixed"`` gives every block the 0xFD pattern of the CPython and MSVC debug
heaps instead.
"""

from __future__ import annotations

import random
from typing import Final

__all__ = ["Canaries", "FIXED_BYTE", "KEYS", "MAX_PAD"]

FIXED_BYTE: Final = 0xFD
#: Number of distinct patterns.
KEYS: Final = 256
#: The user region is padded to 16 bytes; the padding belongs to the rear redzone.
MAX_PAD: Final = 15
_AVOID = frozenset({0x00, 0xFF, 0xCD, 0xDD, 0xFD, 0xAB, 0xBA, 0xEE, 0xFE, 0x01, 0x20, 0x41, 0x61})
_ALPHABET = bytes(b for b in range(256) if b not in _AVOID)


class Canaries:
    """The redzone patterns of one heap.

    Patterns are looked up by ``key16`` (see :meth:`key16`): ``front[key16]`` is the
    front redzone and ``rear[key16 | pad]`` the rear redzone (padding included) of a
    block whose size leaves ``pad`` bytes to the next multiple of 16.
    """

    __slots__ = ("redzone", "secret", "mode", "front", "rear", "pads", "tails")

    def __init__(self, redzone: int, secret: int, mode: str = "keyed") -> None:
        if mode not in ("keyed", "fixed"):
            raise ValueError(f"canary must be 'keyed' or 'fixed', got {mode!r}")
        self.redzone = redzone
        self.secret = secret & 0xFF0
        self.mode = mode
        length = redzone + MAX_PAD
        front: list[bytes] = []
        rear: list[bytes] = []
        pads: list[bytes] = []
        tails: list[bytes] = []
        rng = random.Random(secret)
        for _ in range(KEYS):
            if mode == "fixed":
                f = bytes([FIXED_BYTE]) * redzone
                r = bytes([FIXED_BYTE]) * length
            else:
                f = bytes(rng.choice(_ALPHABET) for _ in range(redzone))
                r = bytes(rng.choice(_ALPHABET) for _ in range(length))
            # The rear redzone is the padding (a prefix of r[:MAX_PAD]) then one tail
            # pattern per key, whatever the padding: one object per key is what the heap's
            # fast paths touch for most blocks, so the tables stay small in the cache.
            tail = r[MAX_PAD:]
            front.extend([f] * 16)
            rear.extend(r[:pad] + tail for pad in range(16))
            pads.extend(r[:pad] for pad in range(16))
            tails.extend([tail] * 16)
        self.front: list[bytes] = front
        #: ``rear[key16 | pad]``: the whole rear redzone, padding included.
        self.rear: list[bytes] = rear
        #: ``pads[key16 | pad]``: the part of the rear redzone inside the 16-byte rounding.
        self.pads: list[bytes] = pads
        #: ``tails[key16 | pad]``: the ``redzone`` bytes after the 16-byte rounding (the same
        #: for every ``pad``).
        self.tails: list[bytes] = tails

    def key16(self, address: int) -> int:
        """The pattern key of the block at ``address``, already shifted left by 4."""
        return (address ^ (address >> 12) ^ self.secret) & 0xFF0

    def expected(self, address: int, size: int) -> tuple[bytes, bytes]:
        """``(front, rear)`` redzone bytes of a block of ``size`` bytes at ``address``."""
        k = self.key16(address)
        return self.front[k], self.rear[k | (-size & MAX_PAD)]
