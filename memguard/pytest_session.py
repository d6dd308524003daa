"""The pytest plugin's work, imported only once memguard is asked for in a run.

:mod:`memguard.pytest_plugin` (the module pytest loads for every run) registers the
options, ini keys, markers and hooks and hands over to the functions here the first time
a run configures memguard, a test opts in (``--memguard``, a fixture, a marker) or an
xdist worker reports back:

* :func:`start` resolves the settings (command line > ini > environment) and, with
  ``--memguard``, installs the process-wide heap;
* :func:`runtest_protocol` runs an opted-in test with its reports held back, gathers the
  findings attributable to it and applies the verdict of :mod:`memguard.reporting.verdicts`;
* the fixtures' bodies, the ``memguard_growth`` measurement, the session check and the
  xdist aggregation; the limits are read and measured by :mod:`memguard.pytest_limits`,
  the wide fixtures' leaks found by :mod:`memguard.pytest_fixtures`, and the JSON report
  and the terminal summary made by :mod:`memguard.pytest_report`.

pytest has no public API for a few things this needs; each such use is isolated in one
small function that says why (:func:`_run_protocol`, :func:`_crash_location`,
:func:`_test_argnames`).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import pytest

from memguard._location import is_own_file
from memguard.pytest_fixtures import FixtureLeak, FixtureWatch
from memguard.pytest_limits import LIMIT_KEYS, Meter, allocation_sites, load_baseline, parse_limits
from memguard.pytest_plugin import ENV_VAR, RUN_KEY, SESSION_KEY, TRACKER_KEY, MemguardLeakWarning, Settings, ini_value
from memguard.reporting import limits as _limits
from memguard.reporting import verdicts as _v
from memguard.reporting.retention import without_retained

if TYPE_CHECKING:
    from memguard.heap.guarded import GuardedHeap
    from memguard.leaks import LeakGroup
    from memguard.report import Report

__all__ = [
    "GrowthSpec",
    "TestPolicy",
    "resolve_settings",
    "start",
]


# ----------------------------------------------------------------------------- settings
def _parse_options_text(text: str, source: str) -> dict[str, Any]:
    from memguard.options import parse_options

    try:
        return parse_options(text, source)
    except ValueError as exc:  # OptionsError is a ValueError
        raise pytest.UsageError(str(exc)) from None


def _disabled_plugins(merged: Mapping[str, Any], names: list[str]) -> tuple[str, ...]:
    """``disable_plugins`` of the options, plus the ``--memguard-disable-plugin`` names."""
    from memguard.options import OPTION_SPECS

    given = OPTION_SPECS["disable_plugins"].convert(names)
    return tuple(dict.fromkeys([*merged.get("disable_plugins", ()), *given]))


def _ini_dir(config: pytest.Config) -> str:
    """The directory of the ini file (the invocation directory when there is none)."""
    inipath = getattr(config, "inipath", None)
    return str(inipath.parent) if inipath is not None else str(config.invocation_params.dir)


def _path(value: str, base: str) -> str:
    """``value`` made absolute against ``base`` (``~`` expanded)."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def _choose_path(config: pytest.Config, cli_dest: str, ini_key: str, cli_name: str) -> tuple[str | None, str]:
    """An absolute path from the command line (relative to the invocation directory) or the
    ini file (relative to the ini file's directory), and the option or ini key it came from."""
    cli = config.getoption(cli_dest)
    if cli:
        return _path(cli, str(config.invocation_params.dir)), cli_name
    ini = ini_value(config, ini_key)
    if ini:
        return _path(ini, _ini_dir(config)), f"{ini_key} (ini)"
    return None, cli_name


