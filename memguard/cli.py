"""The ``memguard`` command (also ``python -m memguard``).

``memguard run [--option key=value ...] script.py [args...]`` and
``memguard run [--option key=value ...] -m module [args...]`` run a program on the
process-wide guarded heap, as ``python script.py`` would, then print the exit report.
``memguard report FILE.json`` renders a report saved with ``report_format=json``.
"""

from __future__ import annotations

import argparse
import atexit
import os
import runpy
import sys
import threading
import traceback
from dataclasses import dataclass, field
from types import TracebackType
from typing import NoReturn, Sequence

from memguard.reporting import exitreport
from memguard import process
from memguard._location import is_own_file
from memguard._version import __version__
from memguard.errors import MemguardError
from memguard.options import OPTION_SPECS, ENV_VAR, Options

__all__ = ["main", "RunSpec", "parse_run_args", "UsageError", "USAGE_ERROR"]

#: Exit status for a command-line mistake (as argparse uses).
USAGE_ERROR = 2

_PROG = "memguard"

_MAIN_DESCRIPTION = "Find memory bugs in native memory driven from Python through ctypes."

_MAIN_EPILOG = f"""\
commands:
  run      run a Python program on the guarded heap and report leaks and corruption at exit
  report   render a report saved with report_format=json

`{_PROG} <command> --help` shows each command's options.

examples:
  {_PROG} run examples/leaky.py
  {_PROG} run --option leak_check=0 -m mypackage.tool --verbose
  MEMGUARD_OPTIONS=log_path=/tmp/mg:report_format=json {_PROG} run app.py
  {_PROG} report /tmp/mg.12345
"""


def _options_table() -> str:
    width = max(len(k) for k in OPTION_SPECS)
    lines = []
    for spec in OPTION_SPECS.values():
        default = spec.default
        if isinstance(default, bool):
            default = int(default)
        elif default in (None, ()):
            default = "-"
        lines.append(f"  {spec.name:<{width}}  {spec.help} [{default}; {spec.allowed}]")
    return "\n".join(lines)


_RUN_DESCRIPTION = """\
Run a Python program on memguard's process-wide heap (memguard.malloc/free and
everything that uses them), as `python script.py` or `python -m module` would:
sys.argv, __main__ and the exit status are the program's.  When it ends (normally,
by sys.exit, by an uncaught exception, or by SIGTERM with handle_sigterm=1),
memguard checks the heap and prints what was corrupted and what leaked.

The exit status is the program's own, unless memguard found leaks or corruption
(not suppressed): then it is `exitcode` (default 23, as LeakSanitizer).
memguard's options come before the script (or -m module); everything after it is
the program's.
"""


def _run_epilog() -> str:
    return f"""\
options (key [default; allowed values]), also read from
{ENV_VAR}="key=value:key=value":
{_options_table()}

examples:
  {_PROG} run examples/leaky.py
  {_PROG} run -o suppressions=examples/suppressions.txt examples/suppressed.py
  {_PROG} run -o only='myapp*' -o exitcode=1 -m myapp.cli --serve
  {_PROG} run -o log_path=/tmp/mg -o report_format=json app.py   # writes /tmp/mg.<pid>
"""


_REPORT_EPILOG = f"""\
examples:
  {_PROG} run -o log_path=/tmp/mg -o report_format=json app.py
  {_PROG} report /tmp/mg.12345
  {_PROG} report --format json /tmp/mg.12345 > normalized.json
  {_PROG} report --format html -o report.html /tmp/mg.12345
"""


@dataclass(frozen=True)
class RunSpec:
    """What ``memguard run`` was asked to run.

    :ivar target: the script path, or the module name when ``module`` is true.
    :ivar module: ``-m`` was given.
    :ivar args: the program's own arguments.
    :ivar options: ``--option`` values, as strings, in order (last wins).
    """

    target: str
    module: bool = False
    args: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)


class UsageError(MemguardError):
    """A ``memguard`` command line that cannot be run; the command exits with :attr:`exit_code`."""

    exit_code = USAGE_ERROR


