"""Allocator backends: the raw native operations a heap obtains and releases memory with.

A :class:`Backend` is one value holding the bare foreign operations of one native
allocator (``malloc``, ``calloc``, ``realloc``, ``free``, aligned allocation and its
release, the usable size when the allocator knows it), each returning ``None`` (or 0) on
failure as the C function does.  :func:`get_backend` turns a name into the process's
backend of that name, loaded once:

==============  ===============================================================
name            allocator
==============  ===============================================================
``libc``        the platform allocator through ``ctypes.CDLL(None)``, so an
                allocator preloaded with ``LD_PRELOAD`` is the one used
``windows``     the Win32 process heap and the CRT's ``_aligned_malloc``
                (:mod:`memguard.native.windows`)
``mimalloc``    Microsoft's mimalloc, ``libmimalloc.so.2`` (:mod:`.mimalloc`)
``jemalloc``    jemalloc, ``libjemalloc.so.2`` (:mod:`.jemalloc`)
==============  ===============================================================

A backend that cannot be loaded raises
:class:`~memguard.errors.BackendUnavailableError` naming its library and the Debian
package that installs it; memguard never falls back to another allocator.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from dataclasses import dataclass
from typing import Any, Callable, Final

from memguard.errors import BackendError
from memguard.native.loader import cached, declare, require

__all__ = ["Backend", "BACKEND_NAMES", "DEFAULT_BACKEND", "get_backend", "libc_backend", "posix_backend", "process_symbols"]

_vp = ctypes.c_void_p
_sz = ctypes.c_size_t

#: Every backend name :func:`get_backend` knows.
BACKEND_NAMES: Final = ("libc", "windows", "mimalloc", "jemalloc")
#: The platform's own allocator: ``windows`` on Windows, ``libc`` elsewhere.
DEFAULT_BACKEND: Final = "windows" if sys.platform == "win32" else "libc"


@dataclass(frozen=True, eq=False)
class Backend:
    """The raw operations of one native allocator.

    Every operation is the bare foreign call (or a thin wrapper giving it C semantics):
    allocations return the address, or ``None``/0 on failure; nothing here raises for an
    allocator's NULL.  A block must be released by the backend that made it, with the
    release that matches its allocation (``free`` for ``malloc``/``calloc``/``realloc``,
    ``aligned_free`` for ``aligned_alloc``).

    :ivar name: the backend's name (``"libc"``, ``"mimalloc"`` …).
    :ivar library: the library its functions come from, for people.
    :ivar malloc: ``malloc(size)``.
    :ivar calloc: ``calloc(count, size)``, zeroed.
    :ivar realloc: ``realloc(address, size)``; on failure the old block is untouched.
    :ivar free: ``free(address)``.
    :ivar aligned_alloc: ``aligned_alloc(alignment, size)`` for a power-of-two alignment.
    :ivar aligned_free: releases a block from ``aligned_alloc``.
    :ivar usable_size: ``usable_size(address)`` of a ``malloc`` block, or ``None`` when
        the allocator cannot tell.
    """

    name: str
    library: str
    malloc: Callable[[int], int | None]
    calloc: Callable[[int, int], int | None]
    realloc: Callable[[int | None, int], int | None]
    free: Callable[[int], None]
    aligned_alloc: Callable[[int, int], int | None]
    aligned_free: Callable[[int], None]
    usable_size: Callable[[int], int] | None = None

    def __repr__(self) -> str:
        return f"<Backend {self.name!r} ({self.library})>"


def _posix_aligned(posix_memalign: Any) -> Callable[[int, int], int | None]:
    """``aligned_alloc(alignment, size)`` over a declared ``posix_memalign``."""

    def aligned_alloc(alignment: int, size: int) -> int | None:
        out = _vp()
        if posix_memalign(ctypes.byref(out), alignment, size or 1) != 0:
            return None
        return out.value

    return aligned_alloc


def posix_backend(lib: Any, name: str, library: str, prefix: str = "") -> Backend:
    """A backend over a library with the C allocator's functions (``prefix`` + ``malloc`` …).

    ``posix_memalign`` makes the aligned blocks and ``free`` releases them; the usable
    size is ``malloc_usable_size`` (or macOS's ``malloc_size``) when the library has it.
    """
    what = library
    free = require(lib, what, prefix + "free", None, _vp)
    usable = declare(lib, prefix + "malloc_usable_size", _sz, _vp) or declare(lib, prefix + "malloc_size", _sz, _vp)
    return Backend(
        name=name,
        library=library,
        malloc=require(lib, what, prefix + "malloc", _vp, _sz),
        calloc=require(lib, what, prefix + "calloc", _vp, _sz, _sz),
        realloc=require(lib, what, prefix + "realloc", _vp, _vp, _sz),
        free=free,
        aligned_alloc=_posix_aligned(require(lib, what, prefix + "posix_memalign", ctypes.c_int, ctypes.POINTER(_vp), _sz, _sz)),
        aligned_free=free,
        usable_size=usable,
    )


@functools.lru_cache(maxsize=None)
def process_symbols() -> ctypes.CDLL:
    """The process's global symbol table, ``ctypes.CDLL(None)`` (opened once; no library is loaded)."""
    return ctypes.CDLL(None)


def libc_backend() -> Backend:
    """The platform allocator through the process's global symbols (``ctypes.CDLL(None)``).

    No library is opened: an allocator preloaded with ``LD_PRELOAD`` (AddressSanitizer's
    runtime, jemalloc, tcmalloc) is the one this backend calls, so the two compose.
    """
    return posix_backend(process_symbols(), "libc", "the process's malloc (ctypes.CDLL(None))")


def _load(name: str) -> Backend:
    if name == "libc":
        return libc_backend()
    if name == "windows":
        from memguard.native import windows

        return windows.load()
    if name == "mimalloc":
        from memguard.native import mimalloc

        return mimalloc.load()
    from memguard.native import jemalloc

    return jemalloc.load()


def get_backend(backend: str | Backend | None = None) -> Backend:
    """The backend called ``backend`` (loaded once per process), or ``backend`` itself.

    ``None`` means :data:`DEFAULT_BACKEND`.  Raises
    :class:`~memguard.errors.BackendError` for a name memguard does not know and
    :class:`~memguard.errors.BackendUnavailableError` (naming the library and the
    package to install) for one whose library this process cannot load.
    """
    if isinstance(backend, Backend):
        return backend
    if backend is None:
        backend = DEFAULT_BACKEND
    if not isinstance(backend, str):
        raise BackendError(
            f"backend must be a name ({', '.join(BACKEND_NAMES)}) or a memguard.native.Backend, "
            f"got {type(backend).__name__}",
            repr(backend), BACKEND_NAMES,
        )
    name = backend.strip().lower()
    if name not in BACKEND_NAMES:
        raise BackendError(
            f"unknown allocator backend {backend!r}; known backends: {', '.join(BACKEND_NAMES)}",
            backend, BACKEND_NAMES,
        )
    return cached(f"backend:{name}", lambda: _load(name))
