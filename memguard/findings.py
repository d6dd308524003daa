"""Pieces every checker's findings are built from: who saw it, where the bad bytes are, what memory is around them.

The guarded heap and the pool annotations describe a corruption the same way: the
thread that found it, the run from the first to the last damaged byte, and up to 64
bytes of the memory around it, never reading outside the span the checker owns.
"""

from __future__ import annotations

import threading

__all__ = ["thread_label", "memory_window", "bad_span", "WINDOW"]

#: Bytes of memory a report shows around a bad address (at most).
WINDOW = 64


def thread_label(thread: threading.Thread | None = None) -> str:
    """A thread as reports name it: ``"name (T<ident>)"`` (the current thread by default)."""
    t = threading.current_thread() if thread is None else thread
    return f"{t.name} (T{t.ident})"


def memory_window(view: memoryview, view_start: int, lo: int, hi: int, bad: int) -> tuple[bytes, int]:
    """Up to :data:`WINDOW` bytes of memory around address ``bad``, and the address they start at.

    ``view[0]`` is the byte at address ``view_start``; only addresses in ``[lo, hi)`` are
    read (the span the checker owns, e.g. one block's slot), which must lie within the
    view.  The window starts on a 16-byte boundary 32 bytes or less before ``bad``.
    """
    start = max(lo, (bad - WINDOW // 2) & ~15)
    end = min(hi, start + WINDOW)
    if end <= start:
        return b"", start
    return bytes(view[start - view_start : end - view_start]), start


def bad_span(found: bytes, expected: bytes) -> tuple[int, int] | None:
    """``(first, last)``: the offsets of the first and last bytes where ``found`` differs
    from ``expected``, or None when they are equal.

    Where one is longer than the other, the extra bytes count as differing.  Runs in C
    whatever the length (a megabyte of poison is compared in about a millisecond).
    """
    if found == expected:
        return None
    n = min(len(found), len(expected))
    diff = int.from_bytes(found[:n], "little") ^ int.from_bytes(expected[:n], "little")
    if not diff:  # a common prefix: the difference is the longer one's tail
        return n, max(len(found), len(expected)) - 1
    first = ((diff & -diff).bit_length() - 1) >> 3
    last = (diff.bit_length() - 1) >> 3
    if len(found) != len(expected):
        last = max(len(found), len(expected)) - 1
    return first, last