def resolve_settings(config: pytest.Config, environ: Mapping[str, str] = os.environ) -> Settings:
    """Resolve the run's settings; :class:`pytest.UsageError` naming the option on a bad value.

    Relative paths given on the command line or in ``$MEMGUARD_OPTIONS`` are relative to
    the invocation directory; those given in the ini file, to the ini file's directory.
    """
    try:
        cli_on = config.getoption("memguard")
        ini_on = ini_value(config, "memguard")
        enabled = bool(_v.first_set(cli_on, _v.parse_bool(ini_on, "memguard (ini)") if ini_on is not None else None))
        ini_numpy = ini_value(config, "memguard_numpy")
        numpy = bool(_v.first_set(
            config.getoption("memguard_numpy"),
            _v.parse_bool(ini_numpy, "memguard_numpy (ini)") if ini_numpy is not None else None,
        ))
        enabled = enabled or numpy
        cli_leaks = config.getoption("memguard_leaks")
        if cli_leaks is not None:
            leaks = _v.check_leak_mode(cli_leaks, "--memguard-leaks")
        else:
            ini_leaks = ini_value(config, "memguard_leaks")
            leaks = _v.check_leak_mode(ini_leaks, "memguard_leaks (ini)") if ini_leaks is not None else "fail"
        top_text = config.getoption("memguard_top")
        top = _parse_top(top_text) if top_text is not None else 0
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    here = str(config.invocation_params.dir)
    merged: dict[str, Any] = {}
    env_text = environ.get(ENV_VAR)
    if env_text:
        merged.update(_parse_options_text(env_text, ENV_VAR))
        if merged.get("suppressions"):
            merged["suppressions"] = _path(merged["suppressions"], here)
    ini_text = ini_value(config, "memguard_options")
    if ini_text:
        ini_opts = _parse_options_text(ini_text, "memguard_options (ini)")
        if ini_opts.get("suppressions"):
            ini_opts["suppressions"] = _path(ini_opts["suppressions"], _ini_dir(config))
        merged.update(ini_opts)
    cli_text = config.getoption("memguard_options")
    if cli_text:
        cli_opts = _parse_options_text(cli_text, "--memguard-options")
        if cli_opts.get("suppressions"):
            cli_opts["suppressions"] = _path(cli_opts["suppressions"], here)
        merged.update(cli_opts)
    cli_disabled = config.getoption("memguard_disable_plugin")
    if cli_disabled:
        merged["disable_plugins"] = _disabled_plugins(merged, cli_disabled)
    suppressions, suppressions_source = _choose_path(
        config, "memguard_suppressions", "memguard_suppressions", "--memguard-suppressions"
    )
    if suppressions is None and merged.get("suppressions"):
        suppressions, suppressions_source = merged["suppressions"], "suppressions= (memguard options)"
    report, _ = _choose_path(config, "memguard_report", "memguard_report", "--memguard-report")
    html, _ = _choose_path(config, "memguard_html", "memguard_html", "--memguard-html")
    increase = config.getoption("memguard_fail_on_increase")
    limits = parse_limits(
        {key: ini_value(config, f"memguard_{key}") for key in LIMIT_KEYS},
        {key: f"memguard_{key} (ini)" for key in LIMIT_KEYS},
    )
    return Settings(
        enabled, leaks, merged, suppressions, report,
        suppressions_source=suppressions_source,
        full_stacks=bool(config.getoption("memguard_full_stacks")),
        max_peak=limits.max_peak,
        max_allocations=limits.max_allocations,
        top=top,
        fail_on_increase=_path(increase, here) if increase else None,
        html=html,
        numpy=numpy,
    )


def _parse_top(text: str) -> int:
    """``--memguard-top``'s value: an int >= 1."""
    if text.strip().isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"--memguard-top: expected a number of tests (an int >= 1), got {text!r}")


def _heap_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """GuardedHeap keyword arguments for the explicitly set heap options."""
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key == "quarantine_mb":
            kwargs["quarantine_bytes"] = int(value) << 20
        elif key in _v.HEAP_OPTION_KEYS:
            kwargs[key] = value
    return kwargs


# ----------------------------------------------------------------------------- markers
@dataclass(frozen=True)
class TestPolicy:
    """How one test is checked (the marker over the run's settings).

    :ivar leaks: the leak mode for this test.
    :ivar options: heap options for this test's ``guarded_heap`` (run options + marker).
    :ivar marked: the ``memguard`` marker is on the test.
    :ivar limits: the test's peak and allocation limits (the marker's over the ini file's).
    """

    leaks: str
    options: Mapping[str, Any]
    marked: bool
    limits: _limits.Limits = _limits.Limits()


def _marker_policy(item: pytest.Item, settings: Settings) -> TestPolicy:
    default = _limits.Limits(settings.max_peak, settings.max_allocations)
    marker = item.get_closest_marker("memguard")
    if marker is None:
        return TestPolicy(settings.leaks, settings.options, False, default)
    where = f"@pytest.mark.memguard on {item.nodeid}"
    if marker.args:
        raise pytest.UsageError(f"{where}: takes keyword arguments only (leaks=..., redzone=...), got {marker.args!r}")
    kwargs = dict(marker.kwargs)
    limits = parse_limits(
        {key: kwargs.pop(key) for key in LIMIT_KEYS if key in kwargs}, {key: f"{where}: {key}" for key in LIMIT_KEYS},
        default,
    )
    leaks = settings.leaks
    try:
        if "leaks" in kwargs:
            leaks = _v.check_leak_mode(kwargs.pop("leaks"), f"{where}: leaks")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    options = dict(settings.options)
    if kwargs:
        from memguard.options import OPTION_SPECS

        for key, value in kwargs.items():
            if key not in _v.HEAP_OPTION_KEYS:
                raise pytest.UsageError(
                    f"{where}: unknown argument {key!r}; allowed: leaks, {', '.join(LIMIT_KEYS)}, "
                    f"{', '.join(_v.HEAP_OPTION_KEYS)}"
                )
            try:
                options[key] = OPTION_SPECS[key].convert(value)
            except (TypeError, ValueError):
                raise pytest.UsageError(
                    f"{where}: bad value {value!r} for {key!r}: expected {OPTION_SPECS[key].allowed}"
                ) from None
    return TestPolicy(leaks, options, True, limits)


