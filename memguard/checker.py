"""The ``on_error`` policy every checker shares (the heap, refcount audits).

A checker records each finding in its ``reports`` list, passes it to the plugins'
``memguard_report`` hook, then acts on ``on_error``: ``"raise"`` raises the matching
:class:`~memguard.MemguardError` subclass, ``"report"`` carries on, ``"abort"`` prints the
report to stderr and aborts the process (AddressSanitizer's ``halt_on_error``).
Inside :meth:`ErrorPolicy.deferred_errors` a ``"raise"`` finding is held back and raised by
the checker's next ``check()``: for code that must not raise, such as allocator callbacks
called from C.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from memguard.errors import error_for
from memguard.report import Report

__all__ = ["ErrorPolicy", "ON_ERROR"]

_P = TypeVar("_P", bound="ErrorPolicy")

#: The accepted values of ``on_error``.
ON_ERROR = ("raise", "report", "abort")


class ErrorPolicy:
    """Mixin: ``reports``, ``on_error`` and deferred errors for a checker."""

    on_error: str
    reports: list[Report]
    _on_report: Callable[[Report], None] | None
    _tls: threading.local
    _deferred: list[Report]

    def _init_policy(self, on_error: str) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
        self.on_error = on_error
        self.reports = []
        self._on_report = None
        self._tls = threading.local()
        self._deferred = []

    def _record(self, reports: list[Report]) -> None:
        """Append findings to :attr:`reports` and tell the plugins."""
        self.reports.extend(reports)
        if self._on_report is not None:
            for r in reports:
                self._on_report(r)

    def _emit(self, reports: list[Report] | None) -> None:
        """Record findings, tell the plugins, then act on ``on_error``."""
        if not reports:
            return
        self._record(reports)
        if self.on_error == "raise":
            if getattr(self._tls, "defer", 0):
                self._deferred.extend(reports)
                return
            __tracebackhide__ = True
            raise error_for(reports[0])
        if self.on_error == "abort":
            self._abort(reports)

    def _settle(self, reports: list[Report]) -> list[Report]:
        """End of a ``check()``: emit its findings, raising deferred ones first."""
        __tracebackhide__ = True
        pending, self._deferred = self._deferred, []
        if pending and self.on_error == "raise":
            self._record(reports)
            raise error_for(pending[0])  # the deferred finding happened first
        self._emit(reports)
        return pending + reports

    @staticmethod
    def _abort(reports: list[Report]) -> None:
        for r in reports:
            print(r, file=sys.stderr)
        sys.stderr.flush()
        os.abort()

    def close(self) -> list[Report]:  # pragma: no cover - every checker defines it
        """Verify one last time and release the checker's resources."""
        raise NotImplementedError

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Close; while an exception is already in flight, findings are recorded, not raised."""
        if exc_type is None:
            self.close()
            return
        with self.reporting():
            self.close()

    @contextmanager
    def reporting(self) -> Iterator[str]:
        """Within this block, findings are recorded and passed on but never raised.

        Yields the ``on_error`` value in force before the block, which is restored after it.
        """
        saved, self.on_error = self.on_error, "report"
        try:
            yield saved
        finally:
            self.on_error = saved

    @contextmanager
    def deferred_errors(self) -> Iterator[None]:
        """Within this block (in this thread), ``on_error="raise"`` records instead of raising.

        Findings are recorded (and seen by plugins) at once, and the next ``check()``
        raises the first of them.
        """
        tls = self._tls
        tls.defer = getattr(tls, "defer", 0) + 1
        try:
            yield
        finally:
            tls.defer -= 1
