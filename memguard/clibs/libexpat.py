"""expat on the guarded heap: an ``XML_Memory_Handling_Suite`` that is the heap, a parser
created with it, and whole-document :func:`expat_parse`.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable

from memguard.heap.c_allocator import allocator_for
from memguard.clibs.common import CHUNK, MAX_IN, CLibraryError, as_bytes, optional_allocator
from memguard.native.libexpat import XMLMemoryHandlingSuite, expat

__all__ = ["expat_memory_suite", "expat_parser", "expat_parse"]


def expat_memory_suite(allocator: Any) -> XMLMemoryHandlingSuite:
    """An ``XML_Memory_Handling_Suite`` using the guarded heap, for ``XML_ParserCreate_MM``.

    Expat copies the suite into the parser, but the callbacks themselves must outlive
    the parser: keep the allocator (or this structure) alive until ``XML_ParserFree``.
    """
    alloc = allocator_for(allocator)
    suite = XMLMemoryHandlingSuite()
    suite.malloc_fcn = alloc.malloc
    suite.realloc_fcn = alloc.realloc
    suite.free_fcn = alloc.free
    return suite


def expat_parser(allocator: Any = None, encoding: str | None = None) -> int:
    """``XML_ParserCreate_MM(encoding, &suite, NULL)`` on the guarded heap; the parser's address.

    With ``allocator=None`` the parser uses expat's own allocator.  Free it with
    ``native.expat().XML_ParserFree(parser)``; keep the allocator alive until then.
    """
    ex = expat()
    enc = encoding.encode() if encoding is not None else None
    if allocator is None:
        parser = ex.XML_ParserCreate(enc)
    else:
        suite = expat_memory_suite(allocator)
        parser = ex.XML_ParserCreate_MM(enc, ctypes.byref(suite), None)
    if not parser:
        raise MemoryError("XML_ParserCreate_MM returned NULL")
    return int(parser)


def expat_parse(
    data: bytes, allocator: Any = None, chunk_size: int = CHUNK, start: Callable[[bytes], None] | None = None
) -> int:
    """Parse a whole XML document with the system expat; return the number of start tags.

    Start tags are counted only when ``start`` is given (it is called with each element
    name); otherwise 0 is returned and no Python runs per element.  Malformed XML raises
    :class:`~memguard.clibs.CLibraryError` with expat's message and line.
    """
    data = as_bytes(data)
    if chunk_size <= 0 or chunk_size > MAX_IN:
        raise ValueError(f"chunk_size must be between 1 and {MAX_IN}, got {chunk_size}")
    ex = expat()
    alloc = optional_allocator(allocator)
    parser = expat_parser(alloc)
    count = 0
    handler = end = None
    try:
        if start is not None:

            def on_start(user: int | None, name: bytes, atts: Any) -> None:
                nonlocal count
                count += 1
                start(name)

            handler = ex.START_HANDLER(on_start)
            end = ex.END_HANDLER(lambda user, name: None)
            ex.XML_SetElementHandler(parser, handler, end)
        n = len(data)
        for pos in range(0, max(n, 1), chunk_size):
            piece = data[pos : pos + chunk_size]
            final = int(pos + chunk_size >= n)
            if ex.XML_Parse(parser, piece, len(piece), final) != ex.XML_STATUS_OK:
                code = ex.XML_GetErrorCode(parser)
                msg = (ex.XML_ErrorString(code) or b"error").decode(errors="replace")
                line = ex.XML_GetCurrentLineNumber(parser)
                if code == 1:  # XML_ERROR_NO_MEMORY
                    raise MemoryError(f"expat: out of memory at line {line}")
                raise CLibraryError("expat", code, f"{msg} at line {line}")
    finally:
        ex.XML_ParserFree(parser)
    del handler, end
    return count