@dataclass(frozen=True)
class GrowthSpec:
    """The arguments of ``@pytest.mark.memguard_growth``."""

    max_bytes: int
    runs: int = 5
    warmup: int = 2


def _growth_spec(item: pytest.Item) -> GrowthSpec | None:
    marker = item.get_closest_marker("memguard_growth")
    if marker is None:
        return None
    where = f"@pytest.mark.memguard_growth on {item.nodeid}"
    args = list(marker.args)
    kwargs = dict(marker.kwargs)
    names = ["max_bytes", "runs", "warmup"]
    if len(args) > 3:
        raise pytest.UsageError(f"{where}: takes (max_bytes, runs=5, warmup=2), got {len(args)} positional arguments")
    for name, value in zip(names, args):
        if name in kwargs:
            raise pytest.UsageError(f"{where}: {name} given twice")
        kwargs[name] = value
    unknown = set(kwargs) - set(names)
    if unknown:
        raise pytest.UsageError(f"{where}: unknown argument(s) {', '.join(sorted(unknown))}; allowed: {', '.join(names)}")
    if "max_bytes" not in kwargs:
        raise pytest.UsageError(f"{where}: max_bytes is required, e.g. memguard_growth('64 KiB')")
    try:
        max_bytes = _v.parse_size(kwargs["max_bytes"], f"{where}: max_bytes")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    runs, warmup = kwargs.get("runs", 5), kwargs.get("warmup", 2)
    if type(runs) is not int or runs < 2:
        raise pytest.UsageError(f"{where}: runs must be an int >= 2, got {runs!r}")
    if type(warmup) is not int or warmup < 0:
        raise pytest.UsageError(f"{where}: warmup must be an int >= 0, got {warmup!r}")
    return GrowthSpec(max_bytes, runs, warmup)


def check_markers(item: pytest.Item, run: Run) -> None:
    """Validate the ``memguard`` and ``memguard_growth`` markers of ``item`` (a usage error if bad)."""
    if item.get_closest_marker("memguard") is not None:
        _marker_policy(item, run.settings)
    if item.get_closest_marker("memguard_growth") is not None:
        _growth_spec(item)


# ----------------------------------------------------------------------------- run state
_INTERNAL_DIRS: tuple[str, ...] = tuple(
    os.path.dirname(getattr(sys.modules.get(name), "__file__", None) or "/nonexistent/x") + os.sep
    for name in ("_pytest", "pluggy", "pytest")
    if sys.modules.get(name) is not None
)


@dataclass
class Tracker:
    """Per-test state (in ``item.stash``)."""

    policy: TestPolicy
    heap: GuardedHeap | None = None
    allocs0: int = 0
    live0: int = 0
    frees0: int = 0
    reports0: int = 0
    setup_serial: int | None = None
    mark0: Any = None
    wide_fixture: bool = False
    own: list[Any] = field(default_factory=list)  # guarded_heap / ref_audit objects
    raised: list[Report] = field(default_factory=list)  # MemguardErrors that failed the test
    growth: _v.GrowthVerdict | None = None
    meter: Meter = field(default_factory=Meter)
    fixture_leaks: list[FixtureLeak] = field(default_factory=list)  # wide fixtures torn down in its teardown


