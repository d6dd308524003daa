"""Leaks from code you cannot fix, silenced by a suppressions file.

Run it under memguard with the suppressions file::

    memguard run --option suppressions=examples/suppressions.txt examples/suppressed.py

``vendor_cache`` leaks on purpose (think of a third-party library's cache): the rule
``leak:vendor_cache`` suppresses it, so the exit status is 0 and memguard lists the
suppression it used instead of a leak.  Without the option, the leak is reported
and the exit status is 23.
"""

from __future__ import annotations

import memguard

_CACHE: list[int] = []


def vendor_cache(size: int) -> int:
    """A third-party cache that keeps its buffers until the process ends."""
    buf = memguard.malloc(size)
    _CACHE.append(buf)
    return buf


def main() -> None:
    for _ in range(2):
        vendor_cache(64)
    mine = memguard.malloc(16)
    memguard.free(mine)
    print("done")


if __name__ == "__main__":
    main()
