"""The ctypes layer: the one package that declares foreign functions.

Everything memguard does to native memory, and every C function it calls, goes through
the names re-exported here.  Every foreign function has ``argtypes`` and ``restype``
set, so a 64-bit pointer is never truncated to a C ``int``.

==========================  ==========================================================
module                      concept
==========================  ==========================================================
:mod:`.allocator`           the platform allocator (``malloc``, ``free``,
                            :func:`owned_buffer`, :func:`address_space` …)
:mod:`.backend`             allocator backends: :class:`Backend` (the raw operations
                            of one allocator), :func:`get_backend` by name
:mod:`.windows`             the Win32 process heap backend (libraries injected)
:mod:`.mimalloc`            the mimalloc backend (``mi_*``, by soname)
:mod:`.jemalloc`            the jemalloc backend (plain or ``je_`` names, by soname)
:mod:`.prototypes`          the C function-pointer prototypes of allocator hooks
:mod:`.mman`                pages and signals for guard pages: ``mmap``, ``mprotect``,
                            ``sigaction``, the faulting address and access
                            (:func:`require_mman`)
:mod:`.loader`              finding a C library and declaring its functions
:mod:`.libz`                zlib: ``z_stream``, :class:`ZlibLib`, :func:`zlib`
:mod:`.libbz2`              libbz2: ``bz_stream``, :class:`Bz2Lib`, :func:`bz2`
:mod:`.liblzma`             liblzma: ``lzma_allocator``, ``lzma_stream``, :func:`lzma`
:mod:`.libexpat`            libexpat: its memory suite, :class:`ExpatLib`, :func:`expat`
:mod:`.libsqlite3`          libsqlite3: ``sqlite3_mem_methods``, :func:`sqlite3`
:mod:`.libzstd`             libzstd: ``ZSTD_customMem``, stream buffers, :func:`zstd`
:mod:`.libxml2`             libxml2: ``xmlMemSetup`` and the parser, :func:`xml2`
:mod:`.liblz4`              liblz4 frames: ``LZ4F_CustomMem``, preferences, :func:`lz4`
:mod:`.libcrypto`           OpenSSL 3: ``CRYPTO_set_mem_functions``, :func:`crypto`
:mod:`.numpy_capi`          NumPy's NEP 49 handler structures and ``PyDataMem_SetHandler``
                            from NumPy's C-API table (:func:`numpy_api`)
:mod:`.trampoline`          the exception-preserving trampolines (the optional C
                            extension ``memguard._trampoline``): :func:`~.trampoline.wrap`
==========================  ==========================================================

The C libraries are opened lazily, on the first call of their loader (:func:`zlib` …),
which caches the declared library for the process; a missing library raises
:class:`memguard.errors.LibraryNotFoundError`.  Importing this package opens none.
"""

from __future__ import annotations

from memguard.native import (
    allocator, backend, jemalloc, libbz2, libcrypto, libexpat, liblz4, liblzma, libsqlite3, libxml2, libz, libzstd,
    mimalloc, mman, numpy_capi, prototypes, trampoline, windows,
)
from memguard.native.allocator import *  # noqa: F403
from memguard.native.backend import *  # noqa: F403
from memguard.native.jemalloc import *  # noqa: F403
from memguard.native.mimalloc import *  # noqa: F403
from memguard.native.mman import *  # noqa: F403
from memguard.native.windows import *  # noqa: F403
from memguard.native.libbz2 import *  # noqa: F403
from memguard.native.libexpat import *  # noqa: F403
from memguard.native.liblzma import *  # noqa: F403
from memguard.native.libsqlite3 import *  # noqa: F403
from memguard.native.libxml2 import *  # noqa: F403
from memguard.native.liblz4 import *  # noqa: F403
from memguard.native.libcrypto import *  # noqa: F403
from memguard.native.libz import *  # noqa: F403
from memguard.native.libzstd import *  # noqa: F403
from memguard.native.numpy_capi import *  # noqa: F403
from memguard.native.loader import load_library
from memguard.native.prototypes import *  # noqa: F403

#: Every public name of the modules above (the platform allocator, the backends, the prototypes, each C
#: library's structures, functions and loader) and ``load_library``.
__all__ = [
    *allocator.__all__,
    *backend.__all__,
    *windows.__all__,
    *mimalloc.__all__,
    *jemalloc.__all__,
    *prototypes.__all__,
    *mman.__all__,
    *libz.__all__,
    *libbz2.__all__,
    *liblzma.__all__,
    *libexpat.__all__,
    *libsqlite3.__all__,
    *libzstd.__all__,
    *libxml2.__all__,
    *liblz4.__all__,
    *libcrypto.__all__,
    *numpy_capi.__all__,
    "load_library",
]
