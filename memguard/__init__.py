"""memguard: find memory bugs in native memory driven from Python.

A guarded heap over the platform allocator (canary redzones, 0xCD/0xDD fill patterns,
a quarantine of freed blocks, double/invalid free detection, allocation and free
stacks), leak reports in LeakSanitizer's shape, and hooks for plugins.

This module is the public facade: every name in :data:`__all__` is imported from the
module that defines it on first use (PEP 562), so ``import memguard`` (and the pytest
plugin, which every pytest run loads) costs almost nothing until memguard is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memguard._lazy import lazy_exports
from memguard._version import __version__

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    # the heap
    "GuardedHeap": "memguard.heap.guarded",
    "BlockInfo": "memguard.heap.layout",
    "HeapStats": "memguard.heap.layout",
    "HeapRegion": "memguard.heap.layout",
    "HeapSlot": "memguard.heap.layout",
    "InvalidAddressError": "memguard.heap.guarded",
    # records and reports
    "Report": "memguard.report",
    "Frame": "memguard.stacks",
    "Snapshot": "memguard.leaks",
    "BlockRecord": "memguard.leaks",
    "LeakGroup": "memguard.leaks",
    "SiteDiff": "memguard.leaks",
    "format_leaks": "memguard.leaks",
    # the checker contract and the kinds of finding
    "Checker": "memguard.checker",
    "Kind": "memguard.kinds",
    "register_kind": "memguard.kinds",
    # errors
    "MemguardError": "memguard.errors",
    "HeapCorruptionError": "memguard.errors",
    "DoubleFreeError": "memguard.errors",
    "InvalidFreeError": "memguard.errors",
    "LeakError": "memguard.errors",
    "RefcountError": "memguard.errors",
    "PluginError": "memguard.errors",
    "HeapClosedError": "memguard.errors",
    "GuardPagesUnavailableError": "memguard.errors",
    "BreakOnAllocation": "memguard.errors",
    "BufPoolClosedError": "memguard.errors",
    "BufPoolTimeoutError": "memguard.errors",
    "OptionsError": "memguard.errors",
    "SuppressionsError": "memguard.errors",
    "PoolError": "memguard.errors",
    "CallbackError": "memguard.errors",
    "LibraryNotFoundError": "memguard.errors",
    "TrampolineUnavailableError": "memguard.errors",
    "BackendError": "memguard.errors",
    "BackendUnavailableError": "memguard.errors",
    "KindError": "memguard.errors",
    # the process-wide heap, options, suppressions
    "install": "memguard.process",
    "uninstall": "memguard.process",
    "process_heap": "memguard.process",
    "malloc": "memguard.process",
    "calloc": "memguard.process",
    "realloc": "memguard.process",
    "memalign": "memguard.process",
    "free": "memguard.process",
    "Options": "memguard.options",
    "Suppressions": "memguard.reporting.suppressions",
    # hooks and plugins
    "hookimpl": "memguard.hookspecs",
    "HeapPlugins": "memguard.plugin_manager",
    "PluginValidationError": "memguard.plugin_manager",
    "load_entrypoint_plugins": "memguard.plugin_manager",
    # sub-allocators and audits
    "MemPool": "memguard.allocators.mempool",
    "MemPoolStats": "memguard.allocators.mempool",
    "Region": "memguard.allocators.mempool",
    "all_leaks": "memguard.allocators.mempool",
    "ObjectPool": "memguard.allocators.objpool",
    "PoolStats": "memguard.allocators.objpool",
    "BuddyAllocator": "memguard.allocators.buddy",
    "BuddyRegion": "memguard.allocators.buddy",
    "BuddyError": "memguard.errors",
    "NotEnoughSpaceError": "memguard.errors",
    "NotAllocatedError": "memguard.errors",
    "InvalidMemoryClassError": "memguard.errors",
    "EmptyPoolError": "memguard.errors",
    "memory_class": "memguard.allocators.buddy",
    "class_size": "memguard.allocators.buddy",
    "BlockAllocator": "memguard.allocators.blocks",
    "Allocation": "memguard.allocators.blocks",
    "PageInfo": "memguard.allocators.blocks",
    "BlockStats": "memguard.allocators.blocks",
    "Defragmenter": "memguard.allocators.defrag",
    "Move": "memguard.allocators.defrag",
    "DefragStats": "memguard.allocators.defrag",
    "heapmap": "memguard.reporting.html",
    "defrag_snapshot": "memguard.reporting.html",
    "HeapMap": "memguard.heapmaps",
    "DefragmentationError": "memguard.errors",
    "BufPool": "memguard.allocators.bufpool",
    "BufPoolStats": "memguard.allocators.bufpool",
    "BufAllocation": "memguard.allocators.bufpool",
    "BufAllocationInfo": "memguard.allocators.bufpool",
    "StringTable": "memguard.allocators.strings",
    "InternedString": "memguard.allocators.strings",
    "StringTableStats": "memguard.allocators.strings",
    "RString": "memguard.allocators.strings",
    "CowString": "memguard.allocators.strings",
    "StringError": "memguard.errors",
    "MemoryManager": "memguard.allocators.manager",
    "AllocationInfo": "memguard.allocators.manager",
    "MemoryPool": "memguard.allocators.manager",
    "MemoryStats": "memguard.allocators.manager",
    "MemoryManagerError": "memguard.errors",
    "BudgetExceededError": "memguard.errors",
    "AllocationNotFoundError": "memguard.errors",
    "PoolExistsError": "memguard.errors",
    "PoolNotFoundError": "memguard.errors",
    "PoolExhaustedError": "memguard.errors",
    "RefAudit": "memguard.refaudit",
    "Ref": "memguard.refaudit",
    # C libraries on the guarded heap (memguard.clibs holds the adapters)
    "CAllocator": "memguard.heap.c_allocator",
    "CLibraryError": "memguard.clibs.common",
    # guarded ctypes buffers
    "create_string_buffer": "memguard.ctypes_buffers",
}

__all__ = [*_EXPORTS, "__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from memguard.allocators.blocks import Allocation, BlockAllocator, BlockStats, PageInfo
    from memguard.allocators.defrag import DefragStats, Defragmenter, Move
    from memguard.allocators.bufpool import BufAllocation, BufAllocationInfo, BufPool, BufPoolStats
    from memguard.allocators.manager import AllocationInfo, MemoryManager, MemoryPool, MemoryStats
    from memguard.allocators.mempool import MemPool, MemPoolStats, Region, all_leaks
    from memguard.allocators.buddy import BuddyAllocator, BuddyRegion, class_size, memory_class
    from memguard.allocators.objpool import ObjectPool, PoolStats
    from memguard.allocators.strings import CowString, InternedString, RString, StringTable, StringTableStats
    from memguard.checker import Checker
    from memguard.clibs.common import CLibraryError
    from memguard.heap.c_allocator import CAllocator
    from memguard.ctypes_buffers import create_string_buffer
    from memguard.errors import (
        AllocationNotFoundError,
        BackendError,
        BackendUnavailableError,
        BudgetExceededError,
        MemoryManagerError,
        PoolExhaustedError,
        PoolExistsError,
        PoolNotFoundError,
        BuddyError,
        BufPoolClosedError,
        BufPoolTimeoutError,
        CallbackError,
        DefragmentationError,
        DoubleFreeError,
        EmptyPoolError,
        HeapClosedError,
        HeapCorruptionError,
        InvalidFreeError,
        InvalidMemoryClassError,
        KindError,
        LeakError,
        LibraryNotFoundError,
        MemguardError,
        NotAllocatedError,
        NotEnoughSpaceError,
        OptionsError,
        PluginError,
        PoolError,
        RefcountError,
        StringError,
        SuppressionsError,
        TrampolineUnavailableError,
    )
    from memguard.heap.guarded import GuardedHeap, InvalidAddressError
    from memguard.heap.layout import BlockInfo, HeapRegion, HeapSlot, HeapStats
    from memguard.hookspecs import hookimpl
    from memguard.kinds import Kind, register_kind
    from memguard.leaks import BlockRecord, LeakGroup, SiteDiff, Snapshot, format_leaks
    from memguard.options import Options
    from memguard.plugin_manager import HeapPlugins, PluginValidationError, load_entrypoint_plugins
    from memguard.process import calloc, free, install, malloc, memalign, process_heap, realloc, uninstall
    from memguard.refaudit import Ref, RefAudit
    from memguard.report import Report
    from memguard.reporting.suppressions import Suppressions
    from memguard.stacks import Frame
