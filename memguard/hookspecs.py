"""The hook contract: every way a plugin can observe memguard or add checks to it.

This module is the one extension boundary of memguard.  First-party plugins (the pool
invariant checker in ``plugins/``) use exactly these hooks and nothing else.

Plugins are registered per heap (``GuardedHeap(plugins=[...])`` or
``heap.plugins.register(obj)``), per reference audit (``RefAudit(plugins=[...])``),
and, for the process-wide heap and under pytest, discovered through the entry-point
group ``memguard`` (:func:`memguard.plugin_manager.load_entrypoint_plugins`).

Conventions:

* every hook is named ``memguard_*`` and is called with keyword arguments; an
  implementation may accept any subset of the parameters (pluggy's rule);
* ``heap`` is the object the plugin is registered on: a :class:`memguard.GuardedHeap`,
  or a :class:`memguard.RefAudit` for the hooks an audit calls (``memguard_configure``,
  ``memguard_unconfigure``, ``memguard_report``, ``memguard_check``);
* a hook nobody implements costs nothing: the heap's hook seams stay ``None``;
* an exception raised by an implementation never escapes into the heap: it becomes a
  ``plugin-error`` report naming the plugin and the hook, and the other plugins still run;
* a hook implementation may allocate from the heap it observes; the allocations it makes
  are not announced to the plugins again (re-entrancy is guarded per thread).
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any, Sequence

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from memguard.heap.guarded import BlockInfo, GuardedHeap
    from memguard.leaks import LeakGroup
    from memguard.allocators.bufpool import BufAllocationInfo, BufPool, BufPoolStats
    from memguard.allocators.defrag import Defragmenter, Move
    from memguard.allocators.manager import MemoryManager, MemoryStats
    from memguard.allocators.mempool import MemPool, Region
    from memguard.refaudit import Ref, RefAudit
    from memguard.report import Report

__all__ = ["hookspec", "hookimpl", "PROJECT", "HOOK_NAMES"]

#: The pluggy project name of memguard hooks.
PROJECT = "memguard"

#: Marks a function in this module as a hook specification.
hookspec = HookspecMarker(PROJECT)
#: Marks a plugin's function or method as the implementation of a memguard hook.
hookimpl = HookimplMarker(PROJECT)


# ----------------------------------------------------------------------------- lifetime
@hookspec
def memguard_configure(heap: Any) -> None:
    """The plugin was registered on ``heap``.

    Called once per plugin: at registration, for this plugin only.  Use it to keep a
    reference to the heap or to set up per-heap state.

    :param heap: the :class:`~memguard.GuardedHeap` (or :class:`~memguard.RefAudit`) the
        plugin was registered on.
    """


@hookspec
def memguard_unconfigure(heap: Any) -> None:
    """``heap`` is being closed (:meth:`GuardedHeap.close` / :meth:`RefAudit.close`).

    Called after the final check, once, for every registered plugin.  Write summaries,
    flush files.

    :param heap: the heap or audit being closed.
    """


# ----------------------------------------------------------------------------- heap events
@hookspec
def memguard_alloc(heap: GuardedHeap, block: BlockInfo) -> None:
    """A block was allocated by ``malloc``, ``calloc``, ``memalign`` or ``realloc``.

    Called after the allocation, outside the heap lock, in the allocating thread.

    :param heap: the heap.
    :param block: the new block (``state == "live"``, with its allocation stack).
    """


@hookspec
def memguard_free(heap: GuardedHeap, block: BlockInfo) -> None:
    """A live block was freed by ``free`` or moved away by ``realloc``.

    Called after the block was poisoned and quarantined, outside the heap lock.  Not
    called for a free memguard rejected (double free, invalid free).

    :param heap: the heap.
    :param block: the freed block (``state == "quarantined"``, with both stacks; a large
        block that left the quarantine at once has ``state == "released"``).
    """


# ----------------------------------------------------------------------------- findings
@hookspec
def memguard_report(report: Report) -> None:
    """A finding was recorded (by a heap, a pool, a reference audit or a plugin check).

    Called for every finding, before ``on_error`` is applied, so it sees findings even
    when the heap raises or aborts.  Forward findings to logging, CI annotations, files.

    :param report: the finding.
    """


@hookspec
def memguard_check(heap: Any) -> list[Report] | None:
    """Run a custom check; return the findings (a list of :class:`~memguard.Report`) or ``None``.

    Called by :meth:`GuardedHeap.check` (so also by ``close()``, at exit and at the end
    of each test under pytest) and by :meth:`RefAudit.check`.  The returned reports are
    emitted with the heap's own: recorded, shown to ``memguard_report`` and acted on
    according to ``on_error``.

    :param heap: the heap (or audit) being checked.
    """


@hookspec(firstresult=True)
def memguard_leak_report(leaks: Sequence[LeakGroup], stream: IO[str], fmt: str) -> bool | None:
    """Write a leak report in a custom format.

    Called by :meth:`HeapPlugins.write_leaks` (the exit dump and the pytest plugin go
    through it).  The first implementation that returns a non-``None`` value wins and
    the default writer is skipped; return ``None`` to let others (or the default text
    and JSON writers) handle ``fmt``.

    :param leaks: the leak groups, largest first.
    :param stream: where to write.
    :param fmt: the requested format name (``"text"`` and ``"json"`` are built in).
    """


# ----------------------------------------------------------------------------- sub-allocators
@hookspec
def memguard_pool_create(pool: MemPool) -> None:
    """A sub-allocator declared itself (:class:`~memguard.MemPool` created).

    :param pool: the pool; ``pool.heap`` is its heap, ``pool.owner`` the allocator object
        that drives it (an :class:`~memguard.ObjectPool`, an interning table …).
    """


@hookspec
def memguard_pool_alloc(pool: MemPool, region: Region) -> None:
    """A pool handed out a region (``MemPool.alloc``).

    :param pool: the pool.
    :param region: the region (``state == "live"``, with its allocation stack).
    """


@hookspec
def memguard_pool_free(pool: MemPool, region: Region) -> None:
    """A pool took a region back (``MemPool.free``); not called for a rejected return.

    :param pool: the pool.
    :param region: the region (``state == "quarantined"``, with both stacks).
    """


@hookspec
def memguard_pool_move(pool: MemPool, old: Region, new: Region) -> None:
    """A pool moved a live region (``MemPool.move``: defragmentation, compaction).

    :param pool: the pool.
    :param old: the region before the move (now ``"quarantined"``).
    :param new: the region after the move (``"live"``, same allocation stack).
    """


@hookspec
def memguard_pool_destroy(pool: MemPool) -> None:
    """A pool is being destroyed (``MemPool.destroy``), before its regions are forgotten.

    :param pool: the pool; ``pool.regions()`` still lists its live regions (the leaks).
    """


# ----------------------------------------------------------------------------- refcounts
@hookspec
def memguard_refcount(audit: RefAudit, ref: Ref, op: str) -> None:
    """A tracked reference count changed.

    Called after the change, for ``op`` in ``"track"``, ``"inc"``, ``"dec"`` and
    ``"release"`` (the count reached zero; called after the destructor ran).  Not called
    for an operation that was a finding (underflow, use after release).

    :param audit: the :class:`~memguard.RefAudit`.
    :param ref: the reference (``ref.count`` is the new count).
    :param op: what happened.
    """


@hookspec
def memguard_bufpool_event(
    pool: BufPool,
    event: str,
    allocation: BufAllocationInfo | None,
    stats: BufPoolStats,
    live: Sequence[BufAllocationInfo],
) -> None:
    """A :class:`~memguard.BufPool` handed out, took back or closed: its budget after the event.

    ``stats`` and ``live`` are one consistent snapshot, taken under the pool's lock right
    after the event (events of different threads may reach the plugin in another order).
    Called outside the lock: the implementation may call ``pool.stats()``.

    :param pool: the pool (``pool.name``, ``pool.heap``, ``pool.buffer_size``, ``pool.max_memory``).
    :param event: ``"allocate"``, ``"release"`` or ``"close"``.
    :param allocation: the allocation allocated or released (``None`` for ``"close"``).
    :param stats: the pool's :class:`~memguard.BufPoolStats` after the event.
    :param live: every allocation holding budget after the event (a :class:`~memguard.BufAllocationInfo`
        each; one whose heap block is still being made has ``address == 0``).
    """


@hookspec
def memguard_defrag_pass(context: Defragmenter, phase: str, moves: Sequence[Move]) -> None:
    """A defragmentation pass of a :class:`~memguard.BlockAllocator` reached ``phase``.

    ``"begin"``: ``begin_pass()`` collected ``moves`` (destinations reserved, nothing
    copied).  ``"apply"``: ``end_pass()`` is about to carry them out (the memory is as the
    caller left it; each ``move.op`` is final).  ``"end"``: ``end_pass()`` carried them
    out (each copy was announced to ``memguard_pool_move``; ``context.stats`` is updated).
    Called outside the allocator's lock.

    :param context: the :class:`~memguard.Defragmenter` (``context.allocator``, ``context.pass_number``).
    :param phase: ``"begin"``, ``"apply"`` or ``"end"``.
    :param moves: the pass's :class:`~memguard.Move` values.
    """


@hookspec
def memguard_manager_event(manager: MemoryManager, event: str, allocation_id: str | None, stats: MemoryStats) -> None:
    """A :class:`~memguard.MemoryManager` changed: its counters right after the change.

    Called under the manager's lock (the implementation may call ``manager.snapshot()``,
    ``manager.get_stats()``); events of different threads arrive in the order they happened.

    :param manager: the manager (``manager.name``, ``manager.heap``, ``manager.total_budget``).
    :param event: ``"allocate"``, ``"allocate_from_pool"``, ``"return_to_pool"``, ``"deallocate"``,
        ``"release"``, ``"create_pool"``, ``"garbage_collect"``, ``"defragment"`` or ``"set_budget"``.
    :param allocation_id: the allocation concerned (``None`` for the events of the whole manager).
    :param stats: the manager's :class:`~memguard.MemoryStats` after the event.
    """


#: Every hook in the contract, in the order above.
HOOK_NAMES: tuple[str, ...] = tuple(
    name for name, value in list(globals().items()) if name.startswith("memguard_") and callable(value)
)
