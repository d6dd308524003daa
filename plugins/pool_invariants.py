"""First-party plugin: verify the invariants of every sub-allocator, from the hooks alone.

It keeps its own model of each pool, built only from the ``memguard_pool_*`` events, and
checks it against what the pool and its owner claim:

* the live regions a pool hands out never overlap, and a region is returned at most once,
  with the size it was handed out with;
* for a fixed-size owner (one with ``object_size``, ``stride`` and ``align``, such as
  :class:`memguard.ObjectPool`): every object has the object size, is aligned, and starts
  a whole number of strides into its chunk;
* at every ``heap.check()``: the pool's live regions are exactly the model's, and the
  owner's statistics add up (``allocations - frees == outstanding == live regions``,
  ``peak >= outstanding``, and free + quarantined + outstanding objects fill the chunks).

Violations are reported as ``pool-invariant`` findings by ``memguard_check``.

Usage::

    from memguard_plugins import pool_invariants
    heap = memguard.GuardedHeap(plugins=[pool_invariants])

It is also declared in the ``memguard`` entry-point group under the name
``pool_invariants``, so the process-wide heap loads it unless disabled by that name.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import memguard
from memguard import Region, Report, hookimpl

__all__ = ["KIND", "memguard_pool_create", "memguard_pool_alloc", "memguard_pool_free", "memguard_pool_move",
           "memguard_pool_destroy", "memguard_check"]

#: The kind of every finding of this plugin.
KIND = "pool-invariant"

memguard.register_kind(
    KIND, memguard.PoolError,
    description="a pool's events contradict each other (a region handed out twice, returned unknown)",
)

_lock = threading.Lock()
#: pool -> {address: size} of the regions the events say are live.
_models: weakref.WeakKeyDictionary[Any, dict[int, int]] = weakref.WeakKeyDictionary()
#: pool -> violations seen at event time, reported at the next check.
_pending: weakref.WeakKeyDictionary[Any, list[Report]] = weakref.WeakKeyDictionary()


def _violation(pool: Any, message: str, region: Region | None = None) -> Report:
    return Report(
        kind=KIND,
        address=region.address if region is not None else 0,
        size=region.size if region is not None else 0,
        alloc_stack=region.alloc_stack if region is not None else (),
        free_stack=region.free_stack if region is not None else (),
        message=f"pool {pool.name!r}: {message}",
        extra={"pool": pool.name, "plugin": __name__},
    )


def _note(pool: Any, report: Report) -> None:
    _pending.setdefault(pool, []).append(report)


def _model(pool: Any, event: Region | None = None, taken: bool = True) -> dict[int, int]:
    """The pool's model; a pool first seen now (created before this plugin was registered)
    is adopted from its own list of live regions, as it was before ``event``."""
    model = _models.get(pool)
    if model is None:
        model = _models[pool] = {r.address: r.size for r in pool.regions()}
        if event is not None:
            if taken:
                model.pop(event.address, None)
            else:
                model[event.address] = event.size
    return model


def _check_shape(pool: Any, region: Region) -> None:
    owner = pool.owner
    size = getattr(owner, "object_size", None)
    stride = getattr(owner, "stride", None)
    align = getattr(owner, "align", None)
    if size is None or stride is None or align is None:
        return
    if region.size != size:
        _note(pool, _violation(pool, f"object 0x{region.address:x} has {region.size} bytes, not {size}", region))
    if region.address % align:
        _note(pool, _violation(pool, f"object 0x{region.address:x} is not aligned to {align}", region))
    for start, length in pool.chunks():
        if start <= region.address < start + length:
            if (region.address - start) % stride:
                _note(pool, _violation(
                    pool, f"object 0x{region.address:x} is not a whole number of {stride}-byte strides into its chunk",
                    region,
                ))
            break


def _take(pool: Any, region: Region) -> None:
    model = _model(pool, region, taken=True)
    end = region.address + region.size
    for address, size in model.items():
        if address < end and region.address < address + size:
            _note(pool, _violation(
                pool, f"region [0x{region.address:x},0x{end:x}) overlaps live region [0x{address:x},0x{address + size:x})",
                region,
            ))
            break
    model[region.address] = region.size
    _check_shape(pool, region)


def _give_back(pool: Any, region: Region) -> None:
    model = _model(pool, region, taken=False)
    size = model.pop(region.address, None)
    if size is None:
        _note(pool, _violation(pool, f"region 0x{region.address:x} returned but it was not live", region))
    elif size != region.size:
        _note(pool, _violation(pool, f"region 0x{region.address:x} returned with {region.size} bytes, handed out with {size}", region))


@hookimpl
def memguard_pool_create(pool: Any) -> None:
    """Start a model for the new pool."""
    with _lock:
        _models[pool] = {}


@hookimpl
def memguard_pool_alloc(pool: Any, region: Region) -> None:
    """A region was handed out: it must not overlap a live one and must have the owner's shape."""
    with _lock:
        _take(pool, region)


