"""The checker contract: what every heap, audit, pool and memory manager shares.

A *checker* is anything that finds memory bugs and reports them as
:class:`~memguard.Report` findings: the guarded heap, a refcount audit, the pool
annotations, an object pool, and every manager built on them.  :class:`Checker` owns,
once for all of them:

* the findings list (:attr:`Checker.reports`) and ``on_error`` (``"raise"`` raises the
  exception the finding's kind declares in :mod:`memguard.kinds`, ``"report"`` carries
  on, ``"abort"`` prints the report and aborts the process, like AddressSanitizer's
  ``halt_on_error``);
* :meth:`Checker.emit`, the one method a checker calls to make findings;
* deferral, for code that must not raise (allocator callbacks called from C, hooks):
  :meth:`Checker.deferred_errors` records a finding at once and raises it at the next
  :meth:`Checker.check`; :meth:`Checker.hold_errors` raises it when a compound operation
  has finished its bookkeeping; :meth:`Checker.reporting` never raises;
* the plugin manager (:attr:`Checker.plugins`, created on first use) and the hook seams
  (:class:`~memguard.seams.Seams`, one object, set by :meth:`Checker.set_seams`);
* registration: a checker created over a heap (``Checker(heap=heap)``) reports through
  that heap (its findings, ``on_error`` and plugins are the heap's) and registers with
  it, so ``heap.check()``, the exit report and the pytest plugin verify every live
  checker of the heap through :meth:`Checker.verify` without knowing its type.

A new checker subclasses :class:`Checker`, implements :meth:`verify` (verify now, return
the findings without emitting them) and :meth:`close`, and calls :meth:`emit` wherever it
detects something.  ``docs/architecture.md`` walks through one.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import weakref
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, TypeVar

from memguard.errors import HeapClosedError
from memguard.heapmaps import DEFAULT_WIDTH, render_svg
from memguard.kinds import error_for
from memguard.report import Report
from memguard.seams import NO_SEAMS, Seams

if TYPE_CHECKING:
    from memguard.plugin_manager import HeapPlugins

__all__ = ["Checker", "ON_ERROR"]

_C = TypeVar("_C", bound="Checker")

#: The accepted values of ``on_error``.
ON_ERROR = ("raise", "report", "abort")





class _Deferral(threading.local):
    """Per-thread deferral state of a checker (class attributes are each thread's defaults)."""

    #: Nesting depth of :meth:`Checker.deferred_errors` (C trampolines bump it directly).
    depth = 0
    #: Findings held by :meth:`Checker.hold_errors`, or ``None`` outside one.
    held: list[Report] | None = None


_serials = itertools.count(1)


class _Hold:
    """The context manager :meth:`Checker.hold_errors` returns."""

    __slots__ = ("root", "outer")

    def __init__(self, root: Checker) -> None:
        self.root = root
        self.outer = False

    def __enter__(self) -> list[Report]:
        deferral = self.root._deferral
        held = deferral.held
        self.outer = held is not None
        if held is None:
            held = deferral.held = []
        return held

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        __tracebackhide__ = True
        if self.outer:
            return
        deferral = self.root._deferral
        held, deferral.held = deferral.held, None
        if held and exc_type is None and self.root.on_error == "raise":
            raise error_for(held[0])


class _Registering(type):
    """Registers a checker created over a heap with that heap once it is fully built.

    Registering from ``Checker.__init__`` would let another thread's ``heap.check()`` see
    a checker whose subclass ``__init__`` has not finished; one whose ``__init__`` raises
    is never registered.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        checker = super().__call__(*args, **kwargs)
        parent = checker._parent
        if parent is not None:
            with parent._registered_lock:
                parent._registered[next(_serials)] = checker
        return checker


class Checker(metaclass=_Registering):
    """Base class of every memguard checker (see the module documentation).

    :param name: the checker's name in reports, traces and ``repr``.
    :param on_error: ``"raise"``, ``"report"`` or ``"abort"``; for a checker created over a
        heap, ``None`` (the default) means the heap's, which it then always follows.
    :param heap: the checker (usually a :class:`~memguard.GuardedHeap`) this one works over
        and reports through; ``None`` for a checker of its own.

    :ivar name: the checker's name.
    :ivar reports: every finding this checker made, oldest first (for a checker over a
        heap, its own findings; they are on the heap's list too).
    :ivar seams: the current :class:`Seams`.
    """

    name: str
    reports: list[Report]
    seams: Seams = NO_SEAMS

    def __init__(
        self,
        *,
        name: str,
        on_error: str | None = "raise",
        heap: Checker | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if heap is not None and not isinstance(heap, Checker):
            raise TypeError(f"heap must be a GuardedHeap (a memguard Checker), got {type(heap).__name__}")
        if on_error is not None and on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
        if heap is None and on_error is None:
            raise ValueError("on_error=None (follow the heap) needs a heap")
        self.name = name
        self.reports = []
        #: The checker whose findings list, on_error and plugins this one uses (None: its own;
        #: not ``self``, which would make every checker a reference cycle).
        self._root: Checker | None = None if heap is None else (heap._root or heap)
        self._parent = heap
        self._on_error = on_error if heap is None else None
        self._deferral: _Deferral = _Deferral() if heap is None else (heap._root or heap)._deferral
        self._deferred: list[Report] = []
        self._plugins: HeapPlugins | None = None
        self._registered: weakref.WeakValueDictionary[int, Checker] = weakref.WeakValueDictionary()
        self._registered_lock = threading.Lock()
        if heap is not None:
            if heap.closed:
                raise HeapClosedError(f"{heap.name!r} is closed")
            if on_error is not None and on_error != heap.on_error:
                raise ValueError(
                    f"a checker over {heap.name!r} follows its on_error ({heap.on_error!r}); got on_error={on_error!r}"
                )

    # ------------------------------------------------------------------ identity
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called (subclasses say when)."""
        return False

    @property
    def on_error(self) -> str:
        """``"raise"``, ``"report"`` or ``"abort"`` (a checker over a heap follows the heap's)."""
        root = self._root or self
        return root._on_error if root is self else root.on_error  # type: ignore[return-value]

    @on_error.setter
    def on_error(self, value: str) -> None:
        if value not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}; got {value!r}")
        if self._root is not None:
            raise AttributeError(f"{self.name!r} follows the on_error of {self._root.name!r}; set it there")
        self._on_error = value

    # ------------------------------------------------------------------ findings
    def emit(self, reports: list[Report] | tuple[Report, ...] | None) -> None:
        """Make findings: record them, tell the plugins (``memguard_report``), act on ``on_error``.

        The one method a checker calls for what it detects.  Under ``"raise"`` the first
        finding's exception is raised (``__tracebackhide__`` keeps this frame out of
        pytest's tracebacks), unless the thread is inside :meth:`deferred_errors` (raised
        by the next :meth:`check`) or :meth:`hold_errors` (raised when it ends).  A
        checker over a heap records the findings on its own list and emits them on the heap.
        """
        if not reports:
            return
        __tracebackhide__ = True
        reports = list(reports)
        if self._root is not None:
            self.reports.extend(reports)
            self._root.emit(reports)
            return
        self._record(reports)
        on_error = self._on_error
        if on_error == "raise":
            deferral = self._deferral
            if deferral.depth:
                self._deferred.extend(reports)
                return
            if deferral.held is not None:
                deferral.held.extend(reports)
                return
            raise error_for(reports[0])
        if on_error == "abort":
            self._abort(reports)

    def _record(self, reports: list[Report]) -> None:
        """Append findings to :attr:`reports` and tell the plugins."""
        self.reports.extend(reports)
        on_report = self.seams.on_report
        if on_report is not None:
            for r in reports:
                on_report(r)

    def settle(self, reports: list[Report]) -> list[Report]:
        """End a ``check()``: raise a deferred finding first, else emit ``reports``; return all.

        For :meth:`check` implementations: the findings deferred since the last check
        (:meth:`deferred_errors`) come first, and under ``"raise"`` the oldest is raised.
        """
        __tracebackhide__ = True
        root = self._root or self
        if root is not self:
            return root.settle(reports)
        pending, self._deferred = self._deferred, []
        if pending and self._on_error == "raise":
            self._record(reports)
            raise error_for(pending[0])
        self.emit(reports)
        return pending + reports

    @staticmethod
    def _abort(reports: list[Report]) -> None:
        for r in reports:
            print(r, file=sys.stderr)
        sys.stderr.flush()
        os.abort()

    # ------------------------------------------------------------------ deferral
    @property
    def deferral(self) -> _Deferral:
        """This thread's deferral state (``deferral.depth`` > 0: findings are deferred).

        Allocator trampolines called from C increment and decrement ``depth`` directly,
        which is cheaper than entering :meth:`deferred_errors`; all other code uses that.
        """
        return self._deferral

    @contextmanager
    def deferred_errors(self) -> Iterator[None]:
        """Within this block (in this thread), ``on_error="raise"`` records instead of raising.

        Findings are recorded (and seen by plugins) at once, and the next ``check()``
        raises the first of them.
        """
        deferral = self._deferral
        deferral.depth += 1
        try:
            yield
        finally:
            deferral.depth -= 1

    def hold_errors(self) -> _Hold:
        """Within this block (in this thread), findings are raised only when it ends.

        For a compound operation (an object pool's ``get`` that claims a region and
        updates its counters) that must finish its bookkeeping before a finding is
        raised.  Findings are recorded and seen by plugins at once; the list the block
        yields collects them.  Under ``"raise"`` the first is raised at the end of the
        block, unless the block itself raised.  Nested blocks hold for the outermost.
        (A small class, not a generator: pools enter it on every call.)
        """
        return _Hold(self._root or self)

    @contextmanager
    def reporting(self) -> Iterator[str]:
        """Within this block, findings are recorded and passed on but never raised.

        Yields the ``on_error`` value in force before the block, which is restored after it.
        """
        root = self._root or self
        saved, root._on_error = root._on_error, "report"
        try:
            yield saved  # type: ignore[misc]
        finally:
            root._on_error = saved

    # ------------------------------------------------------------------ plugins
    @property
    def plugins(self) -> HeapPlugins:
        """The plugin manager (created on first use; a checker over a heap uses the heap's)."""
        root = self._root or self
        if root is not self:
            return root.plugins
        if self._plugins is None:
            from memguard.plugin_manager import HeapPlugins

            self._plugins = HeapPlugins(self)
        return self._plugins

    @property
    def has_plugins(self) -> bool:
        """Whether a plugin manager exists (without creating one)."""
        return (self._root or self)._plugins is not None

    def set_seams(self, seams: Seams) -> None:
        """Install the hook seams (called by the plugin manager when its plugins change).

        A subclass that keeps seams elsewhere too (the heap's fast paths) extends this.
        """
        self.seams = seams

    def observes(self, hook_name: str) -> bool:
        """Whether some plugin implements ``hook_name`` (to skip building a hook's arguments)."""
        manager = (self._root or self)._plugins
        return manager is not None and hook_name in manager.implemented

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an event hook (``memguard_pool_alloc`` …) if some plugin implements it.

        Free when no plugin manager exists or no plugin implements the hook; a plugin's
        error is recorded and raised by the next check.
        """
        manager = (self._root or self)._plugins
        if manager is not None and hook_name in manager.implemented:
            manager.event(hook_name, **kwargs)

    # ------------------------------------------------------------------ verification
    def registered(self) -> list[Checker]:
        """The live checkers created over this one, oldest first."""
        with self._registered_lock:  # another thread may be creating a checker over this one
            checkers = sorted(self._registered.items())
        return [c for _, c in checkers if not c.closed]

    def verify(self) -> list[Report]:
        """Verify now and return the findings, without emitting them.

        Subclasses override this with their own verification; ``check()`` emits what it
        returns, and a heap's ``check()`` calls it on every checker registered with it,
        from whichever thread checks the heap: until :meth:`close` returns it may run
        concurrently with the checker's other methods (guard them with a lock), and once
        closed it returns nothing.
        """
        return []

    # ------------------------------------------------------------------ fork
    def fork_locks(self) -> list[Any]:
        """The locks held across a ``fork()``, so that a forked child never finds one held
        by a thread it does not have: the checker's own ``_lock``, when it has one.

        Taken before the fork (outer checkers before the ones registered over them, all
        before their heap's) and given back after it in the parent and in the child; see
        :mod:`memguard.heap.fork`.
        """
        lock = getattr(self, "_lock", None)
        return [lock] if lock is not None and hasattr(lock, "acquire") else []

    def after_fork_in_child(self) -> None:
        """In a forked child, once the locks are back: forget what only other parent
        threads had (a queue of waiters, say).  Nothing by default."""

    def heapmap(self, width: int = DEFAULT_WIDTH) -> str:
        """This checker's heap map as SVG text: its ``layout_map()`` drawn by
        :func:`memguard.heapmaps.render_svg` (see ``docs/heapmap.md``).

        :raises TypeError: the checker draws no map (it has no ``layout_map()``).
        """
        layout = getattr(self, "layout_map", None)
        if layout is None:
            raise TypeError(f"{type(self).__name__} draws no heap map (it has no layout_map())")
        return render_svg(layout(), width)

    def verify_registered(self) -> list[Report]:
        """:meth:`verify` of every live checker registered with this one (and theirs)."""
        reports: list[Report] = []
        for checker in self.registered():
            reports.extend(checker.verify())
            reports.extend(checker.verify_registered())
        return reports

    def check(self) -> list[Report]:
        """Verify now (this checker, those registered with it, plugins' ``memguard_check``).

        Emits the findings and returns them; with ``on_error="raise"`` the first one (or
        one deferred earlier) is raised.  A checker over a heap verifies only itself.
        """
        __tracebackhide__ = True
        if self.closed:
            raise HeapClosedError(f"{self.name!r} is closed")
        reports = self.verify()
        if self._root is not None:
            self.emit(reports)
            return reports
        reports.extend(self.verify_registered())
        on_check = self.seams.on_check
        if on_check is not None:
            reports.extend(on_check(self))
        return self.settle(reports)

    def close(self) -> list[Report]:  # pragma: no cover - every checker defines it
        """Verify one last time and release the checker's resources."""
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Close; while an exception is already in flight, findings are recorded, not raised."""
        if exc_type is None:
            self.close()
            return
        with self.reporting():
            self.close()