class _Printed(Exception):
    """argparse printed ``--help`` or ``--version``: the command ends with ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting: :class:`UsageError` for a mistake."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Printed(status)


def _parsers() -> tuple[_Parser, _Parser, _Parser]:
    """The ``memguard`` parser and its ``run`` and ``report`` sub-parsers."""
    raw = argparse.RawDescriptionHelpFormatter
    main = _Parser(prog=_PROG, description=_MAIN_DESCRIPTION, epilog=_MAIN_EPILOG, formatter_class=raw)
    main.add_argument("--version", action="version", version=f"{_PROG} {__version__}")
    commands = main.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    run = commands.add_parser(
        "run", help="run a Python program on the guarded heap", description=_RUN_DESCRIPTION,
        epilog=_run_epilog(), formatter_class=raw, add_help=False, usage=(
            f"{_PROG} run [-o KEY=VALUE ...] script.py [args ...]\n"
            f"       {_PROG} run [-o KEY=VALUE ...] -m module [args ...]"
        ),
    )
    run.add_argument("-h", "--help", action="store_true", help="show this help")
    run.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                     help=f"set an option (repeatable; wins over ${ENV_VAR})")
    run.add_argument("-m", dest="module", action="store_true", help="run a library module as a script")
    run.add_argument("target", nargs="?", metavar="script.py | module", help="the program")
    run.add_argument("args", nargs=argparse.REMAINDER, help="the program's arguments")
    report = commands.add_parser(
        "report", help="render a report saved with report_format=json",
        description="Render a memguard exit report saved with report_format=json.",
        epilog=_REPORT_EPILOG, formatter_class=raw,
    )
    report.add_argument("file", help="the JSON report (log_path=PREFIX writes PREFIX.<pid>)")
    report.add_argument(
        "--format", choices=("text", "json", "html"), default="text",
        help="text: LeakSanitizer-style report for a person (default); json: the normalized document; "
             "html: a self-contained page (needs -o)",
    )
    report.add_argument("-o", "--output", metavar="PATH", default=None,
                        help="write to PATH (a new 0600 file, renamed into place) instead of standard output")
    return main, run, report


def parse_run_args(argv: Sequence[str]) -> RunSpec | None:
    """Parse the arguments of ``memguard run``; ``None`` means ``--help`` was asked for.

    memguard's own options come before the script (or ``-m module``); everything after
    it belongs to the program.  Raises :class:`UsageError` for a command line that
    cannot be run.
    """
    items = list(argv)
    # ``-mpkg`` (as python accepts it) is ``-m pkg``
    for i, arg in enumerate(items):
        if arg == "--" or not arg.startswith("-"):
            break
        if arg.startswith("-m") and len(arg) > 2:
            items[i : i + 1] = ["-m", arg[2:]]
            break
    args = _parsers()[1].parse_args(items)
    if args.help:
        return None
    if args.target is None:
        raise UsageError("no script or -m module given")
    if not args.module and args.target.startswith("-") and "--" not in items:
        raise UsageError(f"unknown option {args.target!r} (memguard's options come before the script)")
    options: dict[str, str] = {}
    for value in args.option:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option expects key=value, got {value!r}")
        options[key.strip()] = val
    return RunSpec(args.target, args.module, tuple(args.args), options)


def _strip_tb(tb: TracebackType | None) -> TracebackType | None:
    """Drop the launcher's frames (memguard's own, runpy) from the front of a traceback."""
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if is_own_file(name) or name.startswith("<frozen runpy") or os.path.basename(name) == "runpy.py":
            tb = tb.tb_next
        else:
            break
    return tb


def _exit_code(exc: SystemExit) -> int:
    """The status Python would exit with for ``exc`` (printing a non-int code, as Python does)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, bool) or not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        sys.stderr.flush()
        return 1
    return code & 0xFF


