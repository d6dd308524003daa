"""OpenSSL 3 on the guarded heap: :func:`openssl_configure` makes the heap libcrypto's
allocator for the process (``CRYPTO_set_mem_functions``, whose file/line arguments put
OpenSSL's own ``file:line`` at the top of every stack), and :func:`openssl_digest` is a
whole-buffer digest through the EVP API.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from memguard.clibs.common import CLibraryError, as_bytes
from memguard.heap.c_allocator import CAllocator, allocator_for, c_site
from memguard.native import prototypes, trampoline
from memguard.native.libcrypto import CryptoLib, crypto

__all__ = ["OPENSSL_SUPPRESSIONS", "openssl_configure", "openssl_digest"]

#: The frame the blocks of OpenSSL's initialisation and of its warm-up (every provided
#: digest and cipher fetched once) are filed under.
OPENSSL_CACHES_SITE = b"<OpenSSL caches>"

#: Suppression rules for what OpenSSL keeps for the life of the process: its initialisation
#: and warm-up, and the caches it grows later (the property-query cache, its hash tables
#: and stacks, the name map, per-thread state and locks, the handlers libssl registers
#: with ``OPENSSL_atexit``).  OpenSSL never frees them, as
#: :func:`openssl_configure` keeps it from cleaning up at exit.
OPENSSL_SUPPRESSIONS = "\n".join([
    "leak:<OpenSSL caches>",
    "leak:*crypto/property/*",
    "leak:*crypto/lhash/lhash.c",
    "leak:*crypto/stack/stack.c",
    "leak:*crypto/sparse_array.c",
    "leak:*crypto/core_namemap.c",
    "leak:*crypto/core_algorithm.c",
    "leak:*crypto/objects/o_names.c",
    "leak:*crypto/ex_data.c",
    "leak:*crypto/init.c",
    "leak:*crypto/initthread.c",
    "leak:*crypto/threads_pthread.c",
    "leak:*crypto/err/*",
    "",
])

_lock = threading.Lock()
#: The allocator OpenSSL was given: it calls it for the rest of the process.
_configured: list[CAllocator] = []
_noop = CryptoLib.DO_ALL_FN(lambda method, arg: None)


def _too_late(lib: CryptoLib) -> CLibraryError:
    return CLibraryError(
        "openssl", 0,
        "CRYPTO_set_mem_functions refused: OpenSSL has already allocated memory in this process "
        "(hashlib, ssl or another library using libcrypto came first); configure it first thing, "
        "in a process of its own",
    )


def openssl_configure(allocator: Any, warm_up: bool = True) -> CryptoLib:
    """Make the guarded heap OpenSSL's (libcrypto's) allocator for the rest of the process.

    Calls ``CRYPTO_set_mem_functions`` with the heap's file/line callbacks, so each
    block's stacks start at the OpenSSL source line that allocated it, then
    ``OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT | OPENSSL_INIT_LOAD_CRYPTO_STRINGS |
    OPENSSL_INIT_LOAD_CONFIG)``:
    OpenSSL's ``atexit`` cleanup would otherwise free into a heap that is gone.  With
    ``warm_up`` every provided algorithm (digests, ciphers, MACs, KDFs, key management,
    signatures, key exchange …) is fetched once and the random generators are seeded, so
    OpenSSL's method caches and generators are built now, under the frame ``<OpenSSL caches>``; :data:`OPENSSL_SUPPRESSIONS`
    suppresses them and the caches OpenSSL grows later.

    OpenSSL accepts this only before its first allocation: once anything has used
    libcrypto (``import hashlib`` or ``ssl`` does) this raises
    :class:`~memguard.clibs.CLibraryError`.  Do it first thing, in a process of its own
    (see ``examples/openssl_guarded.py``).  Calling it again with the same heap returns
    the library.  Needs OpenSSL 3, and memguard's exception-preserving trampolines
    (Python's ``hashlib`` and ``ssl`` call OpenSSL's ``free`` with an exception pending on
    their error paths): without them this raises
    :class:`~memguard.errors.TrampolineUnavailableError` before touching OpenSSL.
    """
    name = "memguard.clibs.openssl_configure"
    trampoline.require(name)
    alloc = allocator_for(allocator)
    with _lock:
        if _configured:
            if _configured[0] is alloc:
                return crypto()
            raise CLibraryError("openssl", 0, "OpenSSL is already on another heap in this process")
        lib = crypto()
        if lib.version_num < 0x30000000:
            raise CLibraryError("openssl", lib.version_num, f"OpenSSL 3 is needed, found {lib.version.decode()}")
        ok = lib.CRYPTO_set_mem_functions(
            alloc.function("malloc_file_line", prototypes.MALLOC_FILE_LINE_FN, require_trampoline=name),
            alloc.function("realloc_file_line", prototypes.REALLOC_FILE_LINE_FN, require_trampoline=name),
            alloc.function("free_file_line", prototypes.FREE_FILE_LINE_FN, require_trampoline=name),
        )
        if not ok:
            raise _too_late(lib)
        _configured.append(alloc)

    def initialise() -> int:
        flags = lib.OPENSSL_INIT_NO_ATEXIT | lib.OPENSSL_INIT_LOAD_CRYPTO_STRINGS | lib.OPENSSL_INIT_LOAD_CONFIG
        rc = int(lib.OPENSSL_init_crypto(flags, None))
        if rc and warm_up:
            for do_all in lib.do_all_provided:
                do_all(None, _noop, None)
            scratch = ctypes.create_string_buffer(16)
            lib.RAND_bytes(scratch, 16)  # the random generators (the calling thread's too)
            lib.RAND_priv_bytes(scratch, 16)
        return rc

    if not c_site(OPENSSL_CACHES_SITE, 0)(initialise):
        raise CLibraryError("openssl", 0, "OPENSSL_init_crypto failed")
    return lib


def _last_error(lib: CryptoLib) -> tuple[int, str]:
    """OpenSSL's oldest queued error (code, text), the queue emptied."""
    code = first = lib.ERR_get_error()
    while code:
        code = lib.ERR_get_error()
    text = ctypes.create_string_buffer(256)
    lib.ERR_error_string_n(first, text, len(text))
    return int(first), text.value.decode(errors="replace")


def openssl_digest(name: str, data: bytes) -> bytes:
    """The digest ``name`` (``"SHA256"``, ``"SHA3-512"`` …) of ``data`` through OpenSSL's EVP API.

    Uses whatever allocator libcrypto has (the guarded heap after :func:`openssl_configure`).
    An unknown algorithm raises :class:`~memguard.clibs.CLibraryError` with OpenSSL's message;
    everything is freed either way.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    data = as_bytes(data)
    lib = crypto()
    md = lib.EVP_MD_fetch(None, name.encode(), None)
    if not md:
        code, text = _last_error(lib)
        raise CLibraryError("openssl", code, f"EVP_MD_fetch({name!r}): {text}")
    ctx = lib.EVP_MD_CTX_new()
    try:
        if not ctx:
            raise MemoryError("EVP_MD_CTX_new returned NULL")
        out = ctypes.create_string_buffer(lib.EVP_MAX_MD_SIZE)
        size = ctypes.c_uint()
        if not (lib.EVP_DigestInit_ex(ctx, md, None) and lib.EVP_DigestUpdate(ctx, data, len(data))
                and lib.EVP_DigestFinal_ex(ctx, out, ctypes.byref(size))):
            code, text = _last_error(lib)
            raise CLibraryError("openssl", code, f"digest {name!r}: {text}")
        return out.raw[: size.value]
    finally:
        lib.EVP_MD_CTX_free(ctx)
        lib.EVP_MD_free(md)
