"""Native strings: the cost of an intern hit, an intern miss and a copy-on-write copy.

Cases (each timed in interleaved repetitions; the median per operation is printed):

* ``heap pair``: the guarded heap's ``malloc(6)`` + ``free`` (the baseline);
* ``intern hit``: ``table.intern("hello")`` on an entry already there (timed in batches of
  100, each batch's references dropped outside the timing);
* ``intern hit+release``: ``table.release(table.intern("hello"))`` on an entry held elsewhere;
* ``sys.intern hit`` and ``dict lookup``: the Python operations an intern hit stands for;
* ``intern miss+release``: a new entry, then its removal (storage back on the heap);
* ``cow copy+release``: ``c.copy().release()``.

The goal: an intern hit costs no more than one guarded ``malloc`` + ``free`` pair.

Run: python benchmarks/bench_strings.py [--quick] [--json]
"""

from __future__ import annotations

import json
import sys
import time

import memguard
from pairs import Case, arguments, heap_case, interleaved_medians, pair_case, print_table


def _hit_case(table: memguard.StringTable, batch: int = 100) -> Case:
    """Hits timed in batches of ``batch``, each batch released untimed (a few references held at once)."""

    def run(n: int) -> float:
        intern, release = table.intern, table.release
        elapsed = 0.0
        for _ in range(max(n // batch, 1)):
            t = time.perf_counter()
            held = [intern("hello") for _ in range(batch)]
            elapsed += time.perf_counter() - t
            for s in held:
                release(s)
        return elapsed / (max(n // batch, 1) * batch)

    return run


def _loop(op: object) -> Case:
    def run(n: int) -> float:
        f = op
        t = time.perf_counter()
        for _ in range(n):
            f()  # type: ignore[operator]
        return (time.perf_counter() - t) / n

    return run


def main(argv: list[str] | None = None) -> int:
    args, pairs, reps = arguments(__doc__.splitlines()[0], 5000, argv)
    heap = memguard.GuardedHeap(quarantine_bytes=1 << 16)
    table = memguard.StringTable(heap=heap)
    held = table.intern("hello")
    words = {"hello": "hello"}
    key = "".join(["hel", "lo"])
    cow = memguard.CowString("hello", heap=heap)
    misses = iter(range(1 << 62))
    cases: dict[str, Case] = {
        "heap pair": heap_case(6),
        "intern hit": _hit_case(table),
        "intern hit+release": pair_case(table.intern, table.release, "hello"),
        "sys.intern hit": _loop(lambda: sys.intern(key)),
        "dict lookup": _loop(lambda: words[key]),
        "intern miss+release": _loop(lambda: table.release(table.intern(f"m{next(misses)}"))),
        "cow copy+release": _loop(lambda: cow.copy().release()),
    }
    medians, _ = interleaved_medians(cases, pairs, reps)
    table.release(held)
    cow.release()
    table.close()
    assert heap.reports == [], heap.reports
    heap.close()
    if args.json:
        print(json.dumps({name: {"us": med * 1e6, "ratio": med / medians["heap pair"]} for name, med in medians.items()}))
        return 0
    print_table(f"memguard strings benchmark: {reps} interleaved repetitions of {pairs} operations (median)", medians)
    return 0


if __name__ == "__main__":
    sys.exit(main())