class Run:
    """Per-run state (in ``config.stash``): settings, the process heap, the records."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.records: list[dict[str, Any]] = []
        self.session: dict[str, Any] = {"findings": [], "leaks": [], "failed": False}
        self.heap: GuardedHeap | None = None
        self.installed = False
        self.numpy_installed = False
        self.session_serial = 0
        self.consumed = 0  # heap.reports already attributed to a test
        self.reported_addresses: set[int] = set()
        self.suppressions: Any = None
        self.only: Any = None
        self.workers = 0
        self.active: Tracker | None = None  # the tracker of the opted-in test being run
        self.worker = hasattr(config, "workerinput")
        self.fixtures = FixtureWatch()
        #: The maps of the process heap (and its allocators) at the end of the session, for --memguard-html.
        self.heap_maps: tuple[Any, ...] = ()
        #: rule as written -> [rule file, rule line, objects, bytes] of the suppressions used
        self.suppressed: dict[str, list[Any]] = {}
        self.baseline: dict[str, Mapping[str, Any]] | None = None
        if settings.fail_on_increase and not self.controller:
            self.baseline = load_baseline(settings.fail_on_increase)
        if settings.suppressions:
            from memguard.reporting.suppressions import Suppressions

            try:
                self.suppressions = Suppressions.load(settings.suppressions)
            except (OSError, ValueError) as exc:
                raise pytest.UsageError(
                    f"{settings.suppressions_source}: cannot load {settings.suppressions!r}: {exc}"
                ) from None
        if settings.options.get("only"):
            from memguard.reporting.suppressions import Only

            self.only = Only(tuple(settings.options["only"]))

    @property
    def internal_dirs(self) -> tuple[str, ...]:
        """The directories whose frames end a stack (none with ``--memguard-full-stacks``)."""
        return () if self.settings.full_stacks else _INTERNAL_DIRS

    @property
    def controller(self) -> bool:
        """This process runs no tests: xdist's controller."""
        return not self.worker and self.config.pluginmanager.has_plugin("dsession")

    @property
    def session_obj(self) -> pytest.Session | None:
        """The pytest session, once it has started."""
        return self.config.stash.get(SESSION_KEY, None)

    # ---------------------------------------------------------------- process heap
    def process_heap(self) -> GuardedHeap:
        """The process-wide heap, installed with the run's options on first use."""
        if self.heap is None:
            import memguard

            install = getattr(memguard, "install", None)
            if install is None:
                raise pytest.UsageError(
                    "memguard: this memguard has no memguard.install() (the process-wide heap), "
                    "so --memguard and the memguard marker cannot work; the guarded_heap fixture still does"
                )
            current = getattr(memguard, "process_heap", lambda: None)()
            if current is not None and not current.closed:
                self.heap = current  # installed before the run (by a conftest, a library): used as is
            else:
                try:
                    self.heap = install(**dict(self.settings.options))
                except (ValueError, memguard.MemguardError) as exc:
                    raise pytest.UsageError(f"--memguard-options: {exc}") from None
                self.installed = True
            self.session_serial = self.heap.stats().total_allocs
            self.consumed = len(self.heap.reports)
            if self.settings.numpy:
                self._install_numpy(self.heap)
        return self.heap

    def _install_numpy(self, heap: GuardedHeap) -> None:
        """``--memguard-numpy``: every NumPy array of the run on ``heap`` (this thread and later ones)."""
        from memguard.errors import MemguardError

        try:
            import memguard.numpy as guarded_numpy

            guarded_numpy.install(heap)
        except (ImportError, MemguardError) as exc:
            raise pytest.UsageError(f"--memguard-numpy: {exc}") from None
        self.numpy_installed = True

    def release(self) -> None:
        """Uninstall the process heap if this run installed it (so no exit dump repeats our findings)."""
        if self.numpy_installed:
            import memguard.numpy as guarded_numpy

            # NumPy allocates on its own heap again; arrays of the run still free into ours.
            guarded_numpy.uninstall()
            self.numpy_installed = False
        if self.installed:
            import memguard

            uninstall = getattr(memguard, "uninstall", None)
            if uninstall is not None:
                try:
                    uninstall()
                except Exception as exc:  # noqa: BLE001 - never break pytest at the end
                    sys.stderr.write(f"memguard: uninstall() failed: {type(exc).__name__}: {exc}\n")
            self.installed = False
        self.heap = None

    # ---------------------------------------------------------------- filtering
    def filter(self, items: list[Any]) -> tuple[list[Any], int]:
        """Apply ``only=`` and the suppressions; return the kept items and how many were set aside."""
        kept = items
        dropped = 0
        if self.only is not None and kept:
            kept, aside = self.only.apply(kept)
            dropped += len(aside)
        if self.suppressions is not None and kept:
            from memguard.reporting.suppressions import summarize

            kept, suppressed = self.suppressions.apply(kept)
            dropped += len(suppressed)
            for rule, count, size in summarize(suppressed):
                self.count_suppressed(rule.text, rule.filename, rule.lineno, count, size)
        return list(kept), dropped

    def count_suppressed(self, text: str, filename: str, lineno: int, count: int, size: int) -> None:
        """Add ``count`` objects of ``size`` bytes to the rule ``text``'s row of the table."""
        row = self.suppressed.setdefault(text, [filename, lineno, 0, 0])
        row[2] += count
        row[3] += size

    def suppression_rows(self) -> list[dict[str, Any]]:
        """The suppressions used, in the order of the rules (JSON-ready)."""
        rows = sorted(self.suppressed.items(), key=lambda kv: (kv[1][0], kv[1][1]))
        return [{"rule": t, "rule_file": f, "rule_line": n, "count": c, "bytes": b} for t, (f, n, c, b) in rows]


