"""First-party plugin: verify every string table's invariants at every check, through public names only.

At every ``heap.check()`` (so at the end of every test under ``pytest --memguard``), for
each :class:`memguard.StringTable` over the heap:

* each entry's storage is a live heap block of exactly ``length + 1`` bytes ending in NUL;
* no two entries hold equal strings, and no two share an address;
* the counts add up: ``len(table)`` and ``stats().entries`` equal the entries listed,
  ``stats().bytes`` is the sum of ``length + 1``, ``stats().references`` the sum of the
  entries' counts (each at least 1), and ``interns == hits + misses``.

Violations are ``strtab-invariant`` findings.

Usage::

    from memguard_plugins import strtab_invariants
    heap = memguard.GuardedHeap(plugins=[strtab_invariants])

It is also declared in the ``memguard`` entry-point group under the name
``strtab_invariants``, so the process-wide heap loads it unless disabled by that name.
"""

from __future__ import annotations

from typing import Any

import memguard
from memguard import Report, hookimpl

__all__ = ["KIND", "audit", "memguard_check"]

#: The kind of every finding of this plugin.
KIND = "strtab-invariant"

memguard.register_kind(
    KIND, memguard.StringError,
    description="a string table's entries, storage and counters contradict each other",
)


def audit(table: memguard.StringTable) -> list[str]:
    """What is wrong with ``table`` now (an empty list when nothing is)."""
    problems: list[str] = []
    heap = table.heap
    entries = table.entries()
    stats = table.stats()
    values: set[bytes] = set()
    addresses: set[int] = set()
    for e in entries:
        if e.value in values:
            problems.append(f"two entries hold {e.value!r}")
        if e.address in addresses:
            problems.append(f"two entries share the address 0x{e.address:x}")
        values.add(e.value)
        addresses.add(e.address)
        try:
            block = heap.block(e.address)
        except (ValueError, memguard.MemguardError):
            problems.append(f"the storage of {e.value!r} at 0x{e.address:x} is not a heap block")
            continue
        if block.state != "live":
            problems.append(f"the storage of {e.value!r} at 0x{e.address:x} is {block.state}, not live")
            continue
        if block.size != e.length + 1:
            problems.append(f"the storage of {e.value!r} holds {block.size} bytes, not {e.length + 1}")
        elif heap.view(e.address)[e.length] != 0:
            problems.append(f"the storage of {e.value!r} at 0x{e.address:x} does not end in NUL")
        if e.refcount < 1:
            problems.append(f"{e.value!r} is in the table with a count of {e.refcount}")
    if not len(table) == stats.entries == len(entries):
        problems.append(f"len() {len(table)}, stats().entries {stats.entries} and {len(entries)} entries listed differ")
    size = sum(e.length + 1 for e in entries)
    if stats.bytes != size:
        problems.append(f"stats().bytes ({stats.bytes}) != the entries' bytes ({size})")
    refs = sum(e.refcount for e in entries)
    if stats.references != refs:
        problems.append(f"stats().references ({stats.references}) != the entries' counts ({refs})")
    if stats.interns != stats.hits + stats.misses:
        problems.append(f"interns ({stats.interns}) != hits ({stats.hits}) + misses ({stats.misses})")
    return problems


@hookimpl
def memguard_check(heap: Any) -> list[Report]:
    """Audit every open string table registered with ``heap``."""
    if not isinstance(heap, memguard.GuardedHeap):
        return []
    reports = []
    for table in heap.registered():
        if isinstance(table, memguard.StringTable) and not table.closed:
            for problem in audit(table):
                reports.append(Report(kind=KIND, message=f"string table {table.name!r}: {problem}",
                                      extra={"table": table.name, "plugin": __name__}))
    return reports