def _execute(spec: RunSpec) -> int:
    """Run the program in this interpreter; return its exit status."""
    try:
        if spec.module:
            sys.argv = ["-m", *spec.args]
            sys.path[0:1] = [os.getcwd()] if sys.path else [os.getcwd()]
            runpy.run_module(spec.target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [spec.target, *spec.args]
            directory = os.path.dirname(os.path.abspath(spec.target))
            if sys.path:
                sys.path[0] = directory
            else:
                sys.path.insert(0, directory)
            runpy.run_path(spec.target, run_name="__main__")
    except SystemExit as exc:
        return _exit_code(exc)
    except KeyboardInterrupt as exc:
        tb = _strip_tb(exc.__traceback__)
        traceback.print_exception(type(exc), exc.with_traceback(tb), tb)
        return 130
    except BaseException as exc:  # noqa: BLE001 - the program's uncaught exception
        tb = _strip_tb(exc.__traceback__)
        if tb is None and spec.module and isinstance(exc, ImportError):
            # runpy could not find the module or its __main__: one line, as `python -m` says it
            sys.stderr.write(f"{_PROG} run: {exc}\n")
            return 1
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        return 1
    return 0


def _join_threads() -> None:
    """Wait for the program's non-daemon threads, as the interpreter does before exiting."""
    me = threading.current_thread()
    while True:
        pending = [t for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]
        if not pending:
            return
        for t in pending:
            t.join()


def _reexec_for_jemalloc(argv: Sequence[str]) -> None:
    """Start ``memguard run`` again with the glibc tunable jemalloc needs to be opened
    after start-up (see :mod:`memguard.native.jemalloc`), unless the process has it or
    preloads jemalloc."""
    from memguard.native.jemalloc import TLS_TUNABLE

    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if sys.platform != "linux" or TLS_TUNABLE in tunables or "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    os.environ["GLIBC_TUNABLES"] = f"{tunables}:{TLS_TUNABLE}" if tunables else TLS_TUNABLE
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "memguard", "run", *argv])


def _cmd_run(argv: Sequence[str]) -> int:
    try:
        spec = parse_run_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"{_PROG} run: {exc}\nTry '{_PROG} run --help'.\n")
        return exc.exit_code
    if spec is None:
        _parsers()[1].print_help()
        return 0
    if not spec.module and not os.path.exists(spec.target):
        sys.stderr.write(f"{_PROG} run: can't open file {spec.target!r}: no such file\n")
        return USAGE_ERROR
    try:
        options = Options.resolve(**spec.options)
        if options.backend == "jemalloc":
            _reexec_for_jemalloc(argv)
        process.install(**spec.options)
    except MemguardError as exc:
        sys.stderr.write(f"{_PROG} run: {exc}\n")
        return USAGE_ERROR
    exitreport.add_launcher_frames(sys._getframe())
    status = _execute(spec)
    exitreport.set_program_status(status)
    _join_threads()
    # The program's atexit handlers run first (they may free memory), then memguard's,
    # which was registered before the program started: atexit runs handlers last-in first-out.
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is not None:
        run_exitfuncs()
    else:  # pragma: no cover - every CPython has it
        process.report_at_exit()
    heap_options = process.process_options() or options
    return exitreport.exit_status(status, exitreport.last_exit_report(), heap_options)


def _cmd_report(argv: Sequence[str]) -> int:
    try:
        args = _parsers()[2].parse_args(list(argv))
    except _Printed as done:
        return done.status
    except UsageError as exc:
        sys.stderr.write(f"{_PROG} report: {exc}\nTry '{_PROG} report --help'.\n")
        return exc.exit_code
    try:
        result = exitreport.load_report(args.file)
    except MemguardError as exc:
        sys.stderr.write(f"{_PROG} report: {exc}\n")
        return USAGE_ERROR
    if args.format == "html" and args.output is None:
        sys.stderr.write(f"{_PROG} report: --format html writes a file: give it with -o report.html\n")
        return USAGE_ERROR
    if args.format == "json":
        text = exitreport.render_json(result)
    elif args.format == "html":
        from memguard.reporting.html import render_html  # noqa: PLC0415 (only this format needs it)

        text = render_html(result)
    else:
        program = " ".join(result.argv) or "?"
        status = "?" if result.program_status is None else str(result.program_status)
        text = (
            f"memguard exit report: pid {result.pid}, program {program!r} (exit status {status}), "
            f"{result.created}, memguard {result.memguard_version}, Python {result.python_version}\n\n"
            + exitreport.render_text(result, verbose=True)
        )
    if args.output is not None:
        try:
            exitreport.write_atomic(args.output, text)
        except OSError as exc:
            sys.stderr.write(f"{_PROG} report: cannot write {args.output!r}: {exc.strerror or exc}\n")
            return 1
        return 0
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``memguard`` command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parsers()[0]
    if not args:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    command, rest = args[0], args[1:]
    if command == "run":
        return _cmd_run(rest)
    if command == "report":
        return _cmd_report(rest)
    try:
        parser.parse_args(args)
    except _Printed as done:  # --help, --version
        return done.status
    except UsageError:
        pass
    sys.stderr.write(f"{_PROG}: unknown command {command!r} (commands: run, report)\nTry '{_PROG} --help'.\n")
    return USAGE_ERROR
