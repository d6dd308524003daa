"""pytest plugin: fail tests that leak or corrupt native memory, with reports people can act on.

Loaded through the ``pytest11`` entry point (``-p no:memguard`` disables it), so every
pytest run of anyone with memguard installed imports this module.  It therefore holds
only what pytest needs before memguard is asked for: the options, ini keys and markers,
and hooks that return at once for a test that did not opt in.  The work is done by
:mod:`memguard.pytest_session`, imported the first time memguard is asked for; the
decisions (what fails, how it reads) live in :mod:`memguard.reporting.verdicts`.

* ``--memguard`` installs the process-wide heap (:func:`memguard.install`) for the run;
  every test is checked for leaks of blocks it allocated from it and for corruption;
* the ``guarded_heap`` and ``ref_audit`` fixtures and the ``memguard`` marker opt one test
  in even without ``--memguard``; ``memguard_growth`` measures native memory with psutil;
* failures carry a one-line reason and a ``memguard`` report section; the terminal
  summary, the JSON report (``--memguard-report``) and xdist workers are aggregated.

memguard is asked for by any ``--memguard*`` option or ``memguard*`` ini key, a non-empty
``$MEMGUARD_OPTIONS``, one of the fixtures or one of the markers.  Until then no heap,
report or psutil module is imported and nothing is done per test.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generator, Iterator, Mapping

import pytest

if TYPE_CHECKING:
    from memguard.heap.guarded import GuardedHeap
    from memguard.pytest_session import Run, Tracker
    from memguard.refaudit import RefAudit

__all__ = [
    "MemguardLeakWarning",
    "guarded_heap",
    "ref_audit",
]

#: The environment variable whose options the plugin reads (like ``memguard run``).
ENV_VAR = "MEMGUARD_OPTIONS"
#: The ``dest`` of every command-line option, and every ini key, of the memguard group.
_OPTION_DESTS = (
    "memguard", "memguard_leaks", "memguard_options", "memguard_suppressions", "memguard_report",
    "memguard_disable_plugin", "memguard_full_stacks", "memguard_top", "memguard_fail_on_increase", "memguard_html",
    "memguard_numpy",
)
_INI_KEYS = (
    "memguard", "memguard_leaks", "memguard_options", "memguard_suppressions", "memguard_report",
    "memguard_max_peak", "memguard_max_allocations", "memguard_html", "memguard_numpy",
)


class MemguardLeakWarning(pytest.PytestWarning):
    """A test leaked native memory and ``leaks="warn"`` is in effect."""


# ----------------------------------------------------------------------------- options
def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``memguard`` option group and its ini keys."""
    group = parser.getgroup("memguard", "memguard: native memory checks")
    group.addoption("--memguard", action="store_true", default=None, dest="memguard",
                    help="check every test for native-memory leaks and corruption through the process-wide heap "
                         "(ini: memguard)")
    group.addoption("--memguard-numpy", action="store_true", default=None, dest="memguard_numpy",
                    help="put every NumPy array of the run on the process-wide heap (implies --memguard; "
                         "ini: memguard_numpy)")
    group.addoption("--memguard-leaks", default=None, dest="memguard_leaks", metavar="fail|warn|ignore",
                    help="what a leak does to a test (default: fail; ini: memguard_leaks)")
    group.addoption("--memguard-options", default=None, dest="memguard_options", metavar="KEY=VALUE:...",
                    help="heap options in the MEMGUARD_OPTIONS shape, e.g. redzone=32:stack_depth=16 "
                         "(ini: memguard_options; merged over $MEMGUARD_OPTIONS)")
    group.addoption("--memguard-suppressions", default=None, dest="memguard_suppressions", metavar="FILE",
                    help="suppressions file (leak:<pattern> ...) (ini: memguard_suppressions)")
    group.addoption("--memguard-report", default=None, dest="memguard_report", metavar="PATH",
                    help="write a JSON report for the whole run to PATH (ini: memguard_report)")
    group.addoption("--memguard-html", default=None, dest="memguard_html", metavar="PATH",
                    help="write a self-contained HTML report for the whole run to PATH (ini: memguard_html)")
    group.addoption("--memguard-disable-plugin", action="append", default=None, dest="memguard_disable_plugin",
                    metavar="NAME",
                    help="do not load the memguard entry-point plugin NAME onto the process-wide heap "
                         "(repeatable; like disable_plugins=NAME in the options)")
    group.addoption("--memguard-full-stacks", action="store_true", default=None, dest="memguard_full_stacks",
                    help="show pytest, pluggy, runpy and importlib frames in stacks (hidden by default)")
    group.addoption("--memguard-top", default=None, dest="memguard_top", metavar="N",
                    help="list the N tests that allocated the most through memguard in the terminal summary")
    group.addoption("--memguard-fail-on-increase", default=None, dest="memguard_fail_on_increase",
                    metavar="PREVIOUS.json",
                    help="fail tests whose peak or leaked bytes grew since a saved --memguard-report")
    parser.addini("memguard", "check every test (like --memguard)", type="string", default=None)
    parser.addini("memguard_numpy", "every NumPy array on the process-wide heap (like --memguard-numpy)",
                  type="string", default=None)
    parser.addini("memguard_leaks", "fail, warn or ignore (like --memguard-leaks)", type="string", default=None)
    parser.addini("memguard_options", "heap options KEY=VALUE:... (like --memguard-options)", type="string",
                  default=None)
    parser.addini("memguard_suppressions", "suppressions file (like --memguard-suppressions)", type="string",
                  default=None)
    parser.addini("memguard_report", "JSON report path (like --memguard-report)", type="string", default=None)
    parser.addini("memguard_html", "HTML report path (like --memguard-html)", type="string", default=None)
    parser.addini("memguard_max_peak", "peak live bytes each checked test may reach, e.g. 24 MiB "
                  "(the memguard marker's max_peak overrides it)", type="string", default=None)
    parser.addini("memguard_max_allocations", "allocations each checked test may make "
                  "(the memguard marker's max_allocations overrides it)", type="string", default=None)


