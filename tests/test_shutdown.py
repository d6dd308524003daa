"""No crash at exit: a heap never releases memory that a block still occupies.

A C object (a NumPy array on the heap, a library's context) may still hold blocks when
the heap becomes garbage: at interpreter shutdown, or in a garbage cycle collected by
``gc.collect()``.  The collector finalizes the objects it collects in no particular
order, so the owner of an arena's memory may be finalized before the C object whose
destructor frees its block through the heap's C callbacks.  Each variant runs in its own
interpreter, which must exit cleanly (a read of released memory is a SIGSEGV).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import memguard
from memguard.errors import HeapClosedError

#: A "C object": it holds blocks taken through the heap's C callbacks and frees them
#: through the C ``free`` callback when it is finalized (as a C destructor would).  The
#: blocks are taken before the object exists, so the collector meets the heap's memory
#: first (it finalizes the oldest objects first).
SCRIPT = textwrap.dedent(
    """
    import ctypes, gc, sys
    import memguard

    size, where = int(sys.argv[1]), sys.argv[2]
    heap = memguard.install() if where == "process" else memguard.GuardedHeap(on_error="report")
    alloc = heap.c_allocator()
    free_fn = ctypes.cast(alloc.free, ctypes.c_void_p).value
    heap.free(heap.malloc(size))  # the arena exists before the C object
    blocks = [alloc.malloc(size) for _ in range(4)]

    class CObject:
        def __init__(self, allocator, blocks):
            self.allocator = allocator  # keeps the callbacks alive, as a C library's context does
            self.c_free = memguard.native.FREE_FN(free_fn)
            self.blocks = blocks

        def __del__(self):
            for p in self.blocks:
                self.c_free(p)

    obj = CObject(alloc, blocks)
    del alloc, blocks
    heap.holder = obj  # a garbage cycle: heap -> C object -> callbacks -> heap
    del heap, obj
    if where == "collect":
        gc.collect()
        print("collected", flush=True)
    print("done", flush=True)
    """
)


def run_script(tmp_path: os.PathLike[str], *args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    path = os.path.join(tmp_path, "cobject.py")
    with open(path, "w") as f:
        f.write(SCRIPT)
    env = dict(os.environ, MEMGUARD_OPTIONS="leak_check=0")
    return subprocess.run(
        [sys.executable, *launcher, path, *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize("size", [64, 4096, 1 << 20], ids=["small", "largest-small", "large"])
@pytest.mark.parametrize("where", ["collect", "shutdown"])
def test_a_c_object_freeing_into_a_collected_heap_does_not_crash(tmp_path: os.PathLike[str], size: int, where: str) -> None:
    proc = run_script(tmp_path, str(size), where)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout.split() == (["collected", "done"] if where == "collect" else ["done"])
    assert "Exception ignored" not in proc.stderr, proc.stderr


def test_the_process_heap_with_c_held_blocks_at_shutdown(tmp_path: os.PathLike[str]) -> None:
    proc = run_script(tmp_path, "64", "process", launcher=("-m", "memguard", "run"))
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "Exception ignored" not in proc.stderr, proc.stderr


def occupied(heap: memguard.GuardedHeap) -> set[int]:
    return set(heap._mapped)


def test_close_keeps_the_memory_of_live_blocks_and_releases_the_rest() -> None:
    heap = memguard.GuardedHeap(on_error="report")
    kept = heap.malloc(64)              # never freed: a C object may still use it
    gone = heap.malloc(200)             # another size class: its own arena
    big_live = heap.malloc(100_000)
    big_freed = heap.malloc(100_000)
    for p in (gone, big_freed):
        heap.free(p)
    heap.close(check=False)
    # The arena of `kept` and the large block `big_live` stay allocated (checked before
    # their memory is read), the rest went back to the allocator.
    assert len(occupied(heap)) == 2
    contents = (memguard.native.string_at(kept, 64), memguard.native.string_at(big_live, 16))
    assert contents == (b"\xcd" * 64, b"\xcd" * 16)
    with pytest.raises(HeapClosedError):
        heap.free(kept)                 # a free after close is refused, reading nothing
