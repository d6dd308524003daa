"""Stack capture keeps no frame: a function's locals die when it returns, whatever it called.

A cache that held the last allocating frame kept that frame's locals (and, through
``f_back``, its callers') alive after the function returned: false leaks in the user's
code, wrong refcounts in NumPy's own tests.  Each case below calls one memguard entry
point from a helper holding a local object, and requires the object to be gone the
moment the helper returns (no collection: reference counting alone frees it).
"""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Callable

import pytest

from memguard import GuardedHeap, MemPool, ObjectPool, RefAudit, native
from memguard.clibs import libz
from memguard.errors import LibraryNotFoundError
from memguard.heap.c_allocator import allocator_for


class Local:
    """An object only a helper's frame refers to."""


def _fast_pair(heap: GuardedHeap) -> None:
    heap.free(heap.malloc(64))


def _large_pair(heap: GuardedHeap) -> None:
    heap.free(heap.malloc(1 << 20))


def _calloc_realloc_memalign(heap: GuardedHeap) -> None:
    p = heap.realloc(heap.calloc(4, 8), 200)
    heap.free(p)
    heap.free(heap.memalign(256, 100))


def _view_and_check(heap: GuardedHeap) -> None:
    p = heap.malloc(40)
    heap.view(p)[:4] = b"abcd"
    heap.free(p)
    assert heap.check() == []


def _bad_free(heap: GuardedHeap) -> None:
    p = heap.malloc(32)
    heap.free(p + 8)  # reported (on_error="report"), with this stack
    heap.free(p)


def _mempool(heap: GuardedHeap) -> None:
    pool = MemPool(heap)
    chunk = heap.malloc(256)
    pool.add_chunk(chunk)
    pool.free(pool.alloc(chunk + 16, 32))
    pool.destroy()
    heap.free(chunk)


def _objpool(heap: GuardedHeap) -> None:
    pool = ObjectPool(24, heap=heap)
    pool.put(pool.get())
    pool.destroy()


def _refaudit(heap: GuardedHeap) -> None:
    audit = RefAudit()
    ref = audit.track(Local())
    ref.inc()
    ref.dec()
    ref.dec()
    audit.close()


def _c_library(heap: GuardedHeap) -> None:
    try:
        native.zlib()
    except LibraryNotFoundError:
        pytest.skip("zlib is not installed")
    data = b"memguard " * 100
    assert libz.inflate(libz.deflate(data, allocator_for(heap)), allocator_for(heap)) == data


CASES: dict[str, Callable[[GuardedHeap], None]] = {
    "fast malloc and free": _fast_pair,
    "large malloc and free": _large_pair,
    "calloc, realloc, memalign": _calloc_realloc_memalign,
    "view and check": _view_and_check,
    "a reported bad free": _bad_free,
    "MemPool alloc and free": _mempool,
    "ObjectPool get and put": _objpool,
    "RefAudit track, inc, dec": _refaudit,
    "a C library's callbacks": _c_library,
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_local_dies_when_its_function_returns(name: str) -> None:
    heap = GuardedHeap(on_error="report", quarantine_bytes=1 << 16)
    operation = CASES[name]
    refs: list[weakref.ref[Local]] = []

    def helper() -> None:
        local = Local()
        refs.append(weakref.ref(local))
        operation(heap)
        operation(heap)  # the second time from the caches

    gc.disable()  # the object must die of its reference count alone
    try:
        helper()
        (ref,) = refs
        assert ref() is None, f"{name}: a local of the helper outlived it"
    finally:
        gc.enable()
        heap.close(check=False)


def test_the_caller_of_a_loop_does_not_outlive_it() -> None:
    """The frame below the allocating one (the loop's caller) is not kept either."""
    heap = GuardedHeap()
    refs: list[weakref.ref[Local]] = []

    def loop() -> None:
        for _ in range(100):
            heap.free(heap.malloc(16))

    def caller() -> None:
        local = Local()
        refs.append(weakref.ref(local))
        loop()

    gc.disable()
    try:
        caller()
        assert refs[0]() is None
    finally:
        gc.enable()
        heap.close()


def test_a_new_frame_at_a_dead_frames_address_gets_its_own_stack() -> None:
    """Frames are freed and their memory reused at once: a stack must come from the
    frames themselves, never from an address that matched a dead frame's."""
    heap = GuardedHeap()

    def alloc() -> int:
        return heap.malloc(8)

    def middle() -> int:
        return alloc()

    def from_a() -> int:
        return middle()

    def from_b() -> int:
        return middle()

    def callers(p: int) -> list[str]:
        return [f.name.rsplit(".", 1)[-1] for f in heap.block(p).alloc_stack[:3]]

    for _ in range(200):
        a = from_a()
        b = from_b()
        assert callers(a) == ["alloc", "middle", "from_a"]
        assert callers(b) == ["alloc", "middle", "from_b"]
        heap.free(a)
        heap.free(b)
    heap.close()


def test_the_stack_table_refers_to_no_frame() -> None:
    heap = GuardedHeap()

    def helper() -> None:
        heap.free(heap.malloc(64))

    helper()
    frame = sys._getframe()
    assert not any(r is frame or type(r).__name__ == "frame" for r in gc.get_referents(*gc.get_referents(heap)))
    heap.close()


def test_captures_that_differ_only_in_frames_never_shown_share_one_stack_id() -> None:
    from memguard.stacks import StackTable

    table = StackTable(1, through=2)  # shows one frame, walks three

    def site() -> int:
        return table.here(0)

    def caller_a() -> int:
        return site()

    def caller_b() -> int:
        return site()

    a, b = caller_a(), caller_b()
    assert table.get(a) == table.get(b) and len(table.get(a)) == 1
    assert a == b
    assert caller_a() == a  # the cheap lookup finds it again