@hookimpl
def memguard_pool_free(pool: Any, region: Region) -> None:
    """A region was returned: it must have been live, with the same size."""
    with _lock:
        _give_back(pool, region)


@hookimpl
def memguard_pool_move(pool: Any, old: Region, new: Region) -> None:
    """A region moved: the old one must have been live, the new one must fit."""
    with _lock:
        if pool not in _models:
            _model(pool, new, taken=True)
            _models[pool][old.address] = old.size
        _give_back(pool, old)
        _take(pool, new)


@hookimpl
def memguard_pool_destroy(pool: Any) -> None:
    """Forget the pool's model (its leaks are reported by the pool itself)."""
    with _lock:
        _models.pop(pool, None)
        _pending.pop(pool, None)


def _audit(pool: Any) -> list[Report]:
    reports = _pending.pop(pool, [])
    model = _models.get(pool, {})
    live = {r.address: r.size for r in pool.regions()}
    if live != model:
        extra = sorted(set(live) - set(model))
        missing = sorted(set(model) - set(live))
        reports.append(_violation(
            pool, f"the pool lists {len(live)} live regions, its events say {len(model)} "
            f"(unannounced: {[hex(a) for a in extra[:4]]}, vanished: {[hex(a) for a in missing[:4]]})",
        ))
    stats_of = getattr(pool.owner, "stats", None)
    if callable(stats_of):
        s = stats_of()
        fields = ("allocations", "frees", "outstanding", "peak", "free", "quarantined", "chunks", "objects_per_chunk")
        if all(hasattr(s, f) for f in fields):
            if s.allocations - s.frees != s.outstanding:
                reports.append(_violation(pool, f"allocations ({s.allocations}) - frees ({s.frees}) != outstanding ({s.outstanding})"))
            if s.outstanding != len(live):
                reports.append(_violation(pool, f"outstanding ({s.outstanding}) != live regions ({len(live)})"))
            if s.peak < s.outstanding:
                reports.append(_violation(pool, f"peak ({s.peak}) < outstanding ({s.outstanding})"))
            capacity = s.chunks * s.objects_per_chunk
            if s.free + s.quarantined + s.outstanding != capacity:
                reports.append(_violation(
                    pool, f"free ({s.free}) + quarantined ({s.quarantined}) + outstanding ({s.outstanding}) "
                    f"!= capacity ({capacity}): objects were lost or handed out twice",
                ))
    return reports


@hookimpl
def memguard_check(heap: Any) -> list[Report]:
    """Compare every pool of ``heap`` with its model and its owner's statistics."""
    if not isinstance(heap, memguard.GuardedHeap):
        return []
    reports: list[Report] = []
    with _lock:
        for pool in list(_models):
            if pool.heap is heap and not pool.destroyed:
                reports.extend(_audit(pool))
    return reports
