"""The test-suite's deliberately buggy C library (``tests/clib/buggy.c``): build and load it.

The library is compiled with the machine's C compiler into a directory the caller
chooses; :func:`build` raises :class:`Unavailable` (with the reason, for a skip) when
there is no compiler or the build fails.  Its functions are declared through
:func:`memguard.native.loader.require`, like every C library memguard loads.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from memguard.native import FREE_FN, MALLOC_FN
from memguard.native.loader import require

__all__ = ["SOURCE", "BuggyLib", "Unavailable", "build", "compiler", "load"]

#: The library's C source.
SOURCE = Path(__file__).parent / "clib" / "buggy.c"

_vp = ctypes.c_void_p
_sz = ctypes.c_size_t
_c_int = ctypes.c_int


class Unavailable(Exception):
    """The buggy library cannot be built on this machine (the message says why)."""


class BuggyLib:
    """The buggy library's functions, prototypes set.

    Every function allocates through the callbacks installed with ``buggy_set_allocator``.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: require(lib, "buggy", name, res, *args)  # noqa: E731
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


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, Python's own ``CC``, then cc, gcc, clang; ``None`` if none."""
    for candidate in (os.environ.get("CC"), (sysconfig.get_config_var("CC") or "").split(" ")[0], "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def load(path: str | os.PathLike[str]) -> BuggyLib:
    """The compiled library at ``path``, every function declared."""
    return BuggyLib(ctypes.CDLL(os.fspath(path)))


def build(directory: Path) -> BuggyLib:
    """Compile :data:`SOURCE` into ``directory`` and load it; :class:`Unavailable` if impossible."""
    cc = compiler()
    if cc is None:
        raise Unavailable("no C compiler on this machine")
    out = directory / "libbuggy.so"
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(SOURCE)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise Unavailable(f"cannot compile the test C library: {proc.stderr.strip()[:200]}")
    try:
        return load(out)
    except OSError as exc:
        raise Unavailable(f"cannot load {out}: {exc}") from None
