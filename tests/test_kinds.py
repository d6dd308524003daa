"""The registry of finding kinds: one declaration per kind, read by errors, suppressions and verdicts."""

from __future__ import annotations

import ctypes
import itertools

import pytest

import memguard
from memguard import Frame, Report
from memguard.errors import KindError
from memguard.kinds import all_kinds, error_for, get_kind, is_leak, register_kind, rule_kind
from memguard.reporting import verdicts
from memguard.reporting.suppressions import Suppressions, SuppressionsError

_names = itertools.count(1)


def fresh(prefix: str = "test-kind") -> str:
    """A kind name no other test registered (the registry is process-wide)."""
    return f"{prefix}-{next(_names)}"


def test_every_builtin_kind_raises_its_declared_error() -> None:
    names = {k.name for k in all_kinds()}
    assert {
        "heap-buffer-overflow", "heap-buffer-underflow", "heap-use-after-free", "heap-header-corruption",
        "double-free", "bad-free", "memory-leak", "pool-buffer-overflow", "pool-buffer-underflow",
        "pool-use-after-free", "pool-double-free", "pool-bad-free", "pool-overlap", "refcount-underflow",
        "refcount-use-after-release", "refcount-saturated", "refcount-leak", "plugin-error", "callback-error",
    } <= names
    for kind in all_kinds():
        err = error_for(Report(kind=kind.name))
        assert type(err) is kind.error and isinstance(err, memguard.MemguardError)
        assert err.report.kind == kind.name


def test_leak_kinds_are_declared_not_guessed_from_the_name() -> None:
    assert is_leak("memory-leak") and is_leak("refcount-leak")
    assert not is_leak("heap-buffer-overflow") and not is_leak("never-registered-leak")
    name = fresh("quiet")
    register_kind(name, memguard.LeakError, leak=True)
    assert is_leak(name)


def test_short_rule_names_stand_for_their_kinds() -> None:
    assert rule_kind("overflow") == "heap-buffer-overflow"
    assert rule_kind("invalid-free") == rule_kind("bad-free") == "bad-free"
    assert rule_kind("leak") == "memory-leak"
    assert rule_kind("pool-double-free") == "pool-double-free"  # the full name always works
    assert rule_kind("nonsense") is None


def test_the_heaps_findings_are_all_registered(heap: memguard.GuardedHeap) -> None:
    p = heap.malloc(8)
    ctypes.memset(p + 8, 0, 1)
    heap.free(p)
    q = heap.malloc(8)
    ctypes.memset(q - 1, 0, 1)
    heap.free(q)
    heap.free(q)
    heap.free(12345)
    r = heap.malloc(32)
    heap.free(r)
    ctypes.memset(r, 1, 4)
    heap.check()
    kinds = {rep.kind for rep in heap.reports}
    assert kinds == {"heap-buffer-overflow", "heap-buffer-underflow", "double-free", "bad-free", "heap-use-after-free"}
    assert all(get_kind(k) is not None for k in kinds)


def test_a_plugin_kind_becomes_suppressible_raisable_and_judged() -> None:
    name = fresh("widget-invariant")
    with pytest.raises(SuppressionsError, match="unknown kind") as exc:
        Suppressions.parse(f"{name}:*/vendor/*")
    assert "register_kind" in str(exc.value)

    class WidgetError(memguard.MemguardError):
        pass

    kind = memguard.register_kind(name, WidgetError, rule=f"w{name}", description="widgets disagree")
    assert get_kind(name) == kind and kind.rule == f"w{name}"
    report = Report(kind=name, alloc_stack=(Frame("/src/vendor/w.py", 3, "make"),))
    for text in (f"{name}:*/vendor/*", f"w{name}:*/vendor/*"):
        sup = Suppressions.parse(text)
        kept, suppressed = sup.apply([report])
        assert kept == [] and len(suppressed) == 1
    assert isinstance(error_for(report), WidgetError)
    verdict = verdicts.judge([report], [], "warn")
    assert verdict.failed and not verdict.warned  # not a leak: always fails


def test_registering_again_is_a_no_op_but_a_conflict_is_an_error() -> None:
    name = fresh()
    first = register_kind(name, memguard.PoolError, rule=f"{name}-short")
    assert register_kind(name, memguard.PoolError, rule=f"{name}-short") is first
    with pytest.raises(KindError, match="already registered") as exc:
        register_kind(name, memguard.HeapCorruptionError)
    assert exc.value.name == name
    with pytest.raises(KindError, match="already stands for"):
        register_kind(fresh(), rule="overflow")
    with pytest.raises(KindError, match="already stands for"):
        register_kind(fresh(), rule=name)


@pytest.mark.parametrize("bad", ["", "Upper-Case", "has space", "trailing-", "-lead", "a--b", "under_score"])
def test_bad_kind_names_are_refused(bad: str) -> None:
    with pytest.raises(KindError):
        register_kind(bad)


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(KindError):
        register_kind(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="subclass of memguard.MemguardError"):
        register_kind(fresh(), ValueError)  # type: ignore[arg-type]
    with pytest.raises(KindError):
        register_kind(fresh(), rule="Bad Rule")
    assert get_kind("not-a-kind") is None


def test_the_first_party_pool_plugin_declares_its_kind() -> None:
    from memguard_plugins import pool_invariants

    kind = get_kind(pool_invariants.KIND)
    assert kind is not None and kind.error is memguard.PoolError and not kind.leak
    sup = Suppressions.parse("pool-invariant:*/vendor/*")
    assert sup.rules[0].kind == "pool-invariant"
