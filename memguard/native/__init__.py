"""The ctypes layer: the one module that declares foreign functions.

Everything memguard does to native memory goes through the names defined here.
Every foreign function has ``argtypes`` and ``restype`` set, so a 64-bit pointer
is never truncated to a C ``int``.

On POSIX the allocator functions are resolved through ``ctypes.CDLL(None)``, the
process's global symbol table, so an allocator preloaded with ``LD_PRELOAD``
(AddressSanitizer's runtime, jemalloc, tcmalloc) is the one memguard uses and
the two compose.  On Windows the process heap (``HeapAlloc`` and friends) and the
CRT's ``_aligned_malloc``/``_aligned_free`` are used.

Public functions return plain ``int`` addresses and raise :class:`MemoryError`
naming the size when the native allocator returns NULL.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Final

__all__ = [
    "PLATFORM",
    "POINTER_SIZE",
    "malloc",
    "calloc",
    "realloc",
    "free",
    "aligned_alloc",
    "aligned_free",
    "usable_size",
    "memset",
    "memmove",
    "memcmp",
    "owned_buffer",
    "address_space",
    "string_at",
    "raw_malloc",
    "raw_free",
]

POINTER_SIZE: Final = ctypes.sizeof(ctypes.c_void_p)
#: Largest size any native allocator can be asked for.
SIZE_MAX: Final = (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - 1

_vp = ctypes.c_void_p
_sz = ctypes.c_size_t


def _declare(lib: ctypes.CDLL, name: str, restype: object, *argtypes: object) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """Look up ``name`` in ``lib`` and set its prototype; ``None`` when absent."""
    fn = getattr(lib, name, None)
    if fn is None:
        return None
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    PLATFORM: Final = "windows"
    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _crt = ctypes.CDLL("ucrtbase")
    _GetProcessHeap = _declare(_kernel32, "GetProcessHeap", _vp)
    _HeapAlloc = _declare(_kernel32, "HeapAlloc", _vp, _vp, ctypes.c_uint32, _sz)
    _HeapReAlloc = _declare(_kernel32, "HeapReAlloc", _vp, _vp, ctypes.c_uint32, _vp, _sz)
    _HeapFree = _declare(_kernel32, "HeapFree", ctypes.c_int, _vp, ctypes.c_uint32, _vp)
    _HeapSize = _declare(_kernel32, "HeapSize", _sz, _vp, ctypes.c_uint32, _vp)
    _aligned_malloc = _declare(_crt, "_aligned_malloc", _vp, _sz, _sz)
    _aligned_free_fn = _declare(_crt, "_aligned_free", None, _vp)
    _memcmp = _declare(_crt, "memcmp", ctypes.c_int, _vp, _vp, _sz)
    _HEAP_ZERO_MEMORY = 0x00000008
    _heap = _GetProcessHeap()

    def raw_malloc(size: int) -> int | None:
        """Allocate ``size`` bytes; ``None`` on failure."""
        return _HeapAlloc(_heap, 0, size or 1)

    def raw_calloc(count: int, size: int) -> int | None:
        """Allocate zeroed memory; ``None`` on failure."""
        return _HeapAlloc(_heap, _HEAP_ZERO_MEMORY, (count * size) or 1)

    def raw_realloc(address: int, size: int) -> int | None:
        """Resize a block; ``None`` on failure (the old block is untouched)."""
        if not address:
            return raw_malloc(size)
        return _HeapReAlloc(_heap, 0, address, size or 1)

    def raw_free(address: int) -> None:
        """Release a block obtained from :func:`raw_malloc`."""
        if address:
            _HeapFree(_heap, 0, address)

    def raw_aligned_alloc(alignment: int, size: int) -> int | None:
        """Allocate ``size`` bytes aligned to ``alignment``; ``None`` on failure."""
        return _aligned_malloc(size or 1, alignment)

    def aligned_free(address: int) -> None:
        """Release a block obtained from :func:`aligned_alloc`."""
        if address:
            _aligned_free_fn(address)

    def usable_size(address: int) -> int | None:
        """Bytes usable in a block from :func:`malloc`."""
        return _HeapSize(_heap, 0, address)

else:
    PLATFORM: Final = "posix"  # type: ignore[misc]
    _libc = ctypes.CDLL(None)
    _malloc = _declare(_libc, "malloc", _vp, _sz)
    _calloc = _declare(_libc, "calloc", _vp, _sz, _sz)
    _realloc = _declare(_libc, "realloc", _vp, _vp, _sz)
    _free = _declare(_libc, "free", None, _vp)
    _posix_memalign = _declare(_libc, "posix_memalign", ctypes.c_int, ctypes.POINTER(_vp), _sz, _sz)
    _malloc_usable_size = _declare(_libc, "malloc_usable_size", _sz, _vp) or _declare(
        _libc, "malloc_size", _sz, _vp
    )
    _memcmp = _declare(_libc, "memcmp", ctypes.c_int, _vp, _vp, _sz)

    raw_malloc = _malloc  # type: ignore[assignment]
    raw_calloc = _calloc  # type: ignore[assignment]
    raw_realloc = _realloc  # type: ignore[assignment]
    raw_free = _free  # type: ignore[assignment]

    def raw_aligned_alloc(alignment: int, size: int) -> int | None:
        """Allocate ``size`` bytes aligned to ``alignment``; ``None`` on failure."""
        out = _vp()
        if _posix_memalign(ctypes.byref(out), alignment, size or 1) != 0:
            return None
        return out.value

    def aligned_free(address: int) -> None:
        """Release a block obtained from :func:`aligned_alloc`."""
        if address:
            _free(address)

    def usable_size(address: int) -> int | None:
        """Bytes usable in a block from :func:`malloc`, or ``None`` when unknown."""
        if _malloc_usable_size is None:  # pragma: no cover - glibc has it
            return None
        return int(_malloc_usable_size(address))


def _check_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"negative size: {size}")
    if size > SIZE_MAX:
        raise MemoryError(f"cannot allocate {size} bytes: larger than SIZE_MAX")


def malloc(size: int) -> int:
    """Allocate ``size`` bytes natively; :class:`MemoryError` naming the size on NULL."""
    _check_size(size)
    address = raw_malloc(size)
    if not address:
        raise MemoryError(f"native malloc({size}) returned NULL")
    return address


def calloc(count: int, size: int) -> int:
    """Allocate ``count * size`` zeroed bytes natively."""
    _check_size(count)
    _check_size(size)
    if count * size > SIZE_MAX:
        raise MemoryError(f"calloc({count}, {size}) overflows size_t")
    address = raw_calloc(count, size)
    if not address:
        raise MemoryError(f"native calloc({count}, {size}) returned NULL")
    return address


def realloc(address: int, size: int) -> int:
    """Resize a native block; on failure the old block is untouched and MemoryError raised."""
    _check_size(size)
    new = raw_realloc(address or None, size)
    if not new:
        raise MemoryError(f"native realloc(0x{address or 0:x}, {size}) returned NULL")
    return new


def free(address: int) -> None:
    """Release a native block (``free(0)`` is a no-op)."""
    if address:
        raw_free(address)


def aligned_alloc(alignment: int, size: int) -> int:
    """Allocate ``size`` bytes aligned to ``alignment`` (a power of two >= pointer size)."""
    _check_size(size)
    if alignment < POINTER_SIZE or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two >= {POINTER_SIZE}, got {alignment}")
    address = raw_aligned_alloc(alignment, size)
    if not address:
        raise MemoryError(f"native aligned allocation of {size} bytes (alignment {alignment}) failed")
    return address


memset = ctypes.memset
memmove = ctypes.memmove
string_at = ctypes.string_at


#: libc ``memcmp(a, b, size)`` on two addresses (the ctypes function itself).
memcmp = _memcmp

_owned_types: dict[int, type] = {}


def _owned_type(size: int) -> type:
    """A ``c_ubyte * size`` subclass whose instances free their memory when collected."""
    kind = _owned_types.get(size)
    if kind is None:

        def __del__(self: ctypes.Array[ctypes.c_ubyte]) -> None:
            release = getattr(self, "release", None)
            if release is not None:
                self.release = None  # type: ignore[attr-defined]
                release(ctypes.addressof(self))

        kind = type(f"_Owned{size}", (ctypes.c_ubyte * size,), {"__del__": __del__})
        _owned_types[size] = kind
    return kind


def owned_buffer(size: int, alignment: int = 0) -> tuple[int, memoryview]:
    """Allocate ``size`` native bytes owned by the returned memoryview.

    Returns ``(address, view)``: ``view`` is a writable 1-D ``'B'`` memoryview of the
    whole allocation.  The native memory is released when the last memoryview over it
    (including slices handed to users) is gone, so no view can ever outlive the memory
    it points at.  ``alignment`` of 0 means the allocator's natural alignment.
    """
    if alignment:
        address = aligned_alloc(alignment, size)
        release = aligned_free
    else:
        address = malloc(size)
        release = free
    owner = _owned_type(size).from_address(address)
    owner.release = release
    return address, memoryview(owner).cast("B")


_address_space: memoryview | None = None


def address_space() -> memoryview:
    """A 1-D ``'B'`` memoryview whose index ``i`` is the byte at address ``i``.

    It owns nothing and checks nothing: an index is safe only where the caller knows it
    owns the memory (the heap reads blocks leaving its quarantine through it, by address,
    while it holds them).  Needs a 64-bit interpreter, where every address is below
    ``sys.maxsize``.
    """
    global _address_space
    if _address_space is None:
        if POINTER_SIZE != 8:  # pragma: no cover - 32-bit interpreters only
            raise RuntimeError("memguard needs a 64-bit Python")
        _address_space = memoryview((ctypes.c_ubyte * sys.maxsize).from_address(0)).cast("B")
    return _address_space


# =====================================================================================
# C libraries with pluggable allocators (issue 6): zlib, bzip2, liblzma, expat, SQLite,
# and the deliberately buggy C library the test-suite compiles.
#
# Everything below is loaded lazily: nothing is opened at import time.  Each loader
# opens its library once (``ctypes.util.find_library`` first, then the usual soname),
# sets ``argtypes``/``restype`` on every function memguard uses and caches the result.
# A missing library raises :class:`memguard.errors.LibraryNotFoundError`.
# =====================================================================================

import ctypes.util as _ctypes_util  # noqa: E402
import threading as _threading  # noqa: E402
from typing import Callable, TypeVar  # noqa: E402

__all__ += [
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
    "ZStream",
    "BzStream",
    "LzmaAllocator",
    "LzmaStream",
    "XMLMemoryHandlingSuite",
    "SqliteMemMethods",
    "ZlibLib",
    "Bz2Lib",
    "LzmaLib",
    "ExpatLib",
    "SqliteLib",
    "BuggyLib",
    "load_library",
    "zlib",
    "bz2",
    "lzma",
    "expat",
    "sqlite3",
    "buggy",
]

_c_uint = ctypes.c_uint
_c_int = ctypes.c_int

# --- callback prototypes -------------------------------------------------------------
# CFUNCTYPE caches its classes by signature, so two equal prototypes are the same type
# and a callback of one can be stored in a structure field declared with the other.

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


# --- structures ------------------------------------------------------------------------
class ZStream(ctypes.Structure):
    """zlib's ``z_stream`` (``zalloc``/``zfree``/``opaque`` select the allocator)."""

    _fields_ = [
        ("next_in", _vp),
        ("avail_in", _c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", _vp),
        ("avail_out", _c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", _vp),
        ("zalloc", ZALLOC_FN),
        ("zfree", OPAQUE_FREE_FN),
        ("opaque", _vp),
        ("data_type", _c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


class BzStream(ctypes.Structure):
    """bzip2's ``bz_stream`` (``bzalloc``/``bzfree``/``opaque`` select the allocator)."""

    _fields_ = [
        ("next_in", _vp),
        ("avail_in", _c_uint),
        ("total_in_lo32", _c_uint),
        ("total_in_hi32", _c_uint),
        ("next_out", _vp),
        ("avail_out", _c_uint),
        ("total_out_lo32", _c_uint),
        ("total_out_hi32", _c_uint),
        ("state", _vp),
        ("bzalloc", BZALLOC_FN),
        ("bzfree", OPAQUE_FREE_FN),
        ("opaque", _vp),
    ]


class LzmaAllocator(ctypes.Structure):
    """liblzma's ``lzma_allocator``: ``alloc(opaque, nmemb, size)``, ``free(opaque, ptr)``, ``opaque``."""

    _fields_ = [("alloc", LZMA_ALLOC_FN), ("free", OPAQUE_FREE_FN), ("opaque", _vp)]


class LzmaStream(ctypes.Structure):
    """liblzma's ``lzma_stream``; a zeroed instance is ``LZMA_STREAM_INIT``."""

    _fields_ = [
        ("next_in", _vp),
        ("avail_in", _sz),
        ("total_in", ctypes.c_uint64),
        ("next_out", _vp),
        ("avail_out", _sz),
        ("total_out", ctypes.c_uint64),
        ("allocator", ctypes.POINTER(LzmaAllocator)),
        ("internal", _vp),
        ("reserved_ptr1", _vp),
        ("reserved_ptr2", _vp),
        ("reserved_ptr3", _vp),
        ("reserved_ptr4", _vp),
        ("seek_pos", ctypes.c_uint64),
        ("reserved_int2", ctypes.c_uint64),
        ("reserved_int3", _sz),
        ("reserved_int4", _sz),
        ("reserved_enum1", _c_int),
        ("reserved_enum2", _c_int),
    ]


class XMLMemoryHandlingSuite(ctypes.Structure):
    """expat's ``XML_Memory_Handling_Suite``: ``malloc_fcn``, ``realloc_fcn``, ``free_fcn``."""

    _fields_ = [("malloc_fcn", MALLOC_FN), ("realloc_fcn", REALLOC_FN), ("free_fcn", FREE_FN)]


class SqliteMemMethods(ctypes.Structure):
    """SQLite's ``sqlite3_mem_methods`` (for ``sqlite3_config(SQLITE_CONFIG_MALLOC, …)``)."""

    _fields_ = [
        ("xMalloc", SQLITE_MALLOC_FN),
        ("xFree", FREE_FN),
        ("xRealloc", SQLITE_REALLOC_FN),
        ("xSize", SQLITE_SIZE_FN),
        ("xRoundup", SQLITE_ROUNDUP_FN),
        ("xInit", SQLITE_INIT_FN),
        ("xShutdown", SQLITE_SHUTDOWN_FN),
        ("pAppData", _vp),
    ]


# --- loading -----------------------------------------------------------------------------
_lib_lock = _threading.Lock()
_lib_cache: dict[str, object] = {}

#: ``name -> sonames to try`` when ``find_library`` finds nothing.
_SONAMES: dict[str, tuple[str, ...]] = {
    "z": ("libz.so.1", "libz.dylib", "zlib1.dll", "zlib.dll"),
    "bz2": ("libbz2.so.1.0", "libbz2.so.1", "libbz2.dylib", "libbz2.dll", "bz2.dll"),
    "lzma": ("liblzma.so.5", "liblzma.dylib", "liblzma.dll", "lzma.dll"),
    "expat": ("libexpat.so.1", "libexpat.dylib", "libexpat.dll", "expat.dll"),
    "sqlite3": ("libsqlite3.so.0", "libsqlite3.dylib", "sqlite3.dll"),
}


def load_library(name: str) -> ctypes.CDLL:
    """Open the system library ``name`` (``"z"``, ``"bz2"``, ``"lzma"``, ``"expat"``, ``"sqlite3"``).

    Raises :class:`memguard.errors.LibraryNotFoundError` naming the library when it is
    not installed.  (Not cached; the typed loaders such as :func:`zlib` cache.)
    """
    from memguard.errors import LibraryNotFoundError

    candidates: list[str] = []
    found = _ctypes_util.find_library(name)
    if found:
        candidates.append(found)
    candidates.extend(_SONAMES.get(name, (f"lib{name}.so",)))
    errors = []
    for candidate in candidates:
        try:
            return ctypes.CDLL(candidate)
        except OSError as exc:
            errors.append(f"{candidate}: {exc}")
    raise LibraryNotFoundError(f"C library {name!r} is not installed ({'; '.join(errors) or 'not found'})")


def _require(lib: ctypes.CDLL, libname: str, name: str, restype: object, *argtypes: object) -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    fn = _declare(lib, name, restype, *argtypes)
    if fn is None:
        from memguard.errors import LibraryNotFoundError

        raise LibraryNotFoundError(f"{libname} has no function {name!r} (too old a version?)")
    return fn


def _cached(key: str, make: Callable[[], _T]) -> _T:
    with _lib_lock:
        lib = _lib_cache.get(key)
        if lib is None:
            lib = _lib_cache[key] = make()
        return lib  # type: ignore[return-value]


_T = TypeVar("_T")
_cp = ctypes.c_char_p
_pz = ctypes.POINTER(ZStream)
_pbz = ctypes.POINTER(BzStream)
_plz = ctypes.POINTER(LzmaStream)


class ZlibLib:
    """zlib's functions with prototypes set (see :func:`zlib`)."""

    Z_OK = 0
    Z_STREAM_END = 1
    Z_BUF_ERROR = -5
    Z_NO_FLUSH = 0
    Z_FINISH = 4
    Z_DEFLATED = 8

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: _require(lib, "zlib", name, res, *args)  # noqa: E731
        self.lib = lib
        self.zlibVersion = d("zlibVersion", _cp)
        self.deflateInit2_ = d("deflateInit2_", _c_int, _pz, _c_int, _c_int, _c_int, _c_int, _c_int, _cp, _c_int)
        self.deflate = d("deflate", _c_int, _pz, _c_int)
        self.deflateEnd = d("deflateEnd", _c_int, _pz)
        self.deflateBound = d("deflateBound", ctypes.c_ulong, _pz, ctypes.c_ulong)
        self.inflateInit2_ = d("inflateInit2_", _c_int, _pz, _c_int, _cp, _c_int)
        self.inflate = d("inflate", _c_int, _pz, _c_int)
        self.inflateEnd = d("inflateEnd", _c_int, _pz)
        self.version: bytes = self.zlibVersion()


class Bz2Lib:
    """libbz2's functions with prototypes set (see :func:`bz2`)."""

    BZ_RUN = 0
    BZ_FINISH = 2
    BZ_OK = 0
    BZ_RUN_OK = 1
    BZ_FINISH_OK = 3
    BZ_STREAM_END = 4
    BZ_MEM_ERROR = -3

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: _require(lib, "libbz2", name, res, *args)  # noqa: E731
        self.lib = lib
        self.BZ2_bzlibVersion = d("BZ2_bzlibVersion", _cp)
        self.BZ2_bzCompressInit = d("BZ2_bzCompressInit", _c_int, _pbz, _c_int, _c_int, _c_int)
        self.BZ2_bzCompress = d("BZ2_bzCompress", _c_int, _pbz, _c_int)
        self.BZ2_bzCompressEnd = d("BZ2_bzCompressEnd", _c_int, _pbz)
        self.BZ2_bzDecompressInit = d("BZ2_bzDecompressInit", _c_int, _pbz, _c_int, _c_int)
        self.BZ2_bzDecompress = d("BZ2_bzDecompress", _c_int, _pbz)
        self.BZ2_bzDecompressEnd = d("BZ2_bzDecompressEnd", _c_int, _pbz)
        self.version: bytes = self.BZ2_bzlibVersion()


class LzmaLib:
    """liblzma's functions with prototypes set (see :func:`lzma`)."""

    LZMA_OK = 0
    LZMA_STREAM_END = 1
    LZMA_MEM_ERROR = 5
    LZMA_RUN = 0
    LZMA_FINISH = 3
    LZMA_CHECK_CRC64 = 4

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: _require(lib, "liblzma", name, res, *args)  # noqa: E731
        self.lib = lib
        self.lzma_version_string = d("lzma_version_string", _cp)
        self.lzma_easy_encoder = d("lzma_easy_encoder", _c_int, _plz, ctypes.c_uint32, _c_int)
        self.lzma_stream_decoder = d("lzma_stream_decoder", _c_int, _plz, ctypes.c_uint64, ctypes.c_uint32)
        self.lzma_code = d("lzma_code", _c_int, _plz, _c_int)
        self.lzma_end = d("lzma_end", None, _plz)
        self.version: bytes = self.lzma_version_string()


class ExpatLib:
    """libexpat's functions with prototypes set (see :func:`expat`)."""

    XML_STATUS_ERROR = 0
    XML_STATUS_OK = 1
    #: ``void (*XML_StartElementHandler)(void *userData, const XML_Char *name, const XML_Char **atts)``
    START_HANDLER = ctypes.CFUNCTYPE(None, _vp, _cp, ctypes.POINTER(_cp))
    #: ``void (*XML_EndElementHandler)(void *userData, const XML_Char *name)``
    END_HANDLER = ctypes.CFUNCTYPE(None, _vp, _cp)

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: _require(lib, "libexpat", name, res, *args)  # noqa: E731
        self.lib = lib
        self.XML_ExpatVersion = d("XML_ExpatVersion", _cp)
        self.XML_ParserCreate = d("XML_ParserCreate", _vp, _cp)
        self.XML_ParserCreate_MM = d(
            "XML_ParserCreate_MM", _vp, _cp, ctypes.POINTER(XMLMemoryHandlingSuite), _cp
        )
        self.XML_Parse = d("XML_Parse", _c_int, _vp, _cp, _c_int, _c_int)
        self.XML_ParserFree = d("XML_ParserFree", None, _vp)
        self.XML_GetErrorCode = d("XML_GetErrorCode", _c_int, _vp)
        self.XML_ErrorString = d("XML_ErrorString", _cp, _c_int)
        self.XML_GetCurrentLineNumber = d("XML_GetCurrentLineNumber", ctypes.c_ulong, _vp)
        self.XML_SetElementHandler = d("XML_SetElementHandler", None, _vp, self.START_HANDLER, self.END_HANDLER)
        self.version: bytes = self.XML_ExpatVersion()


class SqliteLib:
    """libsqlite3's functions with prototypes set (see :func:`sqlite3`).

    ``sqlite3_config`` is variadic; ``config_malloc`` is its ``(int, sqlite3_mem_methods *)``
    form, which is how every ``SQLITE_CONFIG_MALLOC`` call is made.
    """

    SQLITE_OK = 0
    SQLITE_BUSY = 5
    SQLITE_ROW = 100
    SQLITE_DONE = 101
    SQLITE_MISUSE = 21
    SQLITE_CONFIG_MALLOC = 4
    SQLITE_CONFIG_GETMALLOC = 5
    #: ``sqlite3_exec``'s callback: ``int (*)(void *, int, char **, char **)``
    EXEC_CALLBACK = ctypes.CFUNCTYPE(_c_int, _vp, _c_int, ctypes.POINTER(_cp), ctypes.POINTER(_cp))

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: _require(lib, "libsqlite3", name, res, *args)  # noqa: E731
        pp = ctypes.POINTER(_vp)
        self.lib = lib
        self.sqlite3_libversion = d("sqlite3_libversion", _cp)
        # A second handle on the same symbol, so the variadic function's two shapes keep
        # their own prototypes.
        self.config_malloc = _require(ctypes.CDLL(lib._name), "libsqlite3", "sqlite3_config", _c_int, _c_int, ctypes.POINTER(SqliteMemMethods))
        self.sqlite3_initialize = d("sqlite3_initialize", _c_int)
        self.sqlite3_shutdown = d("sqlite3_shutdown", _c_int)
        self.sqlite3_open = d("sqlite3_open", _c_int, _cp, pp)
        self.sqlite3_close = d("sqlite3_close", _c_int, _vp)
        self.sqlite3_exec = d("sqlite3_exec", _c_int, _vp, _cp, self.EXEC_CALLBACK, _vp, pp)
        self.sqlite3_prepare_v2 = d("sqlite3_prepare_v2", _c_int, _vp, _cp, _c_int, pp, pp)
        self.sqlite3_step = d("sqlite3_step", _c_int, _vp)
        self.sqlite3_finalize = d("sqlite3_finalize", _c_int, _vp)
        self.sqlite3_column_int64 = d("sqlite3_column_int64", ctypes.c_int64, _vp, _c_int)
        self.sqlite3_errmsg = d("sqlite3_errmsg", _cp, _vp)
        self.sqlite3_free = d("sqlite3_free", None, _vp)
        self.sqlite3_memory_used = d("sqlite3_memory_used", ctypes.c_int64)
        self.version: bytes = self.sqlite3_libversion()


class BuggyLib:
    """The test-suite's deliberately buggy C library (``tests/clib/buggy.c``), prototypes set.

    Every function allocates through the callbacks installed with ``buggy_set_allocator``.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: _require(lib, "buggy", name, res, *args)  # noqa: E731
        self.lib = lib
        self.buggy_set_allocator = d("buggy_set_allocator", None, MALLOC_FN, FREE_FN)
        self.buggy_clean = d("buggy_clean", _c_int, _sz)
        self.buggy_overflow = d("buggy_overflow", None, _sz)
        self.buggy_underflow = d("buggy_underflow", None, _sz)
        self.buggy_double_free = d("buggy_double_free", None, _sz)
        self.buggy_use_after_free = d("buggy_use_after_free", None, _sz)
        self.buggy_leak = d("buggy_leak", _vp, _sz)
        self.buggy_interior_free = d("buggy_interior_free", None, _sz)
        self.buggy_foreign_free = d("buggy_foreign_free", None)
        self.buggy_check_null = d("buggy_check_null", _c_int, _sz)
        self.buggy_churn = d("buggy_churn", ctypes.c_long, _sz, _sz)


def zlib() -> ZlibLib:
    """The system zlib, loaded once, every function memguard uses declared."""
    return _cached("z", lambda: ZlibLib(load_library("z")))


def bz2() -> Bz2Lib:
    """The system libbz2, loaded once, every function memguard uses declared."""
    return _cached("bz2", lambda: Bz2Lib(load_library("bz2")))


def lzma() -> LzmaLib:
    """The system liblzma, loaded once, every function memguard uses declared."""
    return _cached("lzma", lambda: LzmaLib(load_library("lzma")))


def expat() -> ExpatLib:
    """The system libexpat, loaded once, every function memguard uses declared."""
    return _cached("expat", lambda: ExpatLib(load_library("expat")))


def sqlite3() -> SqliteLib:
    """The system libsqlite3, loaded once, every function memguard uses declared.

    Configuring SQLite's allocator changes it for the whole process (including Python's
    own :mod:`sqlite3` module when it shares the library): do it in a process of its own.
    """
    return _cached("sqlite3", lambda: SqliteLib(load_library("sqlite3")))


def buggy(path: str) -> BuggyLib:
    """The compiled test library at ``path`` (one load per path), every function declared."""
    def make() -> BuggyLib:
        try:
            return BuggyLib(ctypes.CDLL(path))
        except OSError as exc:
            from memguard.errors import LibraryNotFoundError

            raise LibraryNotFoundError(f"cannot load {path}: {exc}") from None

    return _cached("buggy:" + path, make)
