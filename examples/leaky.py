"""A program that leaks native memory: three buffers from one site, one from another.

Run it under memguard::

    memguard run examples/leaky.py

memguard prints a LeakSanitizer-style report (grouped by allocation site, largest first)
and exits with status 23.  Run directly (``python examples/leaky.py``) the report is
printed too (``memguard.malloc`` installs the process-wide heap on first use), but the
exit status stays the program's own.
"""

from __future__ import annotations

import ctypes

import memguard


def read_record(text: bytes) -> int:
    """Copy ``text`` into a fresh native buffer (the caller must free it)."""
    buf = memguard.malloc(len(text) + 1)
    ctypes.memmove(buf, text, len(text) + 1)
    return buf


def main() -> None:
    for line in (b"alpha", b"beta", b"gamma"):
        read_record(line)  # BUG: the buffer is never freed
    header = memguard.calloc(4, 16)  # BUG: never freed either
    ok = memguard.malloc(100)
    memguard.free(ok)  # freed: not reported
    print("processed 3 records", header != 0)


if __name__ == "__main__":
    main()
