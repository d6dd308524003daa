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
from typing import Sequence

from memguard.reporting import exitreport
from memguard import process
from memguard._location import is_own_file
from memguard.errors import MemguardError
from memguard.options import OPTION_SPECS, ENV_VAR, Options

__all__ = ["main", "RunSpec", "parse_run_args", "UsageError", "USAGE_ERROR"]

#: Exit status for a command-line mistake (as argparse uses).
USAGE_ERROR = 2

_PROG = "memguard"

_MAIN_HELP = f"""\
usage: {_PROG} <command> [arguments]

Find memory bugs in native memory driven from Python through ctypes.

commands:
  run      run a Python program on the guarded heap and report leaks and corruption at exit
  report   render a report saved with report_format=json

options:
  -h, --help     show this help (and `{_PROG} <command> --help` for each command)
  --version      show memguard's version

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


_RUN_HELP = f"""\
usage: {_PROG} run [--option key=value ...] script.py [args...]
       {_PROG} run [--option key=value ...] -m module [args...]

Run a Python program on memguard's process-wide heap (memguard.malloc/free and
everything that uses them), as `python script.py` or `python -m module` would:
sys.argv, __main__ and the exit status are the program's.  When it ends (normally,
by sys.exit, by an uncaught exception, or by SIGTERM with handle_sigterm=1),
memguard checks the heap and prints what was corrupted and what leaked.

The exit status is the program's own, unless memguard found leaks or corruption
(not suppressed): then it is `exitcode` (default 23, as LeakSanitizer).

options:
  -o, --option key=value   set an option (repeatable; wins over ${ENV_VAR})
  -m module                run a library module as a script
  -h, --help               show this help

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


def parse_run_args(argv: Sequence[str]) -> RunSpec | None:
    """Parse the arguments of ``memguard run``; ``None`` means ``--help`` was asked for.

    memguard's own options come before the script (or ``-m module``); everything after
    it belongs to the program.
    """
    options: dict[str, str] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg in ("-h", "--help"):
            return None
        if arg in ("-o", "--option"):
            if i + 1 >= len(items):
                raise UsageError(f"{arg} needs a key=value argument")
            value = items[i + 1]
            i += 2
        elif arg.startswith("--option="):
            value = arg[len("--option=") :]
            i += 1
        elif arg.startswith("-o") and len(arg) > 2:
            value = arg[2:]
            i += 1
        elif arg == "-m":
            if i + 1 >= len(items):
                raise UsageError("-m needs a module name")
            return RunSpec(items[i + 1], True, tuple(items[i + 2 :]), options)
        elif arg.startswith("-m") and len(arg) > 2:
            return RunSpec(arg[2:], True, tuple(items[i + 1 :]), options)
        elif arg == "--":
            if i + 1 >= len(items):
                raise UsageError("no script given after --")
            return RunSpec(items[i + 1], False, tuple(items[i + 2 :]), options)
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg!r} (memguard's options come before the script)")
        else:
            return RunSpec(arg, False, tuple(items[i + 1 :]), options)
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option expects key=value, got {value!r}")
        options[key.strip()] = val
    raise UsageError("no script or -m module given")


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


def _cmd_run(argv: Sequence[str]) -> int:
    try:
        spec = parse_run_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"{_PROG} run: {exc}\nTry '{_PROG} run --help'.\n")
        return exc.exit_code
    if spec is None:
        sys.stdout.write(_RUN_HELP)
        return 0
    if not spec.module and not os.path.exists(spec.target):
        sys.stderr.write(f"{_PROG} run: can't open file {spec.target!r}: no such file\n")
        return USAGE_ERROR
    try:
        options = Options.resolve(**spec.options)
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
    parser = argparse.ArgumentParser(
        prog=f"{_PROG} report",
        description="Render a memguard exit report saved with report_format=json.",
        epilog=_REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", help="the JSON report (log_path=PREFIX writes PREFIX.<pid>)")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text",
        help="text: LeakSanitizer-style report for a person (default); json: the normalized document",
    )
    args = parser.parse_args(list(argv))
    try:
        result = exitreport.load_report(args.file)
    except MemguardError as exc:
        sys.stderr.write(f"{_PROG} report: {exc}\n")
        return USAGE_ERROR
    if args.format == "json":
        sys.stdout.write(exitreport.render_json(result))
    else:
        program = " ".join(result.argv) or "?"
        status = "?" if result.program_status is None else str(result.program_status)
        sys.stdout.write(
            f"memguard exit report: pid {result.pid}, program {program!r} (exit status {status}), "
            f"{result.created}, memguard {result.memguard_version}, Python {result.python_version}\n\n"
        )
        sys.stdout.write(exitreport.render_text(result, verbose=True))
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``memguard`` command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        (sys.stdout if args else sys.stderr).write(_MAIN_HELP)
        return 0 if args else USAGE_ERROR
    if args[0] == "--version":
        from memguard import __version__

        sys.stdout.write(f"memguard {__version__}\n")
        return 0
    command, rest = args[0], args[1:]
    if command == "run":
        return _cmd_run(rest)
    if command == "report":
        return _cmd_report(rest)
    sys.stderr.write(f"{_PROG}: unknown command {command!r} (commands: run, report)\nTry '{_PROG} --help'.\n")
    return USAGE_ERROR
