"""The mimalloc backend: Microsoft's mimalloc, opened by its soname (``mi_*`` functions).

mimalloc's functions carry the ``mi_`` prefix, so opening the library replaces nothing:
the process's own ``malloc`` stays as it was and only memguard's native memory comes
from mimalloc.  Debian installs it with the ``libmimalloc2.0`` package.
"""

from __future__ import annotations

import ctypes
from typing import Any, Final

from memguard.errors import BackendUnavailableError
from memguard.native.backend import Backend
from memguard.native.loader import declare, require

__all__ = ["mimalloc_backend"]

#: The file names tried, in order.
SONAMES: Final = ("libmimalloc.so.2", "libmimalloc.so.2.0", "libmimalloc.so", "libmimalloc.dylib", "mimalloc.dll")
#: The Debian package that installs the library.
PACKAGE: Final = "libmimalloc2.0"

_vp = ctypes.c_void_p
_sz = ctypes.c_size_t


def mimalloc_backend(lib: Any, library: str = SONAMES[0]) -> Backend:
    """The backend over an opened mimalloc (``mi_malloc`` … ``mi_malloc_aligned``)."""
    free = require(lib, library, "mi_free", None, _vp)
    malloc_aligned = require(lib, library, "mi_malloc_aligned", _vp, _sz, _sz)

    def aligned_alloc(alignment: int, size: int) -> int | None:
        return malloc_aligned(size or 1, alignment)  # type: ignore[no-any-return]

    return Backend(
        name="mimalloc",
        library=library,
        malloc=require(lib, library, "mi_malloc", _vp, _sz),
        calloc=require(lib, library, "mi_calloc", _vp, _sz, _sz),
        realloc=require(lib, library, "mi_realloc", _vp, _vp, _sz),
        free=free,
        aligned_alloc=aligned_alloc,
        aligned_free=free,
        usable_size=declare(lib, "mi_usable_size", _sz, _vp),
    )


def load() -> Backend:
    """Open mimalloc by soname; :class:`BackendUnavailableError` naming the library and package."""
    errors: list[str] = []
    for soname in SONAMES:
        try:
            lib = ctypes.CDLL(soname)
        except OSError as exc:
            errors.append(str(exc))
            continue
        return mimalloc_backend(lib, soname)
    raise BackendUnavailableError(
        f"the mimalloc backend needs {SONAMES[0]}, which this process cannot load "
        f"({errors[0] if errors else 'not found'}); install it with: apt-get install {PACKAGE}",
        "mimalloc", SONAMES[0], PACKAGE,
    )
