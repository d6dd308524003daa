"""libxml2 on the guarded heap, in a process of its own.

Run:  python examples/libxml2_guarded.py [--bugs] [--docs N]

``xmlMemSetup`` changes libxml2's allocator for the whole process and must come before
libxml2 allocates anything, which is why this runs as a separate program (and why
``clibs.xml2_configure`` refuses once libxml2 is loaded).  Every block libxml2 makes then
lands on a guarded heap.  With ``--bugs`` the program makes three mistakes with what
libxml2 hands back: it writes one byte past a serialised document, writes into that
buffer after freeing it, and never frees a parsed document; the reports point at the
lines below.  libxml2's global state is suppressed with ``clibs.XML2_SUPPRESSIONS``.

The last line of output is a JSON summary (used by memguard's tests).
"""

from __future__ import annotations

import argparse
import ctypes
import json

import memguard
from memguard import clibs


def document(n: int) -> bytes:
    items = b"".join(b'<item id="%d"><name>n&amp;%d</name><![CDATA[<%d>]]></item>' % (i, i, i) for i in range(n))
    return b'<?xml version="1.0"?><catalog>' + items + b"</catalog>"


def run(docs: int, bugs: bool) -> dict[str, object]:
    """Parse, serialise and free documents on the guarded heap; return what memguard saw."""
    heap = memguard.GuardedHeap(on_error="report")
    lib = clibs.xml2_configure(heap)  # xmlMemSetup(free, malloc, realloc, strdup) + xmlInitParser
    counted = sum(clibs.xml2_parse(document(i % 50)) for i in range(docs))
    try:
        clibs.xml2_parse(b"<catalog><item></catalog>")  # libxml2's error path frees on the heap
        error = ""
    except clibs.CLibraryError as exc:
        error = exc.message
    doc = lib.xmlReadMemory(document(3), len(document(3)), b"x.xml", None, 0)
    text, size = ctypes.c_void_p(), ctypes.c_int()
    lib.xmlDocDumpMemory(doc, ctypes.byref(text), ctypes.byref(size))  # xmlMalloc'd: a guarded block
    if bugs:
        ctypes.memset(text.value + size.value + 1, 0, 1)  # one byte past the terminating NUL
        leaked = lib.xmlReadMemory(b"<never-freed/>", 14, b"y.xml", None, 0)  # no xmlFreeDoc
    heap.free(text.value)  # xmlFree is the heap's free
    if bugs:
        ctypes.memset(text.value, 0x41, 4)  # written after it was freed
    lib.xmlFreeDoc(doc)
    reports = heap.check()
    rules = memguard.Suppressions.parse(clibs.XML2_SUPPRESSIONS)
    leaks, _ = rules.apply(heap.leaks())
    if leaks:
        print(memguard.format_leaks(leaks))
    for report in heap.reports:
        print(report)
    return {
        "elements": counted,
        "error": error,
        "allocations": heap.stats().total_allocs,
        "reports": [(r.kind, r.alloc_stack[0].lineno if r.alloc_stack else 0) for r in heap.reports],
        "new_reports": len(reports),
        "leak_lines": sorted({g.stack[0].lineno for g in leaks if g.stack}),
        "leaked_bytes": sum(g.size for g in leaks),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bugs", action="store_true", help="plant an overflow, a use after free and a leak")
    parser.add_argument("--docs", type=int, default=200, help="documents to parse")
    args = parser.parse_args()
    summary = run(args.docs, args.bugs)
    print(json.dumps(summary))
    return 1 if summary["reports"] or summary["leaked_bytes"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
