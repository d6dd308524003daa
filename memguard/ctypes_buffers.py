"""Guarded ctypes buffers on the process-wide heap: :func:`create_string_buffer`.

``memguard.create_string_buffer`` is ``ctypes.create_string_buffer`` whose memory is a
guarded block (see :mod:`memguard.heap.arrays`); ``heap.array(ctype, count)`` is the
same for any ctypes type on a given heap.  Importing this module (``memguard.create_string_buffer``
does) registers the arrays' retainer with the leak reports: a guarded array still
reachable from Python when a test or the program ends is retained, not leaked.
"""

from __future__ import annotations

from typing import Any

from memguard.heap import arrays
from memguard.heap.arrays import string_buffer
from memguard.heap.guarded import GuardedHeap
from memguard.process import install, process_heap
from memguard.reporting.retention import add_retainer

__all__ = ["create_string_buffer"]


def create_string_buffer(init_or_size: bytes | int, size: int | None = None, heap: GuardedHeap | None = None) -> Any:
    """``ctypes.create_string_buffer`` over a guarded block, freed when the buffer is garbage.

    Same signature and semantics as ctypes' (the NUL terminator included: from bytes
    the default size is ``len(init) + 1``), with one addition: ``heap`` (the process-wide
    heap, installed on first use, when ``None``).  A write past the end or before the
    start (``snprintf`` told a larger size) is a ``heap-buffer-overflow`` or
    ``heap-buffer-underflow`` naming the line that made the buffer, and a write through
    a pointer kept after the buffer was collected is a ``heap-use-after-free``.
    """
    if heap is None:
        heap = process_heap() or install()
    elif not isinstance(heap, GuardedHeap):
        raise TypeError(f"heap must be a GuardedHeap or None, got {type(heap).__name__}")
    return string_buffer(heap, init_or_size, size)


add_retainer(arrays.retainer)
