"""Intern strings from several threads into one table; one worker forgets a release.

Closing the table reports the reference still held as a ``strtab-leak``, in the kernel
``ref_tracker``'s shape, with the stack that took it (``forgetful_worker``).

Run: python examples/string_interning.py
"""

from __future__ import annotations

import threading

import memguard

WORDS = [f"tag-{i}" for i in range(50)]


def worker(table: memguard.StringTable) -> None:
    for _ in range(20):
        held = [table.intern(w) for w in WORDS]
        for s in held:
            table.release(s)


def forgetful_worker(table: memguard.StringTable) -> None:
    worker(table)
    table.intern("tag-7")  # ... and never released


def main() -> None:
    heap = memguard.GuardedHeap(on_error="report")
    table = memguard.StringTable(heap=heap, name="tags")
    threads = [threading.Thread(target=worker, args=(table,)) for _ in range(3)]
    threads.append(threading.Thread(target=forgetful_worker, args=(table,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(table.stats())
    for report in table.close():
        print(report)
    heap.close()


if __name__ == "__main__":
    main()
