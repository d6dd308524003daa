"""Reference-count auditing: Linux ``refcount_t`` semantics with ``ref_tracker``'s memory.

:class:`RefAudit` tracks the reference count of anything (a Python object, a native
address, a name).  Every acquisition remembers the stack that made it, so that at
:meth:`RefAudit.check` the references still outstanding are reported grouped by the
stack that took them, the way the kernel's ``ref_tracker`` does at teardown::

    refcount-leak: prop@0x7f3a5c0 has 1/2 users at:
        #0 app.py:41 in subscribe

Findings (each with stacks, each a :class:`~memguard.Report`):

* ``refcount-underflow``: ``dec()`` at zero ("underflow; use-after-free");
* ``refcount-use-after-release``: ``inc()`` at zero ("addition on 0; use-after-free");
* ``refcount-saturated``: ``inc()`` at :data:`REFCOUNT_MAX`;
* ``refcount-leak``: references outstanding at ``check()`` / ``close()``.

Like ``refcount_t``, a reference that produced a finding *saturates*: every later
``inc``/``dec`` is ignored, so it can never wrap around into a second destruction.

The audit has the heap's ``on_error`` policy, a ``reports`` list, ``deferred_errors()``
and the same plugin hooks (``memguard_report``, ``memguard_check``, ``memguard_configure``,
``memguard_unconfigure``, plus ``memguard_refcount`` for every change).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from types import FrameType
from typing import Any, Callable, Literal

from memguard.checker import Checker
from memguard.errors import HeapClosedError
from memguard.kinds import error_for
from memguard.findings import thread_label
from memguard.report import Report
from memguard.stacks import Stack, StackTable, format_stack

__all__ = ["RefAudit", "Ref", "REFCOUNT_MAX"]

#: The largest count; one more ``inc()`` is a ``refcount-saturated`` finding.
REFCOUNT_MAX = (1 << 31) - 1
_getframe = sys._getframe


class Ref:
    """One tracked reference count (returned by :meth:`RefAudit.track`).

    :ivar name: the label used in reports (``prop``, ``buffer`` …).
    :ivar address: the address shown in reports (the target's for an ``int``, ``id()`` of
        an object, 0 for a name).
    :ivar serial: the tracking number within the audit (1 for the first ``track``).
    :ivar target: the tracked object (``None`` once released: the audit lets it go).
    """

    __slots__ = (
        "audit", "target", "name", "address", "serial", "destructor",
        "_count", "_acquires", "_track_sid", "_release_sid", "_saturated", "_released",
    )

    def __init__(self, audit: RefAudit, target: object, name: str, address: int, serial: int,
                 destructor: Callable[[Any], object] | None, initial: int, sid: int) -> None:
        self.audit = audit
        self.target = target
        self.name = name
        self.address = address
        self.serial = serial
        self.destructor = destructor
        self._count = initial
        #: Outstanding acquisitions: token -> ``[stack id, count]``, oldest first (token 0 is
        #: the ``initial`` references taken by ``track``).
        self._acquires: dict[int, list[int]] = {0: [sid, initial]}
        self._track_sid = sid
        self._release_sid = 0
        self._saturated = False
        self._released = False

    @property
    def count(self) -> int:
        """The current count (frozen once the reference saturated)."""
        return self._count

    @property
    def saturated(self) -> bool:
        """Whether a finding froze this reference (later ``inc``/``dec`` are ignored)."""
        return self._saturated

    @property
    def released(self) -> bool:
        """Whether the count reached zero (and the destructor ran)."""
        return self._released

    @property
    def label(self) -> str:
        """``name@0x<address>`` (or just the name when there is no address)."""
        return f"{self.name}@0x{self.address:x}" if self.address else self.name

    @property
    def track_stack(self) -> Stack:
        """Where :meth:`RefAudit.track` was called."""
        return self.audit._stacks.get(self._track_sid)

    @property
    def release_stack(self) -> Stack:
        """Where the count reached zero (empty while it has not)."""
        return self.audit._stacks.get(self._release_sid)

    def users(self) -> list[tuple[Stack, int]]:
        """Outstanding acquisitions grouped by stack: ``[(stack, count)]``, most first."""
        with self.audit._lock:
            runs = [tuple(run) for run in self._acquires.values()]
        counts: Counter[Stack] = Counter()
        for sid, n in runs:
            counts[self.audit._stacks.get(sid)] += n
        return counts.most_common()

    def holds(self, token: int) -> bool:
        """Whether the acquisition ``token`` (an :meth:`inc` token, or 0) is still outstanding."""
        with self.audit._lock:
            return token in self._acquires

    def inc(self, *, frame: FrameType | None = None) -> int:
        """Take a reference (``refcount_inc``); return its token (0 when it was a finding).

        Pass the token to :meth:`dec` to release exactly this acquisition, so leak
        reports name the right stack (``ref_tracker``'s handles); without one, ``dec``
        releases the most recent acquisition.  ``frame``: the frame the acquisition is
        attributed to (default: the caller's; a wrapper passes its own caller's).
        """
        return self.audit._inc(self, frame or _getframe(1))

    def dec(self, token: int | None = None, *, frame: FrameType | None = None) -> None:
        """Drop a reference (``refcount_dec``); at zero the destructor runs with the target.

        :param token: the value an :meth:`inc` returned, or ``0`` for a reference taken by
            ``track(initial=...)``; ``None``: the most recent acquisition.  A token that is
            not outstanding raises ``ValueError``.
        :param frame: the frame the release is attributed to (default: the caller's).
        """
        if token is not None and (type(token) is not int or token < 0):
            raise TypeError(f"token must be a token returned by inc(), got {token!r}")
        self.audit._dec(self, frame or _getframe(1), token)

    def __repr__(self) -> str:
        state = "saturated" if self._saturated else ("released" if self.released else f"count={self._count}")
        return f"<Ref {self.label} {state}>"


class RefAudit(Checker):
    """Audits reference counts.

    :param on_error: ``"raise"`` (record and raise :class:`~memguard.RefcountError`),
        ``"report"`` (record and carry on) or ``"abort"`` (print and abort the process).
    :param stack_depth: Python frames recorded per acquisition.
    :param plugins: objects implementing memguard hooks, registered on this audit.
    :param name: a label for traces and ``repr``.
    """

    def __init__(
        self,
        on_error: Literal["raise", "report", "abort"] = "raise",
        stack_depth: int = 8,
        plugins: tuple[object, ...] | list[object] = (),
        name: str = "refs",
    ) -> None:
        if type(stack_depth) is not int:
            raise TypeError(f"stack_depth must be an int, got {type(stack_depth).__name__}")
        if not 0 <= stack_depth <= 256:
            raise ValueError(f"stack_depth must be between 0 and 256, got {stack_depth}")
        super().__init__(name=name, on_error=on_error)
        self.stack_depth = stack_depth
        self._stacks = StackTable(stack_depth)
        self._lock = threading.RLock()
        self._refs: dict[int, Ref] = {}
        self._serial = 0
        self._tokens = 0
        self._closed = False
        for plugin in plugins:
            self.plugins.register(plugin)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    # ------------------------------------------------------------------ tracking
    def track(
        self,
        target: object,
        name: str | None = None,
        initial: int = 1,
        destructor: Callable[[Any], object] | None = None,
    ) -> Ref:
        """Start tracking ``target`` with ``initial`` references taken here.

        :param target: anything: an object, an address (``int``), a name (``str``).
        :param name: the label in reports (default: the string itself, ``"0x…"`` for an
            address, the type name for an object).
        :param initial: the starting count (>= 1; every one is attributed to this stack).
        :param destructor: called as ``destructor(target)`` when the count reaches zero.
        """
        if self._closed:
            raise HeapClosedError(f"the audit {self.name!r} is closed")
        if type(initial) is not int:
            raise TypeError(f"initial must be an int, got {type(initial).__name__}")
        if not 1 <= initial <= REFCOUNT_MAX:
            raise ValueError(f"initial must be between 1 and {REFCOUNT_MAX}, got {initial}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        if destructor is not None and not callable(destructor):
            raise TypeError(f"destructor must be callable, got {type(destructor).__name__}")
        if isinstance(target, bool) or target is None:
            raise TypeError(f"cannot track {target!r}: give an object, an address or a name")
        if isinstance(target, int):
            if target < 0:
                raise ValueError(f"an address must be >= 0, got {target}")
            address, label = target, name or "ref"
        elif isinstance(target, str):
            address, label = 0, name or target
        else:
            address, label = id(target), name or type(target).__name__
        sid = self._stacks.capture(_getframe(1))
        with self._lock:
            self._serial += 1
            ref = Ref(self, target, label, address, self._serial, destructor, initial, sid)
            self._refs[ref.serial] = ref
        on_ref = self.seams.on_ref
        if on_ref is not None:
            on_ref(self, ref, "track")
        return ref

    def untrack(self, ref: Ref) -> None:
        """Stop auditing ``ref`` (an object that is meant to live forever); no finding."""
        if not isinstance(ref, Ref) or ref.audit is not self:
            raise ValueError(f"{ref!r} is not tracked by this audit")
        with self._lock:
            self._refs.pop(ref.serial, None)
            ref._saturated = True

    def refs(self) -> list[Ref]:
        """References still held (count > 0, not saturated), oldest first."""
        with self._lock:
            return [r for r in self._refs.values() if r._count > 0 and not r._saturated]

    def _inc(self, ref: Ref, frame: Any) -> int:
        sid = self._stacks.capture(frame)
        report = None
        token = 0
        with self._lock:
            if ref._saturated:
                return 0
            if ref._count == 0:
                report = self._finding(ref, "refcount-use-after-release", "addition on 0; use-after-free", sid)
            elif ref._count >= REFCOUNT_MAX:
                report = self._finding(ref, "refcount-saturated", "saturated; leaking memory", sid)
            else:
                ref._count += 1
                self._tokens += 1
                token = self._tokens
                ref._acquires[token] = [sid, 1]
        if report is not None:
            self.emit([report])
        elif self.seams.on_ref is not None:
            self.seams.on_ref(self, ref, "inc")
        return token

    def _dec(self, ref: Ref, frame: Any, token: int | None = None) -> None:
        sid = self._stacks.capture(frame)
        report = None
        release = False
        with self._lock:
            if ref._saturated:
                return
            if ref._count == 0:
                report = self._finding(ref, "refcount-underflow", "underflow; use-after-free", sid)
            elif token is not None and token not in ref._acquires:
                raise ValueError(f"token {token} is not an outstanding acquisition of {ref.label}")
            else:
                ref._count -= 1
                runs = ref._acquires
                if runs:  # the given acquisition, or the most recent one
                    key = token if token is not None else next(reversed(runs))
                    runs[key][1] -= 1
                    if not runs[key][1]:
                        del runs[key]
                if ref._count == 0:
                    ref._release_sid = sid
                    ref._released = True
                    self._refs.pop(ref.serial, None)
                    release = True
        if report is not None:
            self.emit([report])
            return
        if release:
            target, ref.target = ref.target, None
            if ref.destructor is not None:
                ref.destructor(target)
            on_ref = self.seams.on_ref
            if on_ref is not None:
                on_ref(self, ref, "release")
        elif self.seams.on_ref is not None:
            self.seams.on_ref(self, ref, "dec")

    def _finding(self, ref: Ref, kind: str, what: str, sid: int) -> Report:
        """A finding about ``ref``: saturate it and describe it (call with the lock held)."""
        ref._saturated = True
        self._refs.pop(ref.serial, None)
        return Report(
            kind=kind, address=ref.address, stack=self._stacks.get(sid),
            alloc_stack=self._stacks.get(ref._track_sid), free_stack=self._stacks.get(ref._release_sid),
            thread=thread_label(), count=ref._count,
            message=f"refcount_t: {what}: {ref.label} (reference now saturated)",
            extra={"name": ref.name, "ref": ref.serial},
        )

    # ------------------------------------------------------------------ checking
    def leaks(self) -> list[Report]:
        """``refcount-leak`` reports for the references still held, without emitting them.

        One report per reference and acquiring stack, in ``ref_tracker``'s words:
        ``"prop@0x… has 1/2 users at:"``.
        """
        reports = []
        for ref in self.refs():
            for stack, n in ref.users():
                reports.append(
                    Report(
                        kind="refcount-leak", address=ref.address, alloc_stack=stack, count=n,
                        message=f"{ref.label} has {n}/{ref._count} users at:",
                        extra={"name": ref.name, "ref": ref.serial, "users": n, "count": ref._count},
                    )
                )
        return reports

    def format_leaks(self) -> str:
        """The outstanding references as ``ref_tracker`` prints them ("" when none)."""
        return "\n".join(f"{r.message}\n{format_stack(r.alloc_stack)}" for r in self.leaks())

    def verify(self) -> list[Report]:
        """Every reference still held, as ``refcount-leak`` findings (``check()`` emits them).

        ``check()`` adds plugins' ``memguard_check`` findings and raises (with
        ``on_error="raise"``) findings deferred by :meth:`deferred_errors`.
        """
        return self.leaks()

    def close(self) -> list[Report]:
        """Check one last time, then refuse further ``track`` calls; closing twice is a no-op."""
        if self._closed:
            return []
        try:
            with self.reporting():
                reports = self.check()
        finally:
            self._closed = True
            if self.has_plugins:
                self.plugins.heap_closed()
        if reports and self.on_error == "raise":
            raise error_for(reports[0])
        if reports and self.on_error == "abort":  # pragma: no cover - aborts
            self._abort(reports)
        return reports

    def __repr__(self) -> str:
        return f"<RefAudit {self.name!r}: {len(self.refs())} held, {len(self.reports)} report(s)>"
