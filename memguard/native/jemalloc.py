"""The jemalloc backend: jemalloc opened by its soname (plain or ``je_`` prefixed functions).

Debian's ``libjemalloc2`` exports the C names (``malloc``, ``free`` …); a jemalloc built
with ``--with-jemalloc-prefix=je_`` exports ``je_malloc`` … Both are found through the
library's own handle, so the functions are jemalloc's even when the process's ``malloc``
is glibc's; ``mallocx`` (jemalloc's own API) proves the library is jemalloc.

glibc reserves a little static TLS for libraries opened after start-up, and jemalloc
uses initial-exec TLS: opening it with ``dlopen`` then fails with "cannot allocate
memory in static TLS block".  Either start the process with
``GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384`` (``memguard run -o
backend=jemalloc`` sets it and starts itself again) or preload jemalloc with
``LD_PRELOAD``.
"""

from __future__ import annotations

import ctypes
from typing import Any, Final

from memguard.errors import BackendUnavailableError
from memguard.native.backend import Backend, posix_backend

__all__ = ["jemalloc_backend"]

#: The file names tried, in order.
SONAMES: Final = ("libjemalloc.so.2", "libjemalloc.so", "libjemalloc.2.dylib", "jemalloc.dll")
#: The Debian package that installs the library.
PACKAGE: Final = "libjemalloc2"
#: The glibc tunable that leaves room in the static TLS block for jemalloc.
TLS_TUNABLE: Final = "glibc.rtld.optional_static_tls=16384"


def jemalloc_backend(lib: Any, library: str = SONAMES[0]) -> Backend:
    """The backend over an opened jemalloc, ``je_``-prefixed functions first."""
    for prefix in ("je_", ""):
        if getattr(lib, prefix + "mallocx", None) is not None:
            return posix_backend(lib, "jemalloc", library, prefix)
    raise BackendUnavailableError(
        f"{library} is not jemalloc (it has neither mallocx nor je_mallocx); install jemalloc with: "
        f"apt-get install {PACKAGE}",
        "jemalloc", library, PACKAGE,
    )


def load() -> Backend:
    """Open jemalloc by soname; :class:`BackendUnavailableError` naming the library, the
    package and, for the static TLS failure, both ways round it."""
    errors: list[str] = []
    for soname in SONAMES:
        try:
            lib = ctypes.CDLL(soname)
        except OSError as exc:
            if "static TLS" in str(exc):
                raise BackendUnavailableError(
                    f"the jemalloc backend cannot load {soname} after start-up ({exc}): start the "
                    f"process with GLIBC_TUNABLES={TLS_TUNABLE} (memguard run -o backend=jemalloc "
                    f"does this), or preload it with LD_PRELOAD={soname}",
                    "jemalloc", soname, PACKAGE,
                ) from None
            errors.append(str(exc))
            continue
        return jemalloc_backend(lib, soname)
    raise BackendUnavailableError(
        f"the jemalloc backend needs {SONAMES[0]}, which this process cannot load "
        f"({errors[0] if errors else 'not found'}); install it with: apt-get install {PACKAGE}",
        "jemalloc", SONAMES[0], PACKAGE,
    )
