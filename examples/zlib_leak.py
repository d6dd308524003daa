"""zlib on the guarded heap: a stream whose deflateEnd is forgotten is reported as a leak.

Run:  python examples/zlib_leak.py

zlib allocates its state, window and hash tables through ``z_stream.zalloc``; with
memguard's C-callable allocator in that field, every one of those blocks is a guarded
block that records the Python line that called into zlib.  Leaving out ``deflateEnd``
leaves them live, and the leak report points at the ``deflateInit2_`` call below.
Exit status 1 when leaks are found.
"""

from __future__ import annotations

import ctypes
import sys

import memguard
from memguard import clibs, native


def compress_but_forget_deflate_end(heap: memguard.GuardedHeap, data: bytes) -> bytes:
    """Compress ``data`` with zlib on the guarded heap, never calling deflateEnd."""
    z = native.zlib()
    strm = clibs.zlib_stream(heap)  # zalloc/zfree/opaque -> the guarded heap
    rc = z.deflateInit2_(ctypes.byref(strm), 6, z.Z_DEFLATED, 15, 8, 0, z.version, ctypes.sizeof(strm))
    assert rc == z.Z_OK, rc
    out = ctypes.create_string_buffer(len(data) + 1024)
    strm.next_in = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    strm.avail_in = len(data)
    strm.next_out = ctypes.addressof(out)
    strm.avail_out = len(out)
    assert z.deflate(ctypes.byref(strm), z.Z_FINISH) == z.Z_STREAM_END
    return out.raw[: strm.total_out]  # BUG: z.deflateEnd(ctypes.byref(strm)) is missing


def main() -> int:
    """Run the leaky compression and print memguard's leak report."""
    heap = memguard.GuardedHeap(on_error="report")
    mark = heap.snapshot()
    compressed = compress_but_forget_deflate_end(heap, b"memguard " * 100_000)
    print(f"compressed 900000 bytes to {len(compressed)}")
    leaks = heap.leaks(since=mark)
    if leaks:
        print(memguard.format_leaks(leaks))
    heap.check()
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
