"""A program that writes past the end of a buffer and forgets to free another one.

Run it under memguard::

    memguard run examples/overflow.py

The terminating NUL lands one byte past the 5-byte buffer, in its redzone: memguard
reports the ``heap-buffer-overflow`` when the buffer is freed (where it was allocated,
where the damage was found, a hex dump), then the leak, and exits with status 23.
"""

from __future__ import annotations

import ctypes

import memguard

name = memguard.malloc(5)
ctypes.memmove(name, b"hello\0", 6)  # BUG: no room for the NUL
memguard.free(name)
memguard.malloc(32)  # BUG: never freed
