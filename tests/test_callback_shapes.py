"""CAllocator's other C shapes: context-first, sized free, strdup, file/line (OpenSSL's)."""

from __future__ import annotations

import ctypes
import sys

import pytest

import memguard
from memguard import kinds, native
from memguard.errors import CallbackError, InvalidFreeError
from memguard.heap.c_allocator import KINDS, CAllocator, c_site

#: The ``heap`` fixture (tests/conftest.py) raises in this module: findings in callbacks wait for check().
HEAP_ON_ERROR = "raise"


def line_of_next() -> int:
    return sys._getframe(1).f_lineno + 1


def test_every_kind_builds_with_its_prototype(heap: memguard.GuardedHeap) -> None:
    alloc = heap.c_allocator()
    shapes = {
        "ctx_malloc": native.CTX_MALLOC_FN, "ctx_calloc": native.CTX_CALLOC_FN,
        "ctx_realloc": native.CTX_REALLOC_FN, "ctx_free": native.CTX_FREE_FN,
        "ctx_sized_free": native.CTX_SIZED_FREE_FN, "strdup": native.STRDUP_FN,
        "malloc_file_line": native.MALLOC_FILE_LINE_FN, "realloc_file_line": native.REALLOC_FILE_LINE_FN,
        "free_file_line": native.FREE_FILE_LINE_FN,
    }
    assert set(shapes) <= set(KINDS)
    for kind, proto in shapes.items():
        cb = alloc.function(kind, proto)
        assert isinstance(cb, proto) and alloc.function(kind, proto) is cb
        assert ctypes.cast(cb, ctypes.c_void_p).value
    with pytest.raises(TypeError, match="takes 3 argument"):
        alloc.function("ctx_sized_free", native.CTX_FREE_FN)
    with pytest.raises(TypeError, match="check_free_size"):
        CAllocator(heap, check_free_size="no")  # type: ignore[arg-type]


def test_context_first_allocator(heap: memguard.GuardedHeap) -> None:
    alloc = heap.c_allocator()
    ctx = ctypes.c_void_p(1234)  # ignored: the allocator is the context
    malloc = alloc.function("ctx_malloc", native.CTX_MALLOC_FN)
    calloc = alloc.function("ctx_calloc", native.CTX_CALLOC_FN)
    realloc = alloc.function("ctx_realloc", native.CTX_REALLOC_FN)
    free = alloc.function("ctx_free", native.CTX_FREE_FN)
    sized_free = alloc.function("ctx_sized_free", native.CTX_SIZED_FREE_FN)
    p = malloc(ctx, 10)
    assert heap.block(p).size == 10 and heap.block(p).state == "live"
    ctypes.memmove(p, b"abcdefghij", 10)
    q = realloc(ctx, p, 100)
    assert ctypes.string_at(q, 10) == b"abcdefghij" and heap.block(p).state == "quarantined"
    z = calloc(ctx, 3, 5)
    assert bytes(heap.view(z)) == bytes(15)
    n = realloc(ctx, None, 7)  # realloc(NULL, n) is malloc(n)
    assert heap.block(n).size == 7
    sized_free(ctx, q, 100)
    sized_free(ctx, z, 15)
    sized_free(ctx, None, 0)  # free(NULL) is a no-op
    free(ctx, n)
    free(ctx, None)
    assert malloc(ctx, native.SIZE_MAX) is None and calloc(ctx, 1 << 40, 1 << 40) is None
    assert alloc.null_returns == 2
    assert heap.stats().live_blocks == 0 and heap.check() == [] and heap.reports == []


def test_sized_free_with_the_wrong_size_is_its_own_finding(heap: memguard.GuardedHeap) -> None:
    alloc = heap.c_allocator()
    malloc = alloc.function("ctx_malloc", native.CTX_MALLOC_FN)
    sized_free = alloc.function("ctx_sized_free", native.CTX_SIZED_FREE_FN)
    line = line_of_next()
    p = malloc(None, 8)
    free_line = line_of_next()
    sized_free(None, p, 1)
    (report,) = heap.reports
    assert report.kind == "free-size-mismatch" and report.size == 8 and report.extra["passed_size"] == 1
    assert "with size 1" in report.message and "8 byte(s)" in report.message
    assert (report.alloc_stack[0].filename, report.alloc_stack[0].lineno) == (__file__, line)
    assert report.stack[0].lineno == free_line
    assert heap.block(p).state == "quarantined"  # freed all the same
    assert "free-size-mismatch" in str(report)
    with pytest.raises(InvalidFreeError):
        heap.check()
    assert kinds.get_kind("free-size-mismatch").rule == "size-mismatch"  # type: ignore[union-attr]
    # A second free with any size is a double free, not a size mismatch.
    sized_free(None, p, 8)
    assert heap.reports[-1].kind == "double-free"


