"""The C function-pointer prototypes of the allocator hooks C libraries take.

Each is a ``ctypes.CFUNCTYPE`` class: an instance wraps a Python callable as a C
function pointer (see :class:`memguard.CAllocator`), and a structure field declared
with the class holds one.  ``CFUNCTYPE`` caches its classes by signature, so two equal
prototypes are the same type and a callback of one can be stored in a field declared
with the other.
"""

from __future__ import annotations

import ctypes

__all__ = [
    "MALLOC_FN",
    "CALLOC_FN",
    "REALLOC_FN",
    "FREE_FN",
    "SIZE_FN",
    "ZALLOC_FN",
    "OPAQUE_FREE_FN",
    "BZALLOC_FN",
    "LZMA_ALLOC_FN",
    "SQLITE_MALLOC_FN",
    "SQLITE_REALLOC_FN",
    "SQLITE_SIZE_FN",
    "SQLITE_ROUNDUP_FN",
    "SQLITE_INIT_FN",
    "SQLITE_SHUTDOWN_FN",
    "CTX_MALLOC_FN",
    "CTX_CALLOC_FN",
    "CTX_REALLOC_FN",
    "CTX_FREE_FN",
    "CTX_SIZED_FREE_FN",
    "STRDUP_FN",
    "MALLOC_FILE_LINE_FN",
    "REALLOC_FILE_LINE_FN",
    "FREE_FILE_LINE_FN",
]

_vp = ctypes.c_void_p
_sz = ctypes.c_size_t
_c_uint = ctypes.c_uint
_c_int = ctypes.c_int

#: ``void *malloc(size_t size)``
MALLOC_FN = ctypes.CFUNCTYPE(_vp, _sz)
#: ``void *calloc(size_t count, size_t size)``
CALLOC_FN = ctypes.CFUNCTYPE(_vp, _sz, _sz)
#: ``void *realloc(void *ptr, size_t size)``
REALLOC_FN = ctypes.CFUNCTYPE(_vp, _vp, _sz)
#: ``void free(void *ptr)``
FREE_FN = ctypes.CFUNCTYPE(None, _vp)
#: ``size_t usable_size(void *ptr)``
SIZE_FN = ctypes.CFUNCTYPE(_sz, _vp)
#: zlib's ``alloc_func``: ``voidpf (*)(voidpf opaque, uInt items, uInt size)``
ZALLOC_FN = ctypes.CFUNCTYPE(_vp, _vp, _c_uint, _c_uint)
#: zlib's ``free_func``, bzip2's ``bzfree`` and ``lzma_allocator.free``: ``void (*)(void *opaque, void *ptr)``
OPAQUE_FREE_FN = ctypes.CFUNCTYPE(None, _vp, _vp)
#: bzip2's ``bzalloc``: ``void *(*)(void *opaque, int items, int size)``
BZALLOC_FN = ctypes.CFUNCTYPE(_vp, _vp, _c_int, _c_int)
#: ``lzma_allocator.alloc``: ``void *(*)(void *opaque, size_t nmemb, size_t size)``
LZMA_ALLOC_FN = ctypes.CFUNCTYPE(_vp, _vp, _sz, _sz)
#: ``sqlite3_mem_methods.xMalloc``: ``void *(*)(int)``
SQLITE_MALLOC_FN = ctypes.CFUNCTYPE(_vp, _c_int)
#: ``sqlite3_mem_methods.xRealloc``: ``void *(*)(void *, int)``
SQLITE_REALLOC_FN = ctypes.CFUNCTYPE(_vp, _vp, _c_int)
#: ``sqlite3_mem_methods.xSize``: ``int (*)(void *)``
SQLITE_SIZE_FN = ctypes.CFUNCTYPE(_c_int, _vp)
#: ``sqlite3_mem_methods.xRoundup``: ``int (*)(int)``
SQLITE_ROUNDUP_FN = ctypes.CFUNCTYPE(_c_int, _c_int)
#: ``sqlite3_mem_methods.xInit``: ``int (*)(void *)``
SQLITE_INIT_FN = ctypes.CFUNCTYPE(_c_int, _vp)
#: ``sqlite3_mem_methods.xShutdown``: ``void (*)(void *)``
SQLITE_SHUTDOWN_FN = ctypes.CFUNCTYPE(None, _vp)
#: Context-first ``malloc`` (NumPy's ``PyDataMem_Handler``, zstd's ``ZSTD_allocFunction``): ``void *(*)(void *ctx, size_t size)``
CTX_MALLOC_FN = ctypes.CFUNCTYPE(_vp, _vp, _sz)
#: Context-first ``calloc``: ``void *(*)(void *ctx, size_t count, size_t size)``
CTX_CALLOC_FN = ctypes.CFUNCTYPE(_vp, _vp, _sz, _sz)
#: Context-first ``realloc``: ``void *(*)(void *ctx, void *ptr, size_t size)``
CTX_REALLOC_FN = ctypes.CFUNCTYPE(_vp, _vp, _vp, _sz)
#: Context-first ``free`` (zstd's ``ZSTD_freeFunction``): ``void (*)(void *ctx, void *ptr)``
CTX_FREE_FN = ctypes.CFUNCTYPE(None, _vp, _vp)
#: Context-first sized ``free`` (NumPy's): ``void (*)(void *ctx, void *ptr, size_t size)``
CTX_SIZED_FREE_FN = ctypes.CFUNCTYPE(None, _vp, _vp, _sz)
#: ``strdup`` (libxml2's ``xmlStrdupFunc``): ``char *(*)(const char *s)``
STRDUP_FN = ctypes.CFUNCTYPE(_vp, ctypes.c_char_p)
#: OpenSSL's ``CRYPTO_malloc_fn``: ``void *(*)(size_t size, const char *file, int line)``
MALLOC_FILE_LINE_FN = ctypes.CFUNCTYPE(_vp, _sz, ctypes.c_char_p, _c_int)
#: OpenSSL's ``CRYPTO_realloc_fn``: ``void *(*)(void *ptr, size_t size, const char *file, int line)``
REALLOC_FILE_LINE_FN = ctypes.CFUNCTYPE(_vp, _vp, _sz, ctypes.c_char_p, _c_int)
#: OpenSSL's ``CRYPTO_free_fn``: ``void (*)(void *ptr, const char *file, int line)``
FREE_FILE_LINE_FN = ctypes.CFUNCTYPE(None, _vp, ctypes.c_char_p, _c_int)