def start(config: pytest.Config) -> Run:
    """Start the run's state: resolve the settings, install the process heap with ``--memguard``."""
    run = Run(config, resolve_settings(config))
    config.stash[RUN_KEY] = run
    if run.settings.enabled and not run.controller:
        run.process_heap()
    return run


# ----------------------------------------------------------------------------- per test
def _run_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> list[pytest.TestReport]:
    """Run setup, call and teardown of ``item`` and return their reports without logging them.

    pytest has no public API for this.  memguard judges a test after its teardown and may
    turn its call report into a failure, so the reports must be held back until then:
    ``runtestprotocol(log=False)`` is the function pytest's own protocol runs.
    """
    from _pytest.runner import runtestprotocol

    return runtestprotocol(item, nextitem=nextitem, log=False)


def runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None, run: Run) -> bool:
    """Run an opted-in test with its reports held back until memguard has judged it."""
    policy = _marker_policy(item, run.settings)
    tracker = Tracker(policy)
    uses_process_heap = run.settings.enabled or policy.marked
    if uses_process_heap:
        heap = tracker.heap = run.process_heap()
        s = heap.stats()
        tracker.allocs0, tracker.live0, tracker.frees0 = s.total_allocs, s.live_blocks, s.total_frees
        tracker.mark0 = tracker.heap.mark()
        tracker.reports0 = len(heap.reports)
        run.consumed = max(run.consumed, tracker.reports0)
        if "on_error" in policy.options and policy.marked:
            saved_on_error = heap.on_error
            heap.on_error = policy.options["on_error"]
    item.stash[TRACKER_KEY] = tracker
    run.active = tracker
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    tracker.meter.start(tracker.heap)
    try:
        reports = _run_protocol(item, nextitem)
    finally:
        run.active = None
        if uses_process_heap and "on_error" in policy.options and policy.marked:
            heap.on_error = saved_on_error
    usage = tracker.meter.stop(tracker.heap, tracker.own)
    over = _limits.judge_limits(policy.limits, usage)
    sites = _limit_sites(tracker) if over else []
    verdict = _judge(item, run, tracker)
    _apply(item, run, tracker, verdict, reports, usage, over, sites)
    for rep in reports:
        item.ihook.pytest_runtest_logreport(report=rep)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    del item.stash[TRACKER_KEY]
    return True