def test_sized_free_check_can_be_turned_off() -> None:
    with memguard.GuardedHeap(on_error="report") as h:
        alloc = CAllocator(h, check_free_size=False)
        p = alloc.function("ctx_malloc", native.CTX_MALLOC_FN)(None, 8)
        alloc.function("ctx_sized_free", native.CTX_SIZED_FREE_FN)(None, p, 1)
        assert h.reports == [] and h.stats().live_blocks == 0


def test_strdup_copies_onto_the_heap(heap: memguard.GuardedHeap) -> None:
    alloc = heap.c_allocator()
    strdup = alloc.function("strdup", native.STRDUP_FN)
    p = strdup(b"hello, world")
    assert heap.block(p).size == 13 and ctypes.string_at(p, 13) == b"hello, world\0"
    e = strdup(b"")
    assert bytes(heap.view(e)) == b"\0"
    alloc.free(p)
    alloc.free(e)
    assert heap.reports == []
    line = line_of_next()
    assert strdup(None) is None
    (report,) = heap.reports
    assert report.kind == "callback-error" and "strdup(NULL)" in report.message
    assert report.stack[0].lineno == line
    with pytest.raises(CallbackError):
        heap.check()


def test_file_line_variants_put_c_file_and_line_first(heap: memguard.GuardedHeap) -> None:
    alloc = heap.c_allocator()
    malloc = alloc.function("malloc_file_line", native.MALLOC_FILE_LINE_FN)
    realloc = alloc.function("realloc_file_line", native.REALLOC_FILE_LINE_FN)
    free = alloc.function("free_file_line", native.FREE_FILE_LINE_FN)
    line = line_of_next()
    p = malloc(24, b"crypto/evp/digest.c", 123)
    q = realloc(p, 40, b"crypto/buffer/buffer.c", 77)
    ctypes.memset(q, 0x41, 41)  # one byte past the end
    free_line = line_of_next()
    free(q, b"crypto/mem.c", 9)
    (report,) = heap.reports
    assert report.kind == "heap-buffer-overflow"
    top, user = report.alloc_stack[0], report.alloc_stack[1]
    assert (top.filename, top.lineno, top.name) == ("crypto/buffer/buffer.c", 77, "<C>")
    assert (user.filename, user.lineno) == (__file__, line + 1)  # no memguard frame between them
    assert (report.stack[0].filename, report.stack[0].lineno) == ("crypto/mem.c", 9)
    assert (report.stack[1].filename, report.stack[1].lineno) == (__file__, free_line)
    assert "crypto/buffer/buffer.c:77 in <C>" in str(report)
    assert heap.block(p).free_stack[0].filename == "crypto/buffer/buffer.c"  # realloc freed it
    # Unknown file, odd lines, NULL pointers.
    r = malloc(8, None, -5)
    assert heap.block(r).alloc_stack[0].filename == "<unknown C file>"
    assert heap.block(r).alloc_stack[0].lineno == 0
    free(None, b"x.c", 1)
    s = realloc(None, 8, b"x.c", 2)  # realloc(NULL, n) is malloc(n)
    assert heap.block(s).alloc_stack[0].lineno == 2
    free(r, b"x.c", 3)
    free(s, b"x.c", 4)
    assert malloc(native.SIZE_MAX, b"x.c", 5) is None and heap.block(s).state == "quarantined"


def test_file_line_findings_in_callbacks_are_deferred(heap: memguard.GuardedHeap) -> None:
    alloc = heap.c_allocator()
    malloc = alloc.function("malloc_file_line", native.MALLOC_FILE_LINE_FN)
    realloc = alloc.function("realloc_file_line", native.REALLOC_FILE_LINE_FN)
    free = alloc.function("free_file_line", native.FREE_FILE_LINE_FN)
    p = malloc(16, b"a.c", 1)
    free(p, b"a.c", 2)
    free(p, b"a.c", 3)  # double free: recorded, not raised through C
    junk = ctypes.create_string_buffer(32)
    assert realloc(ctypes.addressof(junk), 8, b"a.c", 4) is None
    assert [r.kind for r in heap.reports] == ["double-free", "bad-free"]
    assert heap.reports[0].stack[0].filename == "a.c" and heap.reports[0].free_stack[0].lineno == 2


def test_c_site_frames_are_cached_per_site() -> None:
    assert c_site(b"f.c", 10) is c_site(b"f.c", 10)
    assert c_site(b"f.c", 10) is not c_site(b"f.c", 11)
    assert c_site(b"f.c", 10)(lambda a, b: a + b, 2, 3) == 5
    frame = c_site(b"f.c", 10)(sys._getframe, 0)
    assert (frame.f_code.co_filename, frame.f_lineno) == ("f.c", 10)
