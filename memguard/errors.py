"""The exception hierarchy: one root, structured fields, one class per family of finding.

Every exception memguard raises on purpose derives from :class:`MemguardError`.  A
finding raised under ``on_error="raise"`` carries its :class:`~memguard.Report` as
``.report``; which class a finding raises is declared once, with the finding's kind,
in :mod:`memguard.kinds`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memguard.report import Report

__all__ = [
    "MemguardError",
    "HeapCorruptionError",
    "DoubleFreeError",
    "InvalidFreeError",
    "LeakError",
    "RefcountError",
    "PoolError",
    "PluginError",
    "CallbackError",
    "HeapClosedError",
    "BufPoolClosedError",
    "BufPoolTimeoutError",
    "LibraryNotFoundError",
    "TrampolineUnavailableError",
    "BackendError",
    "BackendUnavailableError",
    "OptionsError",
    "SuppressionsError",
    "KindError",
    "BuddyError",
    "NotEnoughSpaceError",
    "NotAllocatedError",
    "InvalidMemoryClassError",
    "EmptyPoolError",
    "DefragmentationError",
    "StringError",
    "MemoryManagerError",
    "BudgetExceededError",
    "AllocationNotFoundError",
    "PoolExistsError",
    "PoolNotFoundError",
    "PoolExhaustedError",
    "GuardPagesUnavailableError",
    "BreakOnAllocation",
]


class MemguardError(Exception):
    """Root of every memguard exception.

    :ivar report: the :class:`memguard.Report` behind the error, when there is one.
    """

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report

    @property
    def kind(self) -> str | None:
        """The report kind (``"heap-buffer-overflow"`` …), or ``None``."""
        return self.report.kind if self.report is not None else None


# ----------------------------------------------------------------------------- findings
class HeapCorruptionError(MemguardError):
    """Overflow, underflow or use-after-free write: bytes memguard owns were changed."""


class DoubleFreeError(MemguardError):
    """A block was freed twice."""


class InvalidFreeError(MemguardError):
    """``free`` of an address memguard never handed out, or of an interior pointer."""


class LeakError(MemguardError):
    """Blocks were still live when they should not have been."""


class RefcountError(MemguardError):
    """A reference count went wrong (underflow, use after release, leak)."""


class PoolError(MemguardError):
    """A finding in a sub-allocator declared with :class:`memguard.MemPool`.

    Overflow between regions, use after return, double return, return of a foreign
    address, overlapping hand-outs (the ``pool-*`` report kinds).
    """


class StringError(MemguardError):
    """A misused native string: an interned one released too often, changed or leaked, a
    copy-on-write buffer written while shared, a refcounted string released at zero
    (the ``strtab-*``, ``cow-*`` and ``rstr-*`` report kinds)."""


class PluginError(MemguardError):
    """A plugin raised inside a hook."""


class CallbackError(MemguardError):
    """An allocator callback called from C failed in a way that is not a heap finding.

    For example a negative size from a C ``int`` parameter, or an unexpected Python
    exception inside the callback.  The callback returned NULL to C and recorded a
    ``callback-error`` report, which the next :meth:`GuardedHeap.check` raises.
    """


# ----------------------------------------------------------------------------- misuse
class HeapClosedError(MemguardError):
    """A checker (heap, audit, pool) was used after ``close()``."""


class BufPoolClosedError(HeapClosedError):
    """:meth:`memguard.BufPool.allocate` after ``close()`` began (a waiting caller gets it too).

    :ivar pool: the pool's name.
    :ivar requested: the buffers the caller asked for.
    """

    def __init__(self, message: str, pool: str = "", requested: int = 0) -> None:
        super().__init__(message)
        self.pool = pool
        self.requested = requested


class BufPoolTimeoutError(MemguardError, TimeoutError):
    """A :class:`memguard.BufPool` wait ran out of time (``allocate`` or ``close``).

    :ivar pool: the pool's name.
    :ivar timeout: the seconds waited.
    :ivar live: for ``close``, the allocations still live (``BufAllocationInfo`` values,
        each with its ``alloc_stack``); empty for ``allocate``.
    """

    def __init__(self, message: str, pool: str = "", timeout: float = 0.0, live: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.pool = pool
        self.timeout = timeout
        self.live = live


class LibraryNotFoundError(MemguardError, OSError):
    """A C library (zlib, libbz2, liblzma, libexpat, libsqlite3, …) is not installed."""


class TrampolineUnavailableError(MemguardError):
    """An integration that needs the exception-preserving trampolines, which this install lacks.

    The trampolines are memguard's one optional C extension (``memguard._trampoline``),
    built when a C compiler was present at install time.  Integrations whose C library
    calls the allocator with a Python exception pending (NumPy, SQLite) refuse to
    install without it.

    :ivar integration: what refused (``"memguard.numpy"``).
    :ivar reason: why the trampolines are missing.
    """

    def __init__(self, message: str, integration: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.integration = integration
        self.reason = reason


class BackendError(MemguardError, ValueError):
    """An allocator backend memguard does not know (a name not in ``BACKEND_NAMES``),
    or a value that is not a backend.

    :ivar name: what was asked for.
    :ivar known: the names memguard knows.
    """

    def __init__(self, message: str, name: str = "", known: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.known = known


class BackendUnavailableError(LibraryNotFoundError):
    """A known allocator backend whose library cannot be loaded in this process.

    :ivar backend: the backend's name (``"jemalloc"``).
    :ivar library: the shared library it needs (``"libjemalloc.so.2"``).
    :ivar package: the Debian package that installs it (``"libjemalloc2"``).
    """

    def __init__(self, message: str, backend: str = "", library: str = "", package: str = "") -> None:
        super().__init__(message)
        self.backend = backend
        self.library = library
        self.package = package


class OptionsError(MemguardError, ValueError):
    """A bad ``MEMGUARD_OPTIONS`` entry or ``install()`` keyword: unknown key or bad value.

    :ivar key: the option's name (``None`` when the text could not be split into keys).
    :ivar allowed: a description of the allowed values (or the known keys).
    """

    def __init__(self, message: str, key: str | None = None, allowed: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.allowed = allowed


class SuppressionsError(MemguardError, ValueError):
    """A suppressions file that cannot be read, or a malformed line in one.

    :ivar filename: the file (``"<string>"`` for text given directly).
    :ivar lineno: the 1-based line number (0 when the whole file is at fault).
    """

    def __init__(self, message: str, filename: str = "<string>", lineno: int = 0) -> None:
        super().__init__(message)
        self.filename = filename
        self.lineno = lineno


class KindError(MemguardError, ValueError):
    """A finding kind that cannot be registered: a bad name, or one already taken.

    :ivar name: the kind (or rule) name at fault.
    """

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class BuddyError(MemguardError):
    """A refused buddy-allocator operation.

    :ivar size: the requested size (``None`` for a release).
    :ivar size_class: the memory class involved (``None`` when there is none).
    :ivar offset: the offset involved (``None`` for an allocation).
    """

    def __init__(self, message: str, size: int | None = None, size_class: int | None = None,
                 offset: int | None = None) -> None:
        super().__init__(message)
        self.size = size
        self.size_class = size_class
        self.offset = offset


class NotEnoughSpaceError(BuddyError):
    """"not enough space": no free region of the class or of a larger one."""


class NotAllocatedError(BuddyError):
    """"no memory allocated at the given offset": the region is not one handed out and still held."""


class InvalidMemoryClassError(BuddyError):
    """"invalid memory class": a size of 0 or larger than the largest class, or a class out of range."""


class EmptyPoolError(BuddyError):
    """"operation on empty pool": a release into a class that no split ever created."""


class DefragmentationError(MemguardError):
    """A misused defragmenter: ``begin_pass`` twice, ``end_pass`` with no pass begun, or a
    context used after its allocator changed underneath it.

    :ivar allocator: the block allocator's name.
    :ivar pass_number: the pass involved (1 for the first; 0 before any).
    """

    def __init__(self, message: str, allocator: str = "", pass_number: int = 0) -> None:
        super().__init__(message)
        self.allocator = allocator
        self.pass_number = pass_number


class MemoryManagerError(MemguardError):
    """Misuse or exhaustion of a :class:`~memguard.MemoryManager`.

    :ivar manager: the manager's name.
    """

    def __init__(self, message: str, manager: str = "") -> None:
        super().__init__(message)
        self.manager = manager


class BudgetExceededError(MemoryManagerError, MemoryError):
    """A request would take a manager's allocated bytes over its budget.

    :ivar requested: the bytes asked for (for ``set_budget``, the budget asked for).
    :ivar budget: the manager's ``total_budget``.
    :ivar allocated: the bytes allocated when the request was refused.
    """

    def __init__(self, message: str, manager: str = "", requested: int = 0, budget: int = 0,
                 allocated: int = 0) -> None:
        super().__init__(message, manager)
        self.requested = requested
        self.budget = budget
        self.allocated = allocated


class AllocationNotFoundError(MemoryManagerError, LookupError):
    """An allocation id the manager does not hold (never handed out, or retired).

    :ivar allocation_id: the id asked for.
    """

    def __init__(self, message: str, manager: str = "", allocation_id: str = "") -> None:
        super().__init__(message, manager)
        self.allocation_id = allocation_id


class PoolExistsError(MemoryManagerError, ValueError):
    """``create_pool`` with the id of a pool the manager already has.

    :ivar pool: the pool id.
    """

    def __init__(self, message: str, manager: str = "", pool: str = "") -> None:
        super().__init__(message, manager)
        self.pool = pool


class PoolNotFoundError(MemoryManagerError, LookupError):
    """A pool id the manager does not have.

    :ivar pool: the pool id.
    """

    def __init__(self, message: str, manager: str = "", pool: str = "") -> None:
        super().__init__(message, manager)
        self.pool = pool


class PoolExhaustedError(MemoryManagerError, MemoryError):
    """A pool has no free chunk and already holds ``max_count`` chunks.

    :ivar pool: the pool id.
    :ivar max_count: its maximum number of chunks.
    """

    def __init__(self, message: str, manager: str = "", pool: str = "", max_count: int = 0) -> None:
        super().__init__(message, manager)
        self.pool = pool
        self.max_count = max_count


# ----------------------------------------------------------------------------- guard pages, breakpoints
class GuardPagesUnavailableError(MemguardError):
    """Guard pages (``guard=``, ``guard_sample=``) were asked for on a platform that lacks them.

    They need Linux on x86-64 or aarch64 (``mmap``, ``mprotect``, ``sigaction``).
    """


class BreakOnAllocation(MemguardError):
    """Raised by a heap made with ``break_on=SERIAL`` just before it makes allocation SERIAL.

    :ivar serial: the allocation number the heap was asked to stop at.
    :ivar size: the size that allocation asked for.
    :ivar heap: the heap's name.
    """

    def __init__(self, message: str, serial: int = 0, size: int = 0, heap: str = "") -> None:
        super().__init__(message)
        self.serial = serial
        self.size = size
        self.heap = heap