def ini_value(config: pytest.Config, name: str) -> str | None:
    """The ini key ``name``, or ``None`` when it is unset or blank."""
    value = config.getini(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(value).strip()


def _asked_explicitly(config: pytest.Config) -> bool:
    """Whether the run's own command line or ini file configures memguard."""
    return any(config.getoption(dest) is not None for dest in _OPTION_DESTS) or any(
        ini_value(config, key) is not None for key in _INI_KEYS
    )


def _asked(config: pytest.Config) -> bool:
    """Whether the run configures memguard at all (an option, an ini key, ``$MEMGUARD_OPTIONS``)."""
    return _asked_explicitly(config) or bool(os.environ.get(ENV_VAR))


def _hand_to_controller(config: pytest.Config, exc: pytest.UsageError) -> None:
    """On an xdist worker, pass a usage error on to the controller, which raises it.

    A worker that stops on a usage error leaves the test it was given unfinished, which
    the controller would take for a crash (an internal error): the controller raises the
    error itself, from :func:`pytest_testnodedown`, before it looks at the worker's tests,
    so an xdist run ends with the same clean usage error as a serial one.
    """
    output = getattr(config, "workeroutput", None)
    if output is not None:
        output.setdefault("memguard_usage_error", str(exc))


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of a run (command line > ini > environment).

    :ivar enabled: ``--memguard``: every test is checked.
    :ivar leaks: the default leak mode.
    :ivar options: the heap option values that were set explicitly (merged).
    :ivar suppressions: absolute path of the suppressions file, or ``None``.
    :ivar report: absolute path of the JSON report, or ``None``.
    :ivar suppressions_source: the option or ini key that named the suppressions file.
    :ivar full_stacks: show the frameworks' frames in stacks.
    :ivar max_peak: the default peak limit of a checked test, in bytes.
    :ivar max_allocations: the default allocation limit of a checked test.
    :ivar top: ``--memguard-top``: how many of the most allocating tests to list.
    :ivar fail_on_increase: absolute path of the saved report to compare with, or ``None``.
    :ivar html: absolute path of the HTML report, or ``None``.
    :ivar numpy: ``--memguard-numpy``: every NumPy array on the process heap (implies ``enabled``).
    """

    enabled: bool
    leaks: str
    options: Mapping[str, Any]
    suppressions: str | None
    report: str | None
    suppressions_source: str = "--memguard-suppressions"
    full_stacks: bool = False
    max_peak: int | None = None
    max_allocations: int | None = None
    top: int = 0
    fail_on_increase: str | None = None
    html: str | None = None
    numpy: bool = False

    def describe(self) -> str:
        """The one-line configuration for the report header."""
        opts = ":".join(f"{k}={v}" for k, v in self.options.items()) or "defaults"
        parts = [
            "on (every test)" if self.enabled else "off (fixtures and markers opt tests in)",
            f"leaks={self.leaks}",
            f"options={opts}",
        ]
        if self.numpy:
            parts.append("numpy=on (every array on the process heap)")
        if self.suppressions:
            parts.append(f"suppressions={self.suppressions}")
        if self.report:
            parts.append(f"report={self.report}")
        if self.max_peak is not None:
            parts.append(f"max_peak={self.max_peak}")
        if self.max_allocations is not None:
            parts.append(f"max_allocations={self.max_allocations}")
        return "memguard: " + ", ".join(parts)


#: The settings of a run that configures nothing.
_DEFAULTS = Settings(enabled=False, leaks="fail", options={}, suppressions=None, report=None)

# ----------------------------------------------------------------------------- run state
#: Where the run's state (``config.stash``), a test's state (``item.stash``) and the session are kept.
RUN_KEY = pytest.StashKey["Run"]()
TRACKER_KEY = pytest.StashKey["Tracker"]()
SESSION_KEY = pytest.StashKey[pytest.Session]()


def _run(config: pytest.Config) -> Run | None:
    """The run's state, or ``None`` while memguard has not been asked for."""
    return config.stash.get(RUN_KEY, None)


def _ensure_run(config: pytest.Config) -> Run:
    """The run's state, started (settings resolved, heavy modules imported) on first use."""
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        from memguard import pytest_session

        run = pytest_session.start(config)
    return run


# ----------------------------------------------------------------------------- configure
def pytest_configure(config: pytest.Config) -> None:
    """Register the markers; start the run when memguard is configured."""
    config.addinivalue_line(
        "markers",
        "memguard(leaks='fail'|'warn'|'ignore', max_peak=None, max_allocations=None, **heap_options): check this "
        "test with memguard; limit its peak live bytes (e.g. '24 MiB') and its allocations "
        "(heap options: redzone, quarantine_mb, stack_depth, on_error, canary, backend)",
    )
    config.addinivalue_line(
        "markers",
        "memguard_growth(max_bytes, runs=5, warmup=2): run the test warmup+runs times and fail when native "
        "memory (psutil heap_info, RSS otherwise) grows steadily by more than max_bytes",
    )
    if _asked_explicitly(config):
        _ensure_run(config)
    elif _asked(config):
        # Only $MEMGUARD_OPTIONS: a bad value must not fail a run that does not use memguard.
        # Any use of memguard (a fixture, a marker) starts the run again and fails with the error.
        try:
            _ensure_run(config)
        except pytest.UsageError as exc:
            config.issue_config_time_warning(
                pytest.PytestConfigWarning(
                    f"memguard is off for this run, {ENV_VAR} is not valid "
                    f"(a test that uses memguard fails with this error): {exc}"
                ),
                stacklevel=2,
            )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Release the process heap if a run ended without ``pytest_sessionfinish``."""
    run = _run(config)
    if run is not None:
        run.release()


def pytest_report_header(config: pytest.Config) -> str | None:
    """The memguard configuration in one line."""
    run = _run(config)
    return (run.settings if run is not None else _DEFAULTS).describe()


def _marked(item: pytest.Item) -> bool:
    return item.get_closest_marker("memguard") is not None or item.get_closest_marker("memguard_growth") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate the markers up front (a bad marker stops the run with a clear message)."""
    try:
        for item in items:
            if _marked(item):
                from memguard import pytest_session

                pytest_session.check_markers(item, _ensure_run(config))
    except pytest.UsageError as exc:
        _hand_to_controller(config, exc)
        raise


def _opted_in(item: pytest.Item, run: Run | None) -> bool:
    if run is not None and run.settings.enabled:
        return True
    names = getattr(item, "fixturenames", ())
    return "guarded_heap" in names or "ref_audit" in names or _marked(item)


# ----------------------------------------------------------------------------- per test
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """Run an opted-in test with its reports held back until memguard has judged it."""
    run = _run(item.config)
    if not _opted_in(item, run):
        return None
    from memguard import pytest_session

    try:
        return pytest_session.runtest_protocol(item, nextitem, run if run is not None else _ensure_run(item.config))
    except pytest.UsageError as exc:
        _hand_to_controller(item.config, exc)
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Note the heap's allocation count at the end of setup."""
    try:
        return (yield)
    finally:
        tracker = item.stash.get(TRACKER_KEY, None)
        if tracker is not None and tracker.heap is not None and not tracker.heap.closed:
            tracker.setup_serial = tracker.heap.stats().total_allocs


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    """Note the allocations of a fixture wider than the test set up during an opted-in test."""
    run = _run(request.config) if fixturedef.scope != "function" else None
    tracker = run.active if run is not None else None
    if tracker is None:
        return (yield)
    tracker.wide_fixture = True
    assert run is not None
    run.fixtures.enter(fixturedef, tracker.heap)
    try:
        return (yield)
    finally:
        run.fixtures.leave(fixturedef, tracker.heap)


def pytest_fixture_post_finalizer(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> None:
    """A wide fixture was torn down: what it allocated and left live is charged to this teardown."""
    run = _run(request.config)
    if run is not None and run.fixtures.watching(fixturedef):
        from memguard import pytest_session

        pytest_session.fixture_torn_down(run, fixturedef)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A memguard error raised in the test: keep pytest's failure, add the full report as a section."""
    excinfo = call.excinfo
    # A MemguardError can only have been raised once memguard.errors was imported.
    errors = sys.modules.get("memguard.errors")
    if excinfo is None or errors is None or not isinstance(excinfo.value, errors.MemguardError):
        return (yield)
    from memguard import pytest_session

    pytest_session.cut_memguard_frames(excinfo)
    rep = yield
    pytest_session.add_error_section(item, excinfo.value, rep)
    return rep


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """``memguard_growth``: run the test body warmup+runs times and measure native memory."""
    if pyfuncitem.get_closest_marker("memguard_growth") is None:
        return None
    from memguard import pytest_session

    return pytest_session.run_growth(pyfuncitem)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def guarded_heap(request: pytest.FixtureRequest) -> Iterator[GuardedHeap]:
    """A fresh :class:`memguard.GuardedHeap` for this test.

    At the end of the test, anything allocated from it and still live is a leak and any
    corruption fails the test (leak mode and heap options from the ``memguard`` marker,
    then the command line, the ini file and ``$MEMGUARD_OPTIONS``).
    """
    from memguard import pytest_session

    return (yield from pytest_session.guarded_heap(request, _ensure_run(request.config)))


@pytest.fixture
def ref_audit(request: pytest.FixtureRequest) -> Iterator[RefAudit]:
    """A :class:`memguard.RefAudit` for this test; references still held at the end fail it."""
    from memguard import pytest_session

    return (yield from pytest_session.ref_audit(request))


# ----------------------------------------------------------------------------- session
def pytest_sessionstart(session: pytest.Session) -> None:
    """Remember the session (the xdist controller counts workers' session failures on it)."""
    session.config.stash[SESSION_KEY] = session


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Check the process heap outside any test, hand results to xdist, write the JSON report."""
    run = _run(session.config)
    if run is None:
        _note_unasked_heap(session.config)
        return
    from memguard import pytest_session

    pytest_session.session_finish(session, run)
    if not run.settings.enabled and not run.worker:
        # Only some tests were checked (markers, fixtures): what the others left is one line too.
        _note_unasked_heap(session.config)


#: The one line said about a process heap that a run did not ask memguard to check.
HINT_KEY = pytest.StashKey[str]()


def _note_unasked_heap(config: pytest.Config) -> None:
    """memguard was not asked for, yet the tests used the process heap: one line, no exit report."""
    process = sys.modules.get("memguard.process")
    heap = process.process_heap() if process is not None else None
    if heap is None or heap.closed:
        return
    from memguard import pytest_report

    config.stash[HINT_KEY] = pytest_report.unasked_heap_hint(process)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: raise a worker's usage error; collect a worker's records."""
    output = getattr(node, "workeroutput", None) or {}
    error = output.get("memguard_usage_error")
    if error:
        raise pytest.UsageError(error)
    data = output.get("memguard")
    if not data:
        return
    from memguard import pytest_session

    pytest_session.collect_worker(_ensure_run(node.config), data)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The ``memguard`` section: tests checked, findings by kind, the top leaking sites."""
    run = _run(config)
    hint = config.stash.get(HINT_KEY, None)
    if run is None:
        if hint:
            terminalreporter.write_line(hint, yellow=True)
        return
    from memguard import pytest_report

    pytest_report.terminal_summary(terminalreporter, config, run)
    if hint:
        terminalreporter.write_line(hint, yellow=True)
