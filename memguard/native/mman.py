"""Pages and signals: ``mmap``/``munmap``/``mprotect``, ``sysconf``, ``sigaction`` and the fault context.

The foreign side of guard pages (:mod:`memguard.heap.guardpages`, :mod:`memguard.heap.faults`):
anonymous private mappings, their protection, a ``SIGSEGV``/``SIGBUS`` handler installed
with ``sigaction(SA_SIGINFO)``, and the two things a handler reads from what the kernel
passes it: the faulting address (``siginfo_t.si_addr``) and, on x86-64, whether the access
was a write (bit 1 of the page-fault error code, ``REG_ERR`` of ``uc_mcontext.gregs``).

Supported on Linux x86-64 and aarch64 (there, READ or WRITE is not told); :data:`GUARD_PAGES_SUPPORTED`
is false elsewhere, and :func:`require_mman` raises a clear error.  Nothing is declared until
:func:`require_mman` is first called.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from typing import Any, Final

from memguard.errors import GuardPagesUnavailableError
from memguard.native.backend import process_symbols
from memguard.native.loader import declare

__all__ = [
    "GUARD_PAGES_SUPPORTED",
    "PROT_NONE",
    "PROT_RW",
    "FAULT_SIGNALS",
    "FAULT_FN",
    "Mman",
    "require_mman",
]

_MACHINE = platform.machine().lower()
#: Whether guard pages work on this platform (Linux x86-64 or aarch64).
GUARD_PAGES_SUPPORTED: Final = sys.platform.startswith("linux") and _MACHINE in ("x86_64", "amd64", "aarch64", "arm64")
_X86_64: Final = _MACHINE in ("x86_64", "amd64")

PROT_NONE: Final = 0
#: ``PROT_READ | PROT_WRITE``
PROT_RW: Final = 3
_MAP_PRIVATE = 0x02
_MAP_ANONYMOUS = 0x20
_MAP_FAILED = ctypes.c_void_p(-1).value
_SC_PAGESIZE = 30
_SA_SIGINFO = 4
#: ``SIGSEGV`` and ``SIGBUS`` (Linux numbers).
FAULT_SIGNALS: Final = (11, 7)

#: ``siginfo_t.si_code`` (after si_signo and si_errno).
_SI_CODE_OFFSET = 8
#: ``siginfo_t.si_addr`` (after si_signo, si_errno, si_code and the padding to 8 bytes).
_SI_ADDR_OFFSET = 16
#: ``ucontext_t.uc_mcontext.gregs[REG_ERR]``: uc_flags (8), uc_link (8), uc_stack (24), then 8 * 19.
_REG_ERR_OFFSET = 8 + 8 + 24 + 8 * 19
#: A page-fault error code's bit for a write access.
_PF_WRITE = 0x2

#: The handler prototype of ``sa_sigaction``: ``void (int signo, siginfo_t *info, void *ucontext)``.
FAULT_FN = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class _Sigaction(ctypes.Structure):
    """glibc's ``struct sigaction`` on Linux (handler, 1024-bit mask, flags, restorer)."""

    _fields_ = [
        ("sa_sigaction", ctypes.c_void_p),
        ("sa_mask", ctypes.c_ulong * 16),
        ("sa_flags", ctypes.c_int),
        ("sa_restorer", ctypes.c_void_p),
    ]


