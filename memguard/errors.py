"""The exception hierarchy: one root, structured fields, one class per family of finding."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Report

__all__ = [
    "MemguardError",
    "HeapCorruptionError",
    "DoubleFreeError",
    "InvalidFreeError",
    "LeakError",
    "RefcountError",
    "PluginError",
    "HeapClosedError",
    "error_for",
]


class MemguardError(Exception):
    """Root of every memguard exception.

    :ivar report: the :class:`memguard.Report` behind the error, when there is one.
    """

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report

    @property
    def kind(self) -> str | None:
        """The report kind (``"heap-buffer-overflow"`` …), or ``None``."""
        return self.report.kind if self.report is not None else None


class HeapCorruptionError(MemguardError):
    """Overflow, underflow or use-after-free write: bytes memguard owns were changed."""


class DoubleFreeError(MemguardError):
    """A block was freed twice."""


class InvalidFreeError(MemguardError):
    """``free`` of an address memguard never handed out, or of an interior pointer."""


class LeakError(MemguardError):
    """Blocks were still live when they should not have been."""


class RefcountError(MemguardError):
    """A reference count went wrong (underflow, use after release, leak)."""


class PluginError(MemguardError):
    """A plugin raised inside a hook."""


class HeapClosedError(MemguardError):
    """The heap was used after :meth:`GuardedHeap.close`."""


_BY_KIND: dict[str, type[MemguardError]] = {
    "heap-buffer-overflow": HeapCorruptionError,
    "heap-buffer-underflow": HeapCorruptionError,
    "heap-use-after-free": HeapCorruptionError,
    "heap-header-corruption": HeapCorruptionError,
    "double-free": DoubleFreeError,
    "bad-free": InvalidFreeError,
    "memory-leak": LeakError,
    "plugin-error": PluginError,
}


def error_for(report: Report) -> MemguardError:
    """The exception that ``on_error="raise"`` raises for ``report``."""
    cls = _BY_KIND.get(report.kind)
    if cls is None:
        cls = RefcountError if report.kind.startswith("refcount-") else MemguardError
    return cls(report.headline(), report)