def cut_memguard_frames(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """End the traceback at the user's call into memguard: the heap's own frames are noise."""
    tb = excinfo.tb
    prev = None
    while tb is not None:
        if is_own_file(tb.tb_frame.f_code.co_filename) and prev is not None:
            prev.tb_next = None
            excinfo.traceback = pytest.ExceptionInfo.from_exc_info((excinfo.type, excinfo.value, excinfo.tb)).traceback
            return
        prev, tb = tb, tb.tb_next


def add_error_section(item: pytest.Item, err: BaseException, rep: pytest.TestReport) -> None:
    """A MemguardError failed the test: its full report becomes a ``memguard`` section."""
    report = getattr(err, "report", None)
    if report is None or not rep.failed:
        return
    run = item.config.stash.get(RUN_KEY, None)
    report = _v.trim_report(report, run.internal_dirs if run is not None else _INTERNAL_DIRS)
    rep.sections.append(("memguard", str(report)))
    tracker = item.stash.get(TRACKER_KEY, None)
    if tracker is not None:
        tracker.raised.append(report)


def _process_findings(run: Run, tracker: Tracker) -> tuple[list[Report], list[LeakGroup]]:
    """Findings of the process heap attributable to this test."""
    heap = tracker.heap
    if heap is None or heap.closed:
        return [], []
    s = heap.stats()
    touched = s.total_allocs != tracker.allocs0 or s.total_frees != tracker.frees0
    # Plugins' memguard_check and the checkers over the heap (pools …) can find
    # something in a test that made no heap allocation.
    others = heap.seams.on_check is not None or bool(heap.registered())
    if touched or others:
        before = len(heap.reports)
        with heap.reporting() as saved:
            # The blocks this test allocated or freed; the session ends with a full check().
            heap.check(since=tracker.mark0)
        start = tracker.reports0 if saved != "raise" else before
        reports = list(heap.reports[start:])
    else:
        reports = list(heap.reports[tracker.reports0:]) if heap.on_error != "raise" else []
    run.consumed = max(run.consumed, len(heap.reports))
    groups: list[LeakGroup] = []
    if s.total_allocs != tracker.allocs0:
        since: Any = tracker.mark0 if tracker.mark0 is not None else tracker.allocs0
        if tracker.wide_fixture and tracker.setup_serial is not None:
            since = tracker.setup_serial  # blocks made in setup may belong to a wider fixture
        # Blocks of objects the program still reaches (NumPy arrays in a cache) are not leaks;
        # the walk that decides it runs only when there are candidates.
        groups = without_retained(heap, heap.leaks(since=since))
    return reports, groups


def _own_findings(tracker: Tracker) -> tuple[list[Report], list[LeakGroup]]:
    """Findings of the test's own ``guarded_heap`` / ``ref_audit`` objects (which are then closed).

    With ``on_error="raise"`` a finding made during the test was raised into it (the test
    failed, or it caught the error on purpose), so only the final check counts.
    """
    from memguard.heap.guarded import GuardedHeap

    reports: list[Report] = []
    groups: list[LeakGroup] = []
    for obj in tracker.own:
        if obj.closed:
            continue
        during = list(obj.reports) if obj.on_error != "raise" else []
        with obj.reporting():
            if isinstance(obj, GuardedHeap):
                found = obj.check()
                groups.extend(obj.leaks())
                obj.close(check=False)
            else:
                found = obj.close()  # checks first: references still held are refcount-leak reports
        seen = set(map(id, during))
        reports.extend(during)
        reports.extend(r for r in found if id(r) not in seen)
    return reports, groups


def _judge(item: pytest.Item, run: Run, tracker: Tracker) -> _v.Verdict:
    reports, groups = _process_findings(run, tracker)
    own_reports, own_groups = _own_findings(tracker)
    reports += own_reports
    groups += own_groups
    if not reports and not groups:
        return _v.Verdict()
    for g in groups:
        run.reported_addresses.update(g.addresses)
    reports, dropped_r = run.filter(reports)
    groups, dropped_g = run.filter(groups)
    return _v.judge(reports, groups, tracker.policy.leaks, run.internal_dirs, dropped_r + dropped_g)


def _crash_location(path: str, lineno: int, message: str) -> Any:
    """The crash location of a failure representation (its ``path:line: message``).

    pytest exports no constructor for it (``ReprFileLocation`` is not in the ``pytest``
    namespace); memguard needs one so that the crash line of the failure it makes points
    at the test, not at memguard.
    """
    from _pytest._code.code import ReprFileLocation

    return ReprFileLocation(path, lineno, message)


def _failure_longrepr(item: pytest.Item, reason: str) -> Any:
    """pytest's own failure rendering of ``reason`` (so ``-r`` lines and xdist carry it)."""
    try:
        pytest.fail(reason, pytrace=False)
    except pytest.fail.Exception:
        excinfo = pytest.ExceptionInfo.from_current()
    longrepr = item.repr_failure(excinfo)  # pytrace=False: rendered as the message alone
    crash = _crash_location(item.location[0], (item.location[1] or 0) + 1, reason)
    if hasattr(longrepr, "chain"):
        tb, _, descr = longrepr.chain[-1]
        longrepr.chain[-1] = (tb, crash, descr)
        longrepr.reprcrash = crash
    return longrepr


def _fail(item: pytest.Item, reports: list[pytest.TestReport], when: str, reason: str, section: str) -> None:
    """Fail the ``when`` report (else the last one) with ``reason``; add ``section`` to it.

    A failed teardown report is what pytest counts as an error (``1 error``).
    """
    target = next((r for r in reports if r.when == when), None) or reports[-1]
    if target.passed:
        target.outcome = "failed"
        target.longrepr = _failure_longrepr(item, reason)
    target.sections.append(("memguard", section))


def _warn(item: pytest.Item, reason: str, section: str) -> None:
    warnings.warn_explicit(
        MemguardLeakWarning(f"{item.nodeid}: {reason}\n{section}"),
        category=MemguardLeakWarning, filename=str(item.path), lineno=(item.location[1] or 0) + 1,
    )


def _fixture_leak(item: pytest.Item, run: Run, tracker: Tracker, leak: FixtureLeak,
                  reports: list[pytest.TestReport]) -> dict[str, Any]:
    """A wide fixture torn down in this test's teardown left blocks live: an error of the teardown."""
    for g in leak.groups:
        run.reported_addresses.update(g.addresses)
    groups, dropped = run.filter(list(leak.groups))
    verdict = _v.judge([], groups, tracker.policy.leaks, run.internal_dirs, dropped)
    reason = f"fixture {leak.name!r} ({leak.scope} scope) {verdict.reason}" if verdict.reason else ""
    if verdict.failed:
        _fail(item, reports, "teardown", reason, verdict.section)
    elif verdict.warned:
        _warn(item, reason, verdict.section)
    return {"fixture": leak.name, "scope": leak.scope, **verdict.to_dict(), "reason": reason}


def _limit_sites(tracker: Tracker) -> list[LeakGroup]:
    """Where the test allocated (process heap and its own heaps), largest first."""
    groups = allocation_sites(tracker.heap, tracker.allocs0)
    for obj in tracker.own:
        if hasattr(obj, "walk") and not obj.closed:
            groups += allocation_sites(obj, 0)
    groups.sort(key=lambda g: (-g.size, -g.count))
    return groups


def _apply(item: pytest.Item, run: Run, tracker: Tracker, verdict: _v.Verdict, reports: list[pytest.TestReport],
           usage: _limits.Usage, over: list[str], sites: list[LeakGroup]) -> None:
    """Turn the verdict, the fixture leaks and the limits into report changes and a run record."""
    if verdict.failed:
        _fail(item, reports, "call", verdict.reason, verdict.section)
    elif verdict.warned:
        _warn(item, verdict.reason, verdict.section)
    fixtures = [_fixture_leak(item, run, tracker, leak, reports) for leak in tracker.fixture_leaks]
    increase: list[str] = []
    if run.baseline is not None:
        source = os.path.basename(run.settings.fail_on_increase or "")
        leaked = sum(g.size for g in verdict.leaks)
        increase = _limits.judge_increase(run.baseline.get(item.nodeid), usage, leaked, source)
    if over:
        trimmed = [_v.trim_group(g, run.internal_dirs) for g in sites]
        _fail(item, reports, "call", over[0], "\n".join(over) + "\n\n" + _limits.format_sites(trimmed))
    if increase:
        _fail(item, reports, "call", increase[0], "\n".join(increase))
    record: dict[str, Any] = {"nodeid": item.nodeid, **verdict.to_dict()}
    record["limit_failures"] = over + increase
    record["fixture_leaks"] = fixtures
    record["growth"] = tracker.growth.to_dict() if tracker.growth is not None else None
    record.update(usage.to_dict())
    if tracker.raised:
        record["findings"] = [r.to_dict() for r in tracker.raised] + record["findings"]
        record["failed"] = True
        if not record["reason"]:
            record["reason"] = _v.describe_report(tracker.raised[0])
    failures = [f["reason"] for f in fixtures if f["failed"]] + over + increase
    if tracker.growth is not None and tracker.growth.failed:
        failures.append(tracker.growth.reason)
    if failures:
        record["failed"] = True
        record["reason"] = record["reason"] or failures[0]
    run.records.append(record)


# ----------------------------------------------------------------------------- fixtures
def guarded_heap(request: pytest.FixtureRequest, run: Run) -> Iterator[GuardedHeap]:
    """The body of the ``guarded_heap`` fixture: a fresh heap, checked at the end of the test."""
    from memguard.heap.guarded import GuardedHeap

    tracker = request.node.stash.get(TRACKER_KEY, None)
    options = _marker_policy(request.node, run.settings).options
    heap = GuardedHeap(**_heap_kwargs(options), name=f"guarded_heap[{request.node.name}]")
    if tracker is not None:
        tracker.own.append(heap)
        yield heap
        return
    # Requested dynamically (not seen at collection): check here and fail the teardown.
    yield heap
    _check_unmanaged(heap)


def ref_audit(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The body of the ``ref_audit`` fixture: a RefAudit whose references still held fail the test."""
    import memguard

    cls = getattr(memguard, "RefAudit", None)
    if cls is None:
        from memguard.refaudit import RefAudit as cls  # noqa: N813
    audit = cls(on_error="raise", name=f"ref_audit[{request.node.name}]")
    tracker = request.node.stash.get(TRACKER_KEY, None)
    if tracker is not None:
        tracker.own.append(audit)
        yield audit
        return
    yield audit
    _check_unmanaged(audit)


def fixture_torn_down(run: Run, fixturedef: Any) -> None:
    """A watched wide fixture was torn down: charge what it left live to the test being torn down.

    Torn down outside a checked test, its blocks are left for the end-of-session check.
    """
    tracker = run.active
    if tracker is None:
        run.fixtures.finish(fixturedef, None)
        return
    leak = run.fixtures.finish(fixturedef, tracker.heap)
    if leak is not None:
        tracker.fixture_leaks.append(leak)


def _check_unmanaged(obj: Any) -> None:
    """Check a fixture object outside the plugin's protocol (requested dynamically): fail the teardown."""
    from memguard.errors import LeakError

    tracker = Tracker(TestPolicy("fail", {}, False), own=[obj])
    reports, groups = _own_findings(tracker)
    verdict = _v.judge(reports, groups, "fail", _INTERNAL_DIRS)
    if verdict.failed:
        raise LeakError(f"{verdict.reason}\n{verdict.section}")


# ----------------------------------------------------------------------------- growth
def _measure() -> tuple[Callable[[], int], str]:
    import psutil

    heap_info = getattr(psutil, "heap_info", None)
    if heap_info is not None:
        try:
            heap_info()

            def measure() -> int:
                info = heap_info()
                return int(info.heap_used) + int(getattr(info, "mmap_used", 0))

            return measure, "heap"
        except Exception:  # noqa: BLE001 - not supported on this platform
            pass
    proc = psutil.Process()
    return (lambda: int(proc.memory_info().rss)), "rss"


def _settle() -> None:
    import psutil

    gc.collect()
    trim = getattr(psutil, "heap_trim", None)
    if trim is not None:
        try:
            trim()
        except Exception:  # noqa: BLE001
            pass


def _test_argnames(item: pytest.Function) -> tuple[str, ...]:
    """The arguments the test function itself takes (what pytest passes it).

    pytest has no public API for them: ``item.fixturenames`` also lists autouse and
    indirectly requested fixtures, which the function does not take, and pytest's rules
    for which parameters are fixtures (defaults, ``mock.patch``, bound methods) live in
    its private ``_fixtureinfo``, the one its own ``pytest_pyfunc_call`` reads.
    """
    return tuple(item._fixtureinfo.argnames)  # noqa: SLF001


def run_growth(pyfuncitem: pytest.Function) -> bool:
    """``memguard_growth``: run the test body warmup+runs times and measure native memory."""
    spec = _growth_spec(pyfuncitem)
    assert spec is not None
    testfunction = pyfuncitem.obj
    funcargs = pyfuncitem.funcargs
    testargs = {arg: funcargs[arg] for arg in _test_argnames(pyfuncitem)}
    measure, metric = _measure()
    _settle()
    samples = [measure()]
    for _ in range(spec.warmup + spec.runs):
        testfunction(**testargs)
        _settle()
        samples.append(measure())
    verdict = _v.judge_growth(samples, spec.max_bytes, spec.warmup, metric)
    tracker = pyfuncitem.stash.get(TRACKER_KEY, None)
    if tracker is not None:
        tracker.growth = verdict
    if verdict.failed:
        pytest.fail(f"{verdict.reason}\n{verdict.table}", pytrace=False)
    return True


# ----------------------------------------------------------------------------- session
def _session_check(run: Run) -> None:
    heap = run.heap
    if heap is None or heap.closed:
        return
    with heap.reporting():
        heap.check()
    reports = list(heap.reports[run.consumed:])
    run.consumed = len(heap.reports)
    groups = [g for g in without_retained(heap, heap.leaks(since=run.session_serial))
              if not set(g.addresses) <= run.reported_addresses]
    reports, _ = run.filter(reports)
    groups, _ = run.filter(groups)
    if run.settings.leaks == "ignore":
        groups = []
    verdict = _v.judge(reports, groups, run.settings.leaks, run.internal_dirs)
    run.session = {
        "findings": [r.to_dict() for r in verdict.reports],
        "leaks": [g.to_dict() for g in verdict.leaks],
        "failed": verdict.failed,
        "reason": verdict.reason,
        "section": verdict.section,
    }
    if run.settings.html and not run.worker:
        from memguard.reporting.exitreport import heap_maps

        try:
            run.heap_maps = heap_maps(heap, {a for g in verdict.leaks for a in g.addresses})
        except Exception as exc:  # noqa: BLE001 - a picture: the page is written without it
            sys.stderr.write(f"memguard: --memguard-html: no heap map: {type(exc).__name__}: {exc}\n")


def session_finish(session: pytest.Session, run: Run) -> None:
    """Check the process heap outside any test, hand results to xdist, write the JSON report."""
    try:
        _session_check(run)
    finally:
        run.release()
    if run.session.get("failed"):
        session.testsfailed += 1
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if run.worker:
        session.config.workeroutput["memguard"] = json.dumps(  # type: ignore[attr-defined]
            {"records": run.records, "session": run.session, "suppressions": run.suppression_rows()}
        )
        return
    if run.settings.report:
        from memguard.pytest_report import write_report

        write_report(run)
    if run.settings.html:
        from memguard.pytest_report import write_html

        write_html(run)


def collect_worker(run: Run, data: str) -> None:
    """xdist controller: add one worker's records and session result to the run."""
    payload = json.loads(data)
    run.workers += 1
    run.records.extend(payload.get("records", ()))
    for row in payload.get("suppressions", ()):
        run.count_suppressed(row["rule"], row["rule_file"], row["rule_line"], row["count"], row["bytes"])
    s = payload.get("session") or {}
    run.session["findings"].extend(s.get("findings", ()))
    run.session["leaks"].extend(s.get("leaks", ()))
    if s.get("failed"):
        run.session["failed"] = True
        run.session.setdefault("sections", []).append(s.get("section", ""))
        run.session["reason"] = s.get("reason", "")
        session = run.session_obj
        if session is not None:
            session.testsfailed += 1