class Mman:
    """The declared functions of the process's libc for pages and signals."""

    def __init__(self) -> None:
        libc = process_symbols()
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        self._mmap = declare(libc, "mmap", vp, vp, sz, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
        self._munmap = declare(libc, "munmap", ctypes.c_int, vp, sz)
        self._mprotect = declare(libc, "mprotect", ctypes.c_int, vp, sz, ctypes.c_int)
        sysconf = declare(libc, "sysconf", ctypes.c_long, ctypes.c_int)
        self._sigaction = declare(
            libc, "sigaction", ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Sigaction), ctypes.POINTER(_Sigaction)
        )
        self._raise = declare(libc, "raise", ctypes.c_int, ctypes.c_int)
        if None in (self._mmap, self._munmap, self._mprotect, sysconf, self._sigaction, self._raise):
            raise GuardPagesUnavailableError("the C library lacks mmap, munmap, mprotect, sysconf, sigaction or raise")
        #: The size of a page, from ``sysconf(_SC_PAGESIZE)``.
        self.page_size: int = int(sysconf(_SC_PAGESIZE))
        #: The actions replaced by :meth:`install_handler`, by signal number.
        self._previous: dict[int, _Sigaction] = {}

    def map(self, length: int) -> int:
        """A new anonymous private read-write mapping of ``length`` bytes; ``MemoryError`` on failure."""
        address = self._mmap(None, length, PROT_RW, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
        if address is None or address == _MAP_FAILED:
            raise MemoryError(f"mmap of {length} bytes failed")
        return int(address)

    def unmap(self, address: int, length: int) -> None:
        """Give a mapping made by :meth:`map` back to the system."""
        self._munmap(address, length)

    def protect(self, address: int, length: int, prot: int) -> bool:
        """Set the protection of whole pages of a mapping made by :meth:`map`; whether it worked."""
        return bool(self._mprotect(address, length, prot) == 0)

    def install_handler(self, handler: Any) -> None:
        """Make ``handler`` (a :data:`FAULT_FN`) the action for SIGSEGV and SIGBUS, keeping the
        action it replaces as the previous one; nothing for a signal whose action it already is
        (so calling it again puts ``handler`` back on top of one installed since, such as
        faulthandler's).  The caller keeps ``handler`` alive for the rest of the process.
        """
        address = ctypes.cast(handler, ctypes.c_void_p).value
        for signo in FAULT_SIGNALS:
            current = _Sigaction()
            if self._sigaction(signo, None, ctypes.byref(current)) != 0:
                raise GuardPagesUnavailableError(f"sigaction({signo}) failed")
            if current.sa_sigaction == address and current.sa_flags & _SA_SIGINFO:
                continue
            new, old = _Sigaction(), _Sigaction()
            new.sa_sigaction = address
            new.sa_flags = _SA_SIGINFO
            if self._sigaction(signo, ctypes.byref(new), ctypes.byref(old)) != 0:
                raise GuardPagesUnavailableError(f"sigaction({signo}) failed")
            self._previous[signo] = old

    def restore_previous(self, signo: int) -> None:
        """Put back the action :meth:`install_handler` last replaced for ``signo`` (before a crash)."""
        old = self._previous.get(signo)
        if old is not None:
            self._sigaction(signo, ctypes.byref(old), None)

    def restore_default(self, signo: int) -> None:
        """Make ``SIG_DFL`` the action for ``signo`` (the process dies of the signal)."""
        default = _Sigaction()
        self._sigaction(signo, ctypes.byref(default), None)

    def resend(self, signo: int) -> None:
        """Send ``signo`` to the calling thread again (``raise``): delivered once the handler returns."""
        self._raise(signo)

    @staticmethod
    def sent_by_a_process(info: int) -> bool:
        """Whether the signal was sent (``kill``, ``raise``: ``si_code <= 0``) rather than caused by an access."""
        return ctypes.c_int.from_address(info + _SI_CODE_OFFSET).value <= 0

    @staticmethod
    def fault_address(info: int) -> int:
        """``si_addr`` of the ``siginfo_t`` at ``info`` (the kernel's, for this signal)."""
        return ctypes.c_void_p.from_address(info + _SI_ADDR_OFFSET).value or 0

    @staticmethod
    def fault_is_write(context: int) -> bool | None:
        """Whether the faulting access was a write (x86-64's page-fault error code); ``None``: not told."""
        if not _X86_64 or not context:
            return None
        return bool(ctypes.c_uint64.from_address(context + _REG_ERR_OFFSET).value & _PF_WRITE)


_MMAN: list[Mman] = []


def require_mman() -> Mman:
    """The process's :class:`Mman` (declared on first use); :class:`GuardPagesUnavailableError` elsewhere."""
    if not GUARD_PAGES_SUPPORTED:
        raise GuardPagesUnavailableError(
            f"guard pages need Linux on x86-64 or aarch64; this is {sys.platform} on {_MACHINE or 'an unknown machine'}"
        )
    if not _MMAN:
        _MMAN.append(Mman())
    return _MMAN[0]

