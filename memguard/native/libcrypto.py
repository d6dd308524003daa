"""OpenSSL 3's libcrypto: its allocator setter (``CRYPTO_set_mem_functions``), initialisation,
the functions memguard uses, its loader."""

from __future__ import annotations

import ctypes

from memguard.native.loader import cached, is_loaded, load_library, require
from memguard.native.prototypes import FREE_FILE_LINE_FN, MALLOC_FILE_LINE_FN, REALLOC_FILE_LINE_FN

__all__ = ["CryptoLib", "crypto", "crypto_loaded"]

_vp = ctypes.c_void_p
_cp = ctypes.c_char_p
_c_int = ctypes.c_int
_sz = ctypes.c_size_t


class CryptoLib:
    """libcrypto's functions with prototypes set (see :func:`crypto`)."""

    #: ``OPENSSL_INIT_NO_ATEXIT``: do not register ``OPENSSL_cleanup`` with ``atexit``.
    OPENSSL_INIT_NO_ATEXIT = 0x00080000
    #: ``OPENSSL_INIT_LOAD_CRYPTO_STRINGS``
    OPENSSL_INIT_LOAD_CRYPTO_STRINGS = 0x00000002
    #: ``OPENSSL_INIT_LOAD_CONFIG``
    OPENSSL_INIT_LOAD_CONFIG = 0x00000040
    EVP_MAX_MD_SIZE = 64
    #: The callback of ``EVP_MD_do_all_provided`` and ``EVP_CIPHER_do_all_provided``: ``void (*)(void *method, void *arg)``
    DO_ALL_FN = ctypes.CFUNCTYPE(None, _vp, _vp)

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: require(lib, "libcrypto", name, res, *args)  # noqa: E731
        self.lib = lib
        self.OpenSSL_version_num = d("OpenSSL_version_num", ctypes.c_ulong)
        self.OpenSSL_version = d("OpenSSL_version", _cp, _c_int)
        self.CRYPTO_set_mem_functions = d(
            "CRYPTO_set_mem_functions", _c_int, MALLOC_FILE_LINE_FN, REALLOC_FILE_LINE_FN, FREE_FILE_LINE_FN
        )
        self.OPENSSL_init_crypto = d("OPENSSL_init_crypto", _c_int, ctypes.c_uint64, _vp)
        self.CRYPTO_malloc = d("CRYPTO_malloc", _vp, _sz, _cp, _c_int)
        self.CRYPTO_free = d("CRYPTO_free", None, _vp, _cp, _c_int)
        self.OPENSSL_buf2hexstr = d("OPENSSL_buf2hexstr", _vp, _cp, ctypes.c_long)
        self.EVP_MD_fetch = d("EVP_MD_fetch", _vp, _vp, _cp, _cp)
        self.EVP_MD_free = d("EVP_MD_free", None, _vp)
        self.EVP_MD_CTX_new = d("EVP_MD_CTX_new", _vp)
        self.EVP_MD_CTX_free = d("EVP_MD_CTX_free", None, _vp)
        self.EVP_DigestInit_ex = d("EVP_DigestInit_ex", _c_int, _vp, _vp, _vp)
        self.EVP_DigestUpdate = d("EVP_DigestUpdate", _c_int, _vp, _vp, _sz)
        self.EVP_DigestFinal_ex = d("EVP_DigestFinal_ex", _c_int, _vp, _vp, ctypes.POINTER(ctypes.c_uint))
        #: ``EVP_<KIND>_do_all_provided(libctx, fn, arg)`` of every kind of algorithm: fetching
        #: every algorithm once builds OpenSSL's method caches.
        self.do_all_provided = [
            d(f"EVP_{kind}_do_all_provided", None, _vp, self.DO_ALL_FN, _vp)
            for kind in ("MD", "CIPHER", "MAC", "KDF", "RAND", "KEYMGMT", "SIGNATURE", "KEYEXCH", "KEM", "ASYM_CIPHER")
        ]
        self.RAND_bytes = d("RAND_bytes", _c_int, _vp, _c_int)
        self.RAND_priv_bytes = d("RAND_priv_bytes", _c_int, _vp, _c_int)
        self.ERR_get_error = d("ERR_get_error", ctypes.c_ulong)
        self.ERR_error_string_n = d("ERR_error_string_n", None, ctypes.c_ulong, _cp, _sz)
        self.version_num: int = self.OpenSSL_version_num()
        self.version: bytes = self.OpenSSL_version(0) or b""


def crypto_loaded() -> bool:
    """Whether libcrypto is mapped into the process already (``hashlib``, ``ssl``, memguard …)."""
    return is_loaded("crypto")


def crypto() -> CryptoLib:
    """The system libcrypto (OpenSSL), loaded once, every function memguard uses declared."""
    return cached("crypto", lambda: CryptoLib(load_library("crypto")))
