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
    "__version__",
]
