"""The fault handler of guard pages: a ``SIGSEGV``/``SIGBUS`` in a guard page becomes a finding.

One handler per process, installed (``sigaction`` with ``SA_SIGINFO``) when the first
heap with guard pages is made, and kept.  It is a ctypes callback, so it runs in the
faulting thread, with the GIL: when that thread holds the GIL (a fault inside the
interpreter's own C code, such as a memoryview write or ``ctypes.string_at``) the
callback's GIL-ensure nests; when the thread released it (``ctypes.memmove``, any
foreign function) the callback takes it, like any callback from C.

The handler does as little as it can, and takes no lock of memguard's: it looks the
faulting page up in :data:`PAGES` (a dict read), appends a :class:`Fault` to the owner's
list of faults (a list append), makes the block's pages accessible again (``mprotect``)
and returns, so the access completes and the program runs on.  The finding itself is
built later, at the next memguard call (:meth:`GuardPages.drain
<memguard.heap.guardpages.GuardPages.drain>`).

A fault at an address that is in no guard page is not memguard's: the handler puts the
previous action back (faulthandler's, or the default) and returns, so the access faults
again and the process crashes exactly as it would have without memguard.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

from memguard._location import PACKAGE_DIR
from memguard.native import mman
from memguard.stacks import Frame, frame_record

if TYPE_CHECKING:
    from memguard.heap.guardpages import GuardBlock

__all__ = ["Fault", "PAGES", "install", "ensure_on_top", "page_shift"]

_getframe = sys._getframe


class Fault(NamedTuple):
    """One access to a guard page, as the handler recorded it."""

    #: the block whose page was touched
    block: GuardBlock
    #: the faulting address
    address: int
    #: whether the block was freed when it was touched
    freed: bool
    #: whether the access was a write (None: the platform does not tell)
    write: bool | None
    #: the Python stack of the access, most recent call first (memguard's own frames left out)
    stack: tuple[Frame, ...]
    #: the thread that made it, as ``"name (T<ident>)"``
    thread: str


#: Page number (address >> page shift) -> the guard block that page belongs to, for every
#: page of every guard block (its guard page, and its data pages once it is freed).
PAGES: dict[int, GuardBlock] = {}
#: The handler, kept alive for the rest of the process once installed.
_HANDLER: list[Any] = []
_STACK_DEPTH = 16
_CTYPES_DIR = os.path.dirname(ctypes.__file__) + os.sep


def page_shift() -> int:
    """log2 of the page size."""
    return mman.require_mman().page_size.bit_length() - 1


def _stack_here() -> tuple[Frame, ...]:
    """The faulting thread's Python stack above the handler: memguard's frames left out, and
    ctypes' own Python wrappers (``string_at``) at its top, so it starts at the line that
    made the access."""
    frames: list[Frame] = []
    f = _getframe(2)
    while f is not None and f.f_code.co_filename.startswith(_CTYPES_DIR):
        f = f.f_back
    while f is not None and len(frames) < _STACK_DEPTH:
        if not f.f_code.co_filename.startswith(PACKAGE_DIR):
            frames.append(frame_record(f))
        f = f.f_back
    return tuple(frames)


def _thread() -> str:
    ident = threading.get_ident()
    t = threading._active.get(ident)  # type: ignore[attr-defined]  # (no lock, unlike current_thread() for a dummy)
    return f"{t.name if t is not None else 'thread'} (T{ident})"


def _on_fault(signo: int, info: int, context: int) -> None:
    """The handler: record a fault in a guard page and open the page, or step aside."""
    m = _MM[0]
    if m.sent_by_a_process(info):  # kill(), raise(): no access to complete, so send it on
        _step_aside(m, signo)
        m.resend(signo)
        return
    block = PAGES.get(m.fault_address(info) >> _SHIFT[0])
    if block is None:
        _step_aside(m, signo)
        return
    address = m.fault_address(info)
    if block.opened:
        return  # another thread opened it a moment ago: the access goes through now
    block.opened = True
    # No collection in here: the faulting thread may be inside the interpreter's own C code,
    # and a finalizer must not run in the middle of it.
    collecting = gc.isenabled()
    gc.disable()
    try:
        block.owner.faults.append(Fault(block, address, block.freed, m.fault_is_write(context), _stack_here(), _thread()))
    finally:
        m.protect(block.base, block.length, mman.PROT_RW)
        if collecting:
            gc.enable()


def _step_aside(m: mman.Mman, signo: int) -> None:
    """Not a guard page: put the previous action back, so the access faults again and crashes
    as it would have.  Called again for the same signal, the previous action chained back to
    this handler (faulthandler raises the signal again once it has printed its traceback, and
    its own previous action is this handler): then the default action ends the process."""
    if signo in _STEPPED_ASIDE:
        m.restore_default(signo)
        return
    _STEPPED_ASIDE.add(signo)
    m.restore_previous(signo)


#: The signals for which the handler stepped aside (a crash is under way): never installed again.
_STEPPED_ASIDE: set[int] = set()
_MM: list[mman.Mman] = []
_SHIFT: list[int] = []
_INSTALL_LOCK = threading.Lock()


def ensure_on_top() -> None:
    """Called by every guarded allocation: :func:`install` again when faulthandler was enabled or
    disabled since the last call, and every :data:`_RECHECK` calls (another library's handler)."""
    _CALLS[0] += 1
    if faulthandler.is_enabled() != _CALLS[1] or not _CALLS[0] % _RECHECK:
        install()


#: [calls of ensure_on_top, faulthandler's state at the last install]
_CALLS: list[Any] = [0, None]
_RECHECK = 64


def install() -> None:
    """Make the handler the action for SIGSEGV and SIGBUS (made once per process).

    Called again, it puts the handler back on top of an action installed since
    (``faulthandler.enable()`` after the first guarded heap), which becomes the previous
    action, the one a fault outside guard pages goes to.
    """
    with _INSTALL_LOCK:
        _CALLS[1] = faulthandler.is_enabled()
        if _STEPPED_ASIDE:
            return
        if not _HANDLER:
            _MM.append(mman.require_mman())
            _SHIFT.append(page_shift())
            _HANDLER.append(mman.FAULT_FN(_on_fault))
        _MM[0].install_handler(_HANDLER[0])
