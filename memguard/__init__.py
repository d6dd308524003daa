"""memguard: find memory bugs in native memory driven from Python.

A guarded heap over the platform allocator (canary redzones, 0xCD/0xDD fill patterns,
a quarantine of freed blocks, double/invalid free detection, allocation and free
stacks), leak reports in LeakSanitizer's shape, and hooks for plugins.
"""

from __future__ import annotations

from .errors import (
    DoubleFreeError,
    HeapClosedError,
    HeapCorruptionError,
    InvalidFreeError,
    LeakError,
    MemguardError,
    PluginError,
    RefcountError,
)
from .heap import BlockInfo, GuardedHeap, HeapStats, InvalidAddressError
from .leaks import BlockRecord, LeakGroup, SiteDiff, Snapshot, format_leaks
from .report import Report
from .stacks import Frame
from .errors import OptionsError, SuppressionsError  # issue 3
from .options import Options  # issue 3
from .process import calloc, free, install, malloc, memalign, process_heap, realloc, uninstall  # issue 3
from .suppressions import Suppressions  # issue 3
from .errors import PoolError  # issue 4
from .hookspecs import hookimpl  # issue 4
from .mempool import MemPool, MemPoolStats, Region, all_leaks  # issue 4
from .objpool import ObjectPool, PoolStats  # issue 4
from .plugins import HeapPlugins, PluginValidationError, load_entrypoint_plugins  # issue 4
from .refaudit import Ref, RefAudit  # issue 4
from .callbacks import CAllocator  # issue 6
from .errors import CallbackError, LibraryNotFoundError  # issue 6

__version__ = "0.1.0"

__all__ = [
    "GuardedHeap",
    "BlockInfo",
    "HeapStats",
    "Report",
    "Frame",
    "Snapshot",
    "BlockRecord",
    "LeakGroup",
    "SiteDiff",
    "format_leaks",
    "MemguardError",
    "HeapCorruptionError",
    "DoubleFreeError",
    "InvalidFreeError",
    "InvalidAddressError",
    "LeakError",
    "RefcountError",
    "PluginError",
    "HeapClosedError",
    # issue 3: process-wide heap, options, suppressions
    "install",
    "uninstall",
    "process_heap",
    "malloc",
    "calloc",
    "realloc",
    "memalign",
    "free",
    "Options",
    "OptionsError",
    "Suppressions",
    "SuppressionsError",
    # issue 4: hooks, plugins, sub-allocator annotations, refcount audit, object pool
    "hookimpl",
    "HeapPlugins",
    "PluginValidationError",
    "load_entrypoint_plugins",
    "MemPool",
    "MemPoolStats",
    "Region",
    "all_leaks",
    "PoolError",
    "ObjectPool",
    "PoolStats",
    "RefAudit",
    "Ref",
    # issue 6: C libraries on the guarded heap (memguard.clibs holds the adapters)
    "CAllocator",
    "CallbackError",
    "LibraryNotFoundError",
    "__version__",
]
