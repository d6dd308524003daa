"""A stand-in for kernel32 and ucrtbase with Windows semantics, over libc, for the windows backend.

Each function is a ctypes callback exposed as a plain foreign function pointer, so the
backend declares its prototype exactly as it does on a real DLL.  Every call is
recorded; wrong flags, a wrong heap handle and a block the function did not make
(a foreign free) are recorded as violations and fail as Windows fails (NULL, FALSE,
``(SIZE_T)-1``), never touching libc with a foreign address.
"""

from __future__ import annotations

import ctypes
import threading
from types import SimpleNamespace
from typing import Any

from memguard import native

HEAP_ZERO_MEMORY = 0x8
HANDLE = 0x5EA0
SIZE_T_MAX = (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - 1

_vp, _sz, _dw, _int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_int


class WindowsStandIn:
    """``kernel32`` (GetProcessHeap, HeapAlloc, HeapReAlloc, HeapFree, HeapSize) and ``crt``
    (``_aligned_malloc(size, alignment)``, ``_aligned_free``) over libc."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.violations: list[str] = []
        #: address -> size, of HeapAlloc/HeapReAlloc blocks still live
        self.heap_blocks: dict[int, int] = {}
        #: address -> size, of _aligned_malloc blocks still live
        self.aligned_blocks: dict[int, int] = {}
        self.fail_next = 0
        self._lock = threading.Lock()
        self._callbacks: list[Any] = []
        self.kernel32 = SimpleNamespace(
            GetProcessHeap=self._expose(ctypes.CFUNCTYPE(_vp), self.GetProcessHeap),
            HeapAlloc=self._expose(ctypes.CFUNCTYPE(_vp, _vp, _dw, _sz), self.HeapAlloc),
            HeapReAlloc=self._expose(ctypes.CFUNCTYPE(_vp, _vp, _dw, _vp, _sz), self.HeapReAlloc),
            HeapFree=self._expose(ctypes.CFUNCTYPE(_int, _vp, _dw, _vp), self.HeapFree),
            HeapSize=self._expose(ctypes.CFUNCTYPE(_sz, _vp, _dw, _vp), self.HeapSize),
        )
        self.crt = SimpleNamespace(
            _aligned_malloc=self._expose(ctypes.CFUNCTYPE(_vp, _sz, _sz), self._aligned_malloc),
            _aligned_free=self._expose(ctypes.CFUNCTYPE(None, _vp), self._aligned_free),
        )

    def _expose(self, proto: Any, body: Any) -> Any:
        callback = proto(body)
        self._callbacks.append(callback)
        # A bare function pointer with no prototype: the backend must declare it.
        return ctypes.CFUNCTYPE(None)(ctypes.cast(callback, ctypes.c_void_p).value)

    def names(self) -> list[str]:
        """The functions called, in order."""
        return [c[0] for c in self.calls]

    def _record(self, *call: Any) -> None:
        with self._lock:
            self.calls.append(call)

    def _bad(self, what: str) -> None:
        with self._lock:
            self.violations.append(what)

    def _heap_ok(self, name: str, heap: int | None, flags: int, allowed: int) -> bool:
        if heap != HANDLE:
            self._bad(f"{name}: wrong heap handle {heap!r}")
            return False
        if flags & ~allowed:
            self._bad(f"{name}: flags 0x{flags:x} not allowed")
            return False
        return True

    def _failing(self) -> bool:
        with self._lock:
            if self.fail_next:
                self.fail_next -= 1
                return True
            return False

    def GetProcessHeap(self) -> int:  # noqa: N802
        self._record("GetProcessHeap")
        return HANDLE

    def HeapAlloc(self, heap: int | None, flags: int, size: int) -> int | None:  # noqa: N802
        self._record("HeapAlloc", flags, size)
        if not self._heap_ok("HeapAlloc", heap, flags, HEAP_ZERO_MEMORY) or self._failing():
            return None
        p = native.raw_calloc(1, size) if flags & HEAP_ZERO_MEMORY else native.raw_malloc(size)
        if p:
            with self._lock:
                self.heap_blocks[p] = size
        return p

    def HeapReAlloc(self, heap: int | None, flags: int, p: int | None, size: int) -> int | None:  # noqa: N802
        self._record("HeapReAlloc", flags, p, size)
        if not self._heap_ok("HeapReAlloc", heap, flags, 0):
            return None
        if p not in self.heap_blocks:
            self._bad(f"HeapReAlloc of a foreign block {p!r}")
            return None
        if self._failing():
            return None
        q = native.raw_realloc(p, size)
        if q:
            with self._lock:
                del self.heap_blocks[p]
                self.heap_blocks[q] = size
        return q

    def HeapFree(self, heap: int | None, flags: int, p: int | None) -> int:  # noqa: N802
        self._record("HeapFree", flags, p)
        if not self._heap_ok("HeapFree", heap, flags, 0):
            return 0
        with self._lock:
            known = self.heap_blocks.pop(p, None) if p else None  # type: ignore[arg-type]
        if known is None:
            self._bad(f"HeapFree of a foreign block {p!r}")
            return 0
        native.raw_free(p)  # type: ignore[arg-type]
        return 1

    def HeapSize(self, heap: int | None, flags: int, p: int | None) -> int:  # noqa: N802
        self._record("HeapSize", flags, p)
        if not self._heap_ok("HeapSize", heap, flags, 0) or p not in self.heap_blocks:
            self._bad(f"HeapSize of a foreign block {p!r}")
            return SIZE_T_MAX
        return self.heap_blocks[p]  # type: ignore[index]

    def _aligned_malloc(self, size: int, alignment: int) -> int | None:
        self._record("_aligned_malloc", size, alignment)
        if alignment == 0 or alignment & (alignment - 1):
            self._bad(f"_aligned_malloc: alignment {alignment} is not a power of two")
            return None
        if self._failing():
            return None
        p = native.raw_aligned_alloc(max(alignment, 16), size)
        if p:
            with self._lock:
                self.aligned_blocks[p] = size
        return p

    def _aligned_free(self, p: int | None) -> None:
        self._record("_aligned_free", p)
        if not p:
            return
        with self._lock:
            known = self.aligned_blocks.pop(p, None)
        if known is None:
            self._bad(f"_aligned_free of a foreign block 0x{p:x}")
            return
        native.aligned_free(p)
