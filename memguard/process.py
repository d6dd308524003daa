"""The process-wide heap: :func:`install`, :func:`uninstall` and module-level ``malloc``/``free``.

``memguard.malloc`` and friends allocate from the process-wide :class:`GuardedHeap`.
When none is installed yet, the first call installs one with the defaults and
``MEMGUARD_OPTIONS``, so a library can call them unconditionally.

With ``leak_check=1`` (the default), an ``atexit`` handler checks the heap and prints the
exit report when the interpreter ends (normal exit, ``sys.exit``, an uncaught exception,
and SIGTERM with ``handle_sigterm=1``).  The exit status of a program that calls
:func:`install` itself is not changed (Python offers no clean way to change it from an
``atexit`` handler); ``memguard run`` applies the ``exitcode`` rule.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from memguard.reporting import exitreport
from memguard.errors import MemguardError, OptionsError
from memguard.heap import fork
from memguard.heap.guarded import GuardedHeap
from memguard.options import Options
from memguard.plugin_manager import load_entrypoint_plugins
from memguard.reporting.suppressions import Suppressions

__all__ = [
    "install",
    "uninstall",
    "process_heap",
    "process_options",
    "report_at_exit",
    "skip_exit_report",
    "malloc",
    "calloc",
    "realloc",
    "memalign",
    "free",
]

_lock = threading.RLock()
_heap: GuardedHeap | None = None
_options: Options | None = None
_suppressions: Suppressions | None = None
_atexit_registered = False
#: The heap whose exit report was given another way (see :func:`skip_exit_report`).
_reported_elsewhere: GuardedHeap | None = None


def install(**options: Any) -> GuardedHeap:
    """Create the process-wide heap (once) and return it.

    Options are ``MEMGUARD_OPTIONS`` overridden by the keyword arguments (see
    :class:`memguard.options.Options`).  Calling it again returns the same heap; calling it
    with options that differ from the installed ones raises :class:`MemguardError`
    (call :func:`uninstall` first).  Thread-safe.

    :raises OptionsError: an unknown option or a bad value.
    :raises memguard.SuppressionsError: the ``suppressions`` file is unreadable or malformed.
    """
    global _heap, _options, _suppressions, _atexit_registered
    heap = _heap
    if heap is not None and not options:
        return heap
    with _lock:
        if _heap is not None:
            assert _options is not None
            wanted = Options.resolve(**options)
            if wanted != _options:
                diff = ", ".join(
                    f"{k}={getattr(wanted, k)!r} (installed: {getattr(_options, k)!r})"
                    for k in wanted.changed().keys() | _options.changed().keys()
                    if getattr(wanted, k) != getattr(_options, k)
                )
                raise MemguardError(
                    f"memguard.install(): the process heap is already installed with other options: {diff}; "
                    "call memguard.uninstall() first"
                )
            return _heap
        opts = Options.resolve(**options)
        log_file = opts.log_file()
        if log_file is not None:
            directory = os.path.dirname(os.path.abspath(log_file))
            if not os.path.isdir(directory):
                raise OptionsError(
                    f"option 'log_path': directory {directory!r} does not exist", "log_path",
                    "stderr, stdout, or a path prefix in an existing directory",
                )
        heap = GuardedHeap(**opts.heap_kwargs(), name="process")
        try:
            if opts.load_plugins:
                load_entrypoint_plugins(heap, disabled=opts.disable_plugins)
            # After the plugins: a suppressions file may name a kind a plugin registered.
            suppressions = Suppressions.load(opts.suppressions) if opts.suppressions else Suppressions()
        except BaseException:
            heap.close(check=False)
            raise
        if opts.handle_sigterm:
            exitreport.install_sigterm_handler()
        if not _atexit_registered:
            atexit.register(report_at_exit)
            _atexit_registered = True
        _options, _suppressions = opts, suppressions
        _heap = heap
        return heap


def _after_fork_in_child() -> None:
    """In a forked child: the module's lock and the exit report's state start afresh
    (a parent thread that held them does not exist in the child)."""
    global _lock
    _lock = threading.RLock()
    exitreport.after_fork_in_child()


fork.after_fork_in_child(_after_fork_in_child)


def uninstall() -> None:
    """Remove the process-wide heap: no exit report for it; module-level calls install anew.

    The heap is closed without a final check: pointers it handed out must not be used
    afterwards.  A no-op when nothing is installed.
    """
    global _heap, _options, _suppressions, _reported_elsewhere
    with _lock:
        heap = _heap
        _heap = None
        _reported_elsewhere = None
        _options = None
        _suppressions = None
        exitreport.restore_sigterm_handler()
    if heap is not None and not heap.closed:
        heap.close(check=False)


def process_heap() -> GuardedHeap | None:
    """The process-wide heap, or ``None`` when it is not installed."""
    return _heap


def process_options() -> Options | None:
    """The options the process-wide heap was installed with, or ``None``."""
    return _options


def skip_exit_report() -> None:
    """Print no exit report for the heap installed now: its findings were told another way.

    The pytest plugin calls it when a run that did not ask for memguard used the process
    heap: the run ends with one line about it instead of the full report.  A heap
    installed later gets its exit report as usual.
    """
    global _reported_elsewhere
    with _lock:
        _reported_elsewhere = _heap


def report_at_exit() -> None:
    """The ``atexit`` handler: the exit report of the process heap (when one is installed)."""
    with _lock:
        heap, options, suppressions = _heap, _options, _suppressions
    if heap is None or options is None or heap is _reported_elsewhere:
        return
    exitreport.dump(heap, options, suppressions)


def malloc(size: int) -> int:
    """``malloc`` on the process-wide heap (installed on first use)."""
    return (_heap or install()).malloc(size)


def calloc(count: int, size: int) -> int:
    """``calloc`` on the process-wide heap (installed on first use)."""
    return (_heap or install()).calloc(count, size)


def realloc(address: int, size: int) -> int:
    """``realloc`` on the process-wide heap (installed on first use)."""
    return (_heap or install()).realloc(address, size)


def memalign(alignment: int, size: int) -> int:
    """``memalign`` on the process-wide heap (installed on first use)."""
    return (_heap or install()).memalign(alignment, size)


def free(address: int) -> None:
    """``free`` on the process-wide heap (installed on first use)."""
    (_heap or install()).free(address)
