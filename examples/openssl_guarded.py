"""OpenSSL 3 on the guarded heap, in a process of its own.

Run:  python examples/openssl_guarded.py [--bugs]

``CRYPTO_set_mem_functions`` is accepted only before OpenSSL's first allocation and
changes libcrypto's allocator for the whole process, which is why this runs as a
separate program and imports :mod:`hashlib` only afterwards (Python's hashlib then runs
on the guarded heap too).  OpenSSL passes its own source file and line with every
call, so each block's stack starts at the OpenSSL line that allocated it, above the
Python line that called OpenSSL.  With ``--bugs`` the program leaks a digest context,
writes one byte past a string OpenSSL allocated and writes into it after freeing it;
the reports point at the lines below.  OpenSSL's caches are suppressed with
``clibs.OPENSSL_SUPPRESSIONS``.

The last line of output is a JSON summary (used by memguard's tests).
"""

from __future__ import annotations

import argparse
import ctypes
import json

import memguard
from memguard import clibs


def run(bugs: bool) -> dict[str, object]:
    """Digest data on the guarded heap, with OpenSSL and with hashlib; return what memguard saw."""
    heap = memguard.GuardedHeap(on_error="report")
    lib = clibs.openssl_configure(heap)  # CRYPTO_set_mem_functions + OPENSSL_init_crypto(NO_ATEXIT)
    import hashlib  # from now on Python's hashlib and ssl allocate on the guarded heap too
    import ssl

    data = b"memguard " * 1000
    same = all(
        clibs.openssl_digest(name, data) == hashlib.new(name.lower().replace("-", "_"), data).digest()
        for name in ("SHA256", "SHA512", "SHA3-256", "MD5")
    )
    try:
        clibs.openssl_digest("NO-SUCH-DIGEST", data)  # OpenSSL's error path allocates and frees
        error = ""
    except clibs.CLibraryError as exc:
        error = exc.message
    try:  # the ssl module frees OpenSSL's objects with its exception already set
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata="not a certificate")
        ssl_error = ""
    except ssl.SSLError as exc:
        ssl_error = str(exc)
    text = lib.OPENSSL_buf2hexstr(b"\x01\x02\x03", 3)  # "01:02:03", OPENSSL_malloc'd
    if bugs:
        ctx = lib.EVP_MD_CTX_new()  # never EVP_MD_CTX_free'd
        ctypes.memset(text + 9, 0, 1)  # one byte past the string's NUL
    lib.CRYPTO_free(text, b"examples/openssl_guarded.py", 0)
    if bugs:
        ctypes.memset(text, 0x41, 2)  # written after it was freed
    reports = heap.check()
    rules = memguard.Suppressions.parse(clibs.OPENSSL_SUPPRESSIONS)
    leaks, suppressed = rules.apply(heap.leaks())
    if leaks:
        print(memguard.format_leaks(leaks))
    for report in heap.reports:
        print(report)
    first = [r.alloc_stack[:2] for r in heap.reports]
    return {
        "same_as_hashlib": same,
        "error": error,
        "ssl_error": ssl_error,
        "allocations": heap.stats().total_allocs,
        "reports": [(r.kind, [f"{f.filename}:{f.lineno}" for f in stack]) for r, stack in zip(heap.reports, first)],
        "new_reports": len(reports),
        "leaks": [[f"{f.filename}:{f.lineno}" for f in g.stack[:2]] for g in leaks],
        "suppressed_leaks": len(suppressed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bugs", action="store_true", help="plant a leak, an overflow and a use after free")
    summary = run(parser.parse_args().bugs)
    print(json.dumps(summary))
    return 1 if summary["reports"] or summary["leaks"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
