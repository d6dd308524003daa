"""libxml2 on the guarded heap: :func:`xml2_configure` makes the heap libxml2's allocator
(``xmlMemSetup``, with a ``strdup`` on the heap) for the process, and :func:`xml2_parse`
parses a whole document with it.
"""

from __future__ import annotations

import threading
from typing import Any

from memguard.clibs.common import CLibraryError, as_bytes
from memguard.heap.c_allocator import CAllocator, allocator_for, c_site
from memguard.native import prototypes, trampoline
from memguard.native.libxml2 import Xml2Lib, xml2, xml2_loaded

__all__ = ["XML2_SUPPRESSIONS", "xml2_configure", "xml2_parse"]

#: The frame libxml2's global state (allocated by ``xmlInitParser`` in
#: :func:`xml2_configure`, kept for the life of the process) is attributed to.
XML2_INIT_SITE = b"<libxml2 global state>"
#: Suppression rules for libxml2's global state: it is never freed (memguard does not call
#: ``xmlCleanupParser``, which other users of the library in the process would not survive).
XML2_SUPPRESSIONS = "leak:<libxml2 global state>\n"

_lock = threading.Lock()
#: The allocator libxml2 was given: it calls it for the rest of the process.
_configured: list[CAllocator] = []


def xml2_configure(allocator: Any) -> Xml2Lib:
    """Make the guarded heap libxml2's allocator for the rest of the process.

    Calls ``xmlMemSetup(free, malloc, realloc, strdup)`` with the heap's callbacks, then
    ``xmlInitParser``.  libxml2 must not have allocated anything yet, so this is refused
    (:class:`~memguard.clibs.CLibraryError`) when libxml2 is already loaded in the
    process (by ``lxml``, by another library, or by an earlier call): its blocks from the
    C allocator would come back to the heap's ``free``.  The global state
    ``xmlInitParser`` allocates lives as long as the process; its blocks are filed under
    the frame ``<libxml2 global state>``, which :data:`XML2_SUPPRESSIONS` suppresses.  Do it first thing, in a process
    of its own (see ``examples/libxml2_guarded.py``).  Calling it again with the same
    heap returns the library.  The heap must stay open while libxml2 is used: once it is
    closed every libxml2 allocation fails.  Needs memguard's exception-preserving
    trampolines (bindings such as lxml call libxml2's ``free`` with a Python exception
    pending): without them this raises :class:`~memguard.errors.TrampolineUnavailableError`
    before touching libxml2.
    """
    name = "memguard.clibs.xml2_configure"
    trampoline.require(name)
    alloc = allocator_for(allocator)
    with _lock:
        if _configured:
            if _configured[0] is alloc:
                return xml2()
            raise CLibraryError("libxml2", -1, "libxml2 is already on another heap in this process")
        if xml2_loaded():
            raise CLibraryError(
                "libxml2", -1,
                "libxml2 is already loaded in this process and may hold blocks of the C allocator; "
                "configure it before anything loads libxml2 (lxml, another library), in a process of its own",
            )
        lib = xml2()
        rc = lib.xmlMemSetup(
            alloc.function("free", prototypes.FREE_FN, require_trampoline=name),
            alloc.function("malloc", prototypes.MALLOC_FN, require_trampoline=name),
            alloc.function("realloc", prototypes.REALLOC_FN, require_trampoline=name),
            alloc.function("strdup", prototypes.STRDUP_FN, require_trampoline=name),
        )
        if rc != 0:  # pragma: no cover - only for NULL functions
            raise CLibraryError("libxml2", rc, "xmlMemSetup failed")
        _configured.append(alloc)
    # Its allocations are filed under one frame, which XML2_SUPPRESSIONS names.
    c_site(XML2_INIT_SITE, 0)(lib.xmlInitParser)
    return lib


def xml2_parse(data: bytes) -> int:
    """Parse a whole XML document with libxml2 (``xmlReadMemory``); the root's child element count.

    Uses whatever allocator libxml2 has (the guarded heap after :func:`xml2_configure`).
    Malformed XML raises :class:`~memguard.clibs.CLibraryError` with libxml2's message
    and line; the document and the error's copy are freed either way.
    """
    data = as_bytes(data)
    if len(data) > 0x7FFFFFFF:
        raise ValueError("libxml2 parses at most 2 GiB from memory")
    lib = xml2()
    options = lib.XML_PARSE_NONET | lib.XML_PARSE_NOERROR | lib.XML_PARSE_NOWARNING
    doc = lib.xmlReadMemory(data, len(data), b"memory.xml", None, options)
    if not doc:
        err = lib.xmlGetLastError()
        if err:
            code, line = err.contents.code, err.contents.line
            message = (err.contents.message or b"parse error").decode(errors="replace").strip()
        else:  # pragma: no cover - libxml2 always records one
            code, line, message = -1, 0, "parse error"
        lib.xmlResetLastError()  # frees libxml2's copy of the message
        if code == 2:  # XML_ERR_NO_MEMORY
            raise MemoryError(f"libxml2: out of memory at line {line}")
        raise CLibraryError("libxml2", code, f"{message} at line {line}")
    try:
        root = lib.xmlDocGetRootElement(doc)
        return int(lib.xmlChildElementCount(root)) if root else 0
    finally:
        lib.xmlFreeDoc(doc)
