"""The registry of finding kinds: each kind declared once, read by everything else.

A finding's kind (``"heap-buffer-overflow"``, ``"memory-leak"``, ``"pool-double-free"`` …)
decides three things, and all three are declared here, once, with the kind:

* the exception ``on_error="raise"`` raises for it (:func:`error_for`);
* whether it is a leak, governed by leak modes (``--memguard-leaks=warn`` …) rather than
  failing outright (:func:`is_leak`);
* the rule name a suppressions file uses for it (``overflow:<glob>``; the full kind name
  always works too) (:func:`rule_kind`).

Reports, suppressions, pytest verdicts and the exit report all read this registry.
Plugins that make findings of their own register their kinds with :func:`register_kind`
(usually at import time), which makes them suppressible and gives them an exception::

    import memguard
    memguard.register_kind("pool-invariant", memguard.PoolError, rule="pool-invariant",
                           description="a pool's free list and live objects disagree")

A report whose kind was never registered still works: it raises :class:`MemguardError`
and is not a leak, but a suppressions file cannot name it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memguard.errors import (
    CallbackError,
    DoubleFreeError,
    HeapCorruptionError,
    InvalidFreeError,
    KindError,
    LeakError,
    MemguardError,
    PluginError,
    PoolError,
    RefcountError,
    StringError,
)

if TYPE_CHECKING:
    from memguard.report import Report

__all__ = ["Kind", "register_kind", "get_kind", "all_kinds", "error_for", "is_leak", "rule_kind", "rule_names"]

_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*\Z")


@dataclass(frozen=True)
class Kind:
    """One kind of finding.

    :ivar name: the report kind, lowercase words joined by ``-`` (``"heap-buffer-overflow"``).
    :ivar error: the :class:`~memguard.MemguardError` subclass ``on_error="raise"`` raises.
    :ivar leak: whether the finding is a leak (judged by the leak mode, not always fatal).
    :ivar rules: the names a suppressions file may use for it besides ``name``
        (``("overflow",)``), the first being the preferred one.
    :ivar description: one line for documentation and ``memguard --help``.
    :ivar labels: how a report of this kind introduces the stack that acquired the thing
        and the stack that released it (``("allocated here:", "freed here:")``); an empty
        label puts the stack right under the report's message, which introduces it.
    """

    name: str
    error: type[MemguardError] = MemguardError
    leak: bool = False
    rules: tuple[str, ...] = ()
    description: str = ""
    labels: tuple[str, str] = ("allocated here:", "freed here:")

    @property
    def rule(self) -> str:
        """The preferred suppression-rule name (the kind's own name when it has no short one)."""
        return self.rules[0] if self.rules else self.name


_lock = threading.Lock()
_kinds: dict[str, Kind] = {}
#: Every accepted rule name (short names and full kind names) -> kind name.
_rules: dict[str, str] = {}


def register_kind(
    name: str,
    error: type[MemguardError] = MemguardError,
    *,
    leak: bool = False,
    rule: str | tuple[str, ...] | None = None,
    description: str = "",
    labels: tuple[str, str] = ("allocated here:", "freed here:"),
) -> Kind:
    """Declare a kind of finding; return its :class:`Kind`.

    :param name: the report kind (lowercase words joined by ``-``).
    :param error: the exception raised for it under ``on_error="raise"``.
    :param leak: whether it is a leak (governed by the leak mode).
    :param rule: short suppression-rule name(s) for it (the full name always works).
    :param description: one line saying what it means.
    :param labels: the words before the acquiring and the releasing stack in its reports.

    Registering the same declaration again is a no-op (a module may be imported twice);
    a different declaration under a taken name, or a rule name another kind uses,
    raises :class:`~memguard.errors.KindError`.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise KindError(f"a kind name is lowercase words joined by '-' (like 'pool-invariant'), got {name!r}", str(name))
    if not (isinstance(error, type) and issubclass(error, MemguardError)):
        raise TypeError(f"error must be a subclass of memguard.MemguardError, got {error!r}")
    rules = (rule,) if isinstance(rule, str) else tuple(rule or ())
    for r in rules:
        if not isinstance(r, str) or not _NAME.match(r):
            raise KindError(f"a rule name is lowercase words joined by '-', got {r!r}", str(r))
    if not (isinstance(labels, tuple) and len(labels) == 2 and all(isinstance(x, str) for x in labels)):
        raise TypeError(f"labels must be two strings, got {labels!r}")
    kind = Kind(name, error, bool(leak), rules, description, labels)
    with _lock:
        old = _kinds.get(name)
        if old is not None:
            if old == kind:
                return old
            raise KindError(f"the finding kind {name!r} is already registered as {old}", name)
        for r in (name, *rules):
            taken = _rules.get(r)
            if taken is not None and taken != name:
                raise KindError(f"the suppression rule {r!r} already stands for the kind {taken!r}", r)
        _kinds[name] = kind
        for r in (name, *rules):
            _rules[r] = name
    return kind


def get_kind(name: str) -> Kind | None:
    """The registered :class:`Kind` called ``name``, or ``None``."""
    return _kinds.get(name)


def all_kinds() -> tuple[Kind, ...]:
    """Every registered kind, in registration order (memguard's own first)."""
    with _lock:
        return tuple(_kinds.values())


def error_for(report: Report) -> MemguardError:
    """The exception ``on_error="raise"`` raises for ``report``."""
    kind = _kinds.get(report.kind)
    cls = kind.error if kind is not None else MemguardError
    return cls(report.headline(), report)


def is_leak(name: str) -> bool:
    """Whether findings of kind ``name`` are leaks (``memory-leak``, ``refcount-leak`` …)."""
    kind = _kinds.get(name)
    return kind is not None and kind.leak


def rule_kind(rule: str) -> str | None:
    """The kind a suppressions rule name stands for (``"overflow"`` -> ``"heap-buffer-overflow"``), or ``None``."""
    return _rules.get(rule)


def rule_names() -> list[str]:
    """Every name a suppressions rule may start with, sorted."""
    with _lock:
        return sorted(_rules)


# ----------------------------------------------------------------------------- memguard's own kinds
def _declare(
    error: type[MemguardError],
    *kinds: tuple[str, str | tuple[str, ...], str],
    leak: bool = False,
    labels: tuple[str, str] = ("allocated here:", "freed here:"),
) -> None:
    """Register memguard's own kinds of one family: ``(name, short rule names, description)``."""
    for name, rules, description in kinds:
        register_kind(name, error, leak=leak, rule=rules, description=description, labels=labels)


_declare(
    HeapCorruptionError,
    ("heap-buffer-overflow", "overflow", "bytes after a heap block were changed"),
    ("heap-buffer-underflow", "underflow", "bytes before a heap block were changed"),
    ("heap-use-after-free", "use-after-free", "a freed heap block was written to (or, on a guard page, read)"),
    ("heap-header-corruption", "header-corruption", "a block header was overwritten"),
)
_declare(DoubleFreeError, ("double-free", (), "a heap block was freed twice"))
_declare(InvalidFreeError, ("bad-free", "invalid-free", "free of an address the heap never handed out"))
_declare(InvalidFreeError, ("free-size-mismatch", "size-mismatch",
                            "a sized free passed a size that is not the block's"))
_declare(LeakError, ("memory-leak", "leak", "a block was still live when it should not have been"), leak=True)
_declare(
    PoolError,
    ("pool-buffer-overflow", (), "bytes after a pool region were changed"),
    ("pool-buffer-underflow", (), "bytes before a pool region were changed"),
    ("pool-use-after-free", (), "a region returned to its pool was written to"),
    ("pool-double-free", (), "a pool region was returned twice"),
    ("pool-bad-free", (), "a return of an address the pool never handed out"),
    ("pool-overlap", (), "a pool handed out memory that is already live"),
    ("bufpool-double-release", (), "a buffer-pool allocation was released twice"),
    ("defrag-moved-freed", (), "a defragmentation pass was moving an allocation that was freed"),
)
_declare(
    RefcountError,
    ("refcount-underflow", (), "a reference count was decremented at zero"),
    ("refcount-use-after-release", (), "a reference was taken after the count reached zero"),
    ("refcount-saturated", (), "a reference count reached its maximum"),
    labels=("tracked here:", "released here:"),
)
_declare(RefcountError, ("refcount-leak", (), "references were still held at the end"), leak=True,
         labels=("", "released here:"))
_declare(
    StringError,
    ("strtab-over-release", (), "an interned string was released more times than it was interned"),
    labels=("interned here:", "released here:"),
)
_declare(StringError, ("strtab-leak", (), "interned strings were still referenced when their table closed"),
         leak=True, labels=("", "released here:"))
_declare(
    StringError,
    ("strtab-mutation", (), "the bytes of an interned (shared, immutable) string were changed"),
    ("cow-shared-write", (), "a copy-on-write buffer was written while shared, without modify()"),
    labels=("created here:", ""),
)
_declare(
    StringError,
    ("rstr-underflow", (), "a refcounted string was released more times than it was referenced"),
    ("rstr-use-after-release", (), "a reference was taken to a refcounted string after its final release"),
    labels=("created here:", "released here:"),
)
_declare(
    PoolError,
    ("manager-wrong-pool", (), "an allocation was returned to a memory-manager pool it does not come from"),
    ("manager-double-free", (), "a memory-manager allocation was deallocated or returned twice"),
)
_declare(RefcountError, ("manager-over-release", (), "a memory-manager allocation was released with no reference"),
         labels=("allocated here:", "retired here:"))
_declare(LeakError, ("manager-leak", (), "memory-manager allocations were still live when the manager closed"),
         leak=True, labels=("allocated here:", ""))
_declare(PluginError, ("plugin-error", (), "a plugin raised inside a hook"))
_declare(CallbackError, ("callback-error", (), "an allocator callback called from C failed"))
