"""The exit report: what leaked and what was corrupted when a program ends.

Building (:func:`build_report`): the heap is checked one last time in ``report`` mode
(redzones of live blocks, poison of quarantined ones), its findings and its leaks (grouped
by allocation site, largest first) are collected, the launcher's own frames are trimmed
from the bottom of every stack, then the ``only=`` allow-list and the suppressions are
applied.  Nothing is dropped: suppressed and out-of-scope findings are kept aside.

Rendering: :func:`render_text` (corruption reports first, then LeakSanitizer's "Direct
leak of …" groups and ``SUMMARY:`` line, then the table of suppressions used) and
:func:`render_json` (the versioned document described in ``docs/exit-report.md``).
Writing: :func:`write_atomic` (temporary file in the same directory, then rename).

Wiring: :func:`dump` is what the ``atexit`` handler of :func:`memguard.install` calls;
:func:`install_sigterm_handler` turns SIGTERM into ``SystemExit(143)`` so the report is
still produced; :func:`exit_status` decides ``memguard run``'s exit status.

Not covered (nothing in the process runs): ``SIGKILL``, ``os._exit()``, a crash of the
interpreter (segmentation fault, ``os.abort()``, ``on_error=abort``, which prints its own
report first), and SIGTERM unless ``handle_sigterm=1``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Mapping, Sequence

from memguard.errors import MemguardError
from memguard.leaks import LeakGroup, format_leaks, leaks_to_dict
from memguard.options import Options
from memguard.report import Report
from memguard._location import PACKAGE_DIR
from memguard.stacks import Frame, Stack
from memguard.reporting.suppressions import Only, Rule, Suppressed, Suppressions, summarize

__all__ = [
    "ExitReport",
    "SCHEMA",
    "SCHEMA_VERSION",
    "build_report",
    "render_text",
    "render_json",
    "load_report",
    "write_atomic",
    "emit",
    "dump",
    "exit_status",
    "after_fork_in_child",
    "last_exit_report",
    "add_launcher_frames",
    "drop_launcher_frames",
    "install_sigterm_handler",
    "restore_sigterm_handler",
    "ReportFileError",
]

#: The ``schema`` field of the JSON document.
SCHEMA = "memguard.exit-report"
#: The ``schema_version`` this memguard writes (and the newest it reads).
SCHEMA_VERSION = 1

_RULE = "-" * 53


class ReportFileError(MemguardError, ValueError):
    """A saved report that is not a memguard exit report this version can read."""


# ---------------------------------------------------------------------------- stacks
_launcher_files: set[str] = set()


def add_launcher_frames(frame: Any) -> None:
    """Mark the files of ``frame`` and its callers as the launcher's (trimmed from stacks).

    ``memguard run`` calls this before running the program, so that the frames below the
    program's ``<module>`` (the console script, ``runpy``) do not show in reports.
    """
    while frame is not None:
        _launcher_files.add(frame.f_code.co_filename)
        frame = frame.f_back


def _is_launcher(frame: Frame) -> bool:
    name = frame.filename
    return (
        name.startswith(PACKAGE_DIR)
        or name in _launcher_files
        or name.startswith("<frozen runpy")
        or os.path.basename(name) == "runpy.py"
    )


def drop_launcher_frames(stack: Stack) -> Stack:
    """``stack`` without the launcher's frames at its bottom (kept whole if nothing else is left)."""
    end = len(stack)
    while end and _is_launcher(stack[end - 1]):
        end -= 1
    return stack[:end] if end else stack


def _trim_report(r: Report) -> Report:
    return dataclasses.replace(
        r, alloc_stack=drop_launcher_frames(r.alloc_stack), free_stack=drop_launcher_frames(r.free_stack), stack=drop_launcher_frames(r.stack)
    )


def _trim_leaks(groups: Iterable[LeakGroup]) -> list[LeakGroup]:
    merged: dict[Stack, list[Any]] = {}
    for g in groups:
        stack = drop_launcher_frames(g.stack)
        m = merged.setdefault(stack, [0, 0, []])
        m[0] += g.size
        m[1] += g.count
        m[2].extend(g.addresses)
    out = [LeakGroup(stack, size, count, tuple(addresses)) for stack, (size, count, addresses) in merged.items()]
    out.sort(key=lambda g: (-g.size, -g.count, str(g.stack[:1])))
    return out


# ---------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class ExitReport:
    """Everything the exit report says.

    :ivar reports: corruption and other findings, in the order they were found.
    :ivar leaks: leak groups, largest first.
    :ivar suppressed_reports: findings a suppression rule matched.
    :ivar suppressed_leaks: leak groups a suppression rule matched.
    :ivar out_of_scope_reports: findings with no frame matching ``only=``.
    :ivar out_of_scope_leaks: leak groups with no frame matching ``only=``.
    :ivar stats: the heap's counters (:class:`memguard.HeapStats` as a dict), ``None`` when
        the heap was closed.
    :ivar options: the options in force.
    :ivar pid: the process.
    :ivar argv: the program's ``sys.argv``.
    :ivar program_status: the program's own exit status, when known (``memguard run``).
    :ivar created: when the report was built (UTC, ISO 8601).
    :ivar memguard_version: the memguard that built it.
    :ivar python_version: the Python that ran the program.
    :ivar heap_closed: the heap had been closed: no final check and no leak list.
    """

    reports: tuple[Report, ...] = ()
    leaks: tuple[LeakGroup, ...] = ()
    suppressed_reports: tuple[Suppressed, ...] = ()
    suppressed_leaks: tuple[Suppressed, ...] = ()
    out_of_scope_reports: tuple[Report, ...] = ()
    out_of_scope_leaks: tuple[LeakGroup, ...] = ()
    stats: Mapping[str, int] | None = None
    options: Options = field(default_factory=Options)
    pid: int = 0
    argv: tuple[str, ...] = ()
    program_status: int | None = None
    created: str = ""
    memguard_version: str = ""
    python_version: str = ""
    heap_closed: bool = False

    @property
    def found(self) -> bool:
        """Whether anything (not suppressed, in scope) was found: decides the exit status."""
        return bool(self.reports or self.leaks)

    @property
    def leaked_bytes(self) -> int:
        """Bytes in the reported leak groups."""
        return sum(g.size for g in self.leaks)

    @property
    def leaked_blocks(self) -> int:
        """Blocks in the reported leak groups."""
        return sum(g.count for g in self.leaks)

    @property
    def suppressed(self) -> tuple[Suppressed, ...]:
        """Every suppressed finding (reports first)."""
        return self.suppressed_reports + self.suppressed_leaks

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (schema in ``docs/exit-report.md``)."""
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "memguard_version": self.memguard_version,
            "python_version": self.python_version,
            "platform": sys.platform,
            "created": self.created,
            "pid": self.pid,
            "argv": list(self.argv),
            "program_status": self.program_status,
            "found": self.found,
            "heap_closed": self.heap_closed,
            "options": self.options.to_dict(),
            "stats": dict(self.stats) if self.stats is not None else None,
            "reports": [r.to_dict() for r in self.reports],
            "leaks": [g.to_dict() for g in self.leaks],
            "leak_summary": {k: v for k, v in leaks_to_dict(self.leaks).items() if k != "groups"},
            "suppressed": {
                "reports": [s.to_dict() for s in self.suppressed_reports],
                "leaks": [s.to_dict() for s in self.suppressed_leaks],
            },
            "suppression_counts": [
                {"rule": r.text, "file": r.filename, "line": r.lineno, "count": n, "bytes": b}
                for r, n, b in summarize(self.suppressed)
            ],
            "out_of_scope": {
                "reports": [r.to_dict() for r in self.out_of_scope_reports],
                "leaks": [g.to_dict() for g in self.out_of_scope_leaks],
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<report>") -> ExitReport:
        """Rebuild an exit report from :meth:`to_dict` output.

        :raises ReportFileError: not a memguard exit report, a newer schema, or bad fields.
        """
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            raise ReportFileError(f"{source}: not a memguard exit report (no \"schema\": \"{SCHEMA}\")")
        version = data.get("schema_version")
        if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise ReportFileError(
                f"{source}: schema_version {version!r} is not supported (this memguard reads 1 to {SCHEMA_VERSION})"
            )
        try:
            known = {f.name for f in dataclasses.fields(Options)}
            options = Options(**{k: v for k, v in (data.get("options") or {}).items() if k in known})
            sup = data.get("suppressed") or {}
            oos = data.get("out_of_scope") or {}
            return cls(
                reports=tuple(Report.from_dict(r) for r in data.get("reports", ())),
                leaks=tuple(_leak_from_dict(g) for g in data.get("leaks", ())),
                suppressed_reports=tuple(_suppressed_from_dict(s, False) for s in sup.get("reports", ())),
                suppressed_leaks=tuple(_suppressed_from_dict(s, True) for s in sup.get("leaks", ())),
                out_of_scope_reports=tuple(Report.from_dict(r) for r in oos.get("reports", ())),
                out_of_scope_leaks=tuple(_leak_from_dict(g) for g in oos.get("leaks", ())),
                stats={str(k): int(v) for k, v in data["stats"].items()} if data.get("stats") is not None else None,
                options=options,
                pid=int(data.get("pid", 0)),
                argv=tuple(str(a) for a in data.get("argv", ())),
                program_status=None if data.get("program_status") is None else int(data["program_status"]),
                created=str(data.get("created", "")),
                memguard_version=str(data.get("memguard_version", "")),
                python_version=str(data.get("python_version", "")),
                heap_closed=bool(data.get("heap_closed", False)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReportFileError(f"{source}: malformed memguard exit report: {exc!r}") from None


def _frames(items: Any) -> Stack:
    return tuple(Frame(str(f["filename"]), int(f["lineno"]), str(f["name"])) for f in items or ())


def _leak_from_dict(d: Mapping[str, Any]) -> LeakGroup:
    return LeakGroup(_frames(d.get("stack")), int(d["size"]), int(d["count"]), tuple(int(a) for a in d.get("addresses", ())))


def _suppressed_from_dict(d: Mapping[str, Any], leak: bool) -> Suppressed:
    item: Report | LeakGroup = _leak_from_dict(d["finding"]) if leak else Report.from_dict(d["finding"])
    text = str(d["rule"])
    kind = "memory-leak" if leak else item.kind  # type: ignore[union-attr]
    rule = Rule(kind, text.partition(":")[2], text, str(d.get("rule_file", "<string>")), int(d.get("rule_line", 0)))
    return Suppressed(item, rule)


def _version() -> str:
    try:
        from memguard import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover - partially initialised package
        return "unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_report(
    heap: Any,
    options: Options | None = None,
    suppressions: Suppressions | None = None,
    program_status: int | None = None,
    argv: Sequence[str] | None = None,
) -> ExitReport:
    """Check ``heap`` (in report mode), collect its findings and leaks, filter them.

    :param suppressions: already loaded rules; by default ``options.suppressions`` is read.
    A closed heap gives the findings it recorded before closing and no leak list.
    """
    options = options or Options()
    if suppressions is None:
        suppressions = Suppressions.load(options.suppressions) if options.suppressions else Suppressions()
    closed = bool(getattr(heap, "closed", False))
    leaks: list[LeakGroup] = []
    stats: dict[str, int] | None = None
    if not closed:
        with heap.reporting():
            heap.check()
            if options.leak_check:
                # A forked child leaves out the parent's blocks unless asked.
                leaks = heap.leaks(inherited=True) if options.inherited_leaks else heap.leaks()
            stats = dataclasses.asdict(heap.stats())
    # A forked child's findings start after those its parent had recorded (the parent's to report).
    reports = [_trim_report(r) for r in list(heap.reports)[getattr(heap, "inherited_reports", 0) :]]
    leaks = _trim_leaks(leaks)
    only = Only(options.only)
    reports, oos_reports = only.apply(reports)
    leaks, oos_leaks = only.apply(leaks)
    reports, sup_reports = suppressions.apply(reports)
    leaks, sup_leaks = suppressions.apply(leaks)
    return ExitReport(
        reports=tuple(reports),
        leaks=tuple(leaks),
        suppressed_reports=tuple(sup_reports),
        suppressed_leaks=tuple(sup_leaks),
        out_of_scope_reports=tuple(oos_reports),
        out_of_scope_leaks=tuple(oos_leaks),
        stats=stats,
        options=options,
        pid=os.getpid(),
        argv=tuple(sys.argv if argv is None else argv),
        program_status=program_status,
        created=_now(),
        memguard_version=_version(),
        python_version=platform.python_version(),
        heap_closed=closed,
    )


# ---------------------------------------------------------------------------- rendering
def _suppression_table(result: ExitReport) -> str:
    lines = [_RULE, "Suppressions used:", "  count      bytes template"]
    for rule, count, size in summarize(result.suppressed):
        lines.append(f"{count:7d} {size:10d} {rule.text}")
    lines.append(_RULE)
    return "\n".join(lines)


def render_text(result: ExitReport, verbose: bool | None = None) -> str:
    """The report for a person: corruption first, then leaks, then suppressions used.

    Empty when there is nothing to say (nothing found, nothing suppressed) unless
    ``verbose`` (default: ``result.options.verbose``), which adds a summary line.
    """
    if verbose is None:
        verbose = result.options.verbose
    parts = [str(r) for r in result.reports]
    if result.leaks:
        parts.append(format_leaks(result.leaks))
    if result.suppressed and (result.options.print_suppressions or verbose):
        parts.append(_suppression_table(result))
    oos = len(result.out_of_scope_reports) + len(result.out_of_scope_leaks)
    if oos and (parts or verbose):
        size = sum(g.size for g in result.out_of_scope_leaks)
        parts.append(
            f"memguard: {oos} finding(s) ({size} leaked byte(s)) outside only={','.join(result.options.only)} not shown"
        )
    if verbose:
        if result.heap_closed:
            parts.append("memguard: the heap was closed before exit: no final check, no leak list")
        s = result.stats or {}
        status = "found problems" if result.found else "no leaks or heap errors found"
        parts.append(
            f"memguard: {status} ({s.get('total_allocs', 0)} allocation(s), {s.get('total_frees', 0)} free(s), "
            f"peak {s.get('peak_bytes', 0)} byte(s), {len(result.suppressed)} suppressed)"
        )
    return "\n\n".join(parts) + "\n" if parts else ""


def render_json(result: ExitReport) -> str:
    """The JSON document (indented, one trailing newline)."""
    return json.dumps(result.to_dict(), indent=2, default=str) + "\n"


def load_report(path: str | os.PathLike[str]) -> ExitReport:
    """Read a report written with ``report_format=json``.

    :raises ReportFileError: unreadable, not JSON, or not a memguard exit report.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ReportFileError(f"cannot read {name!r}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportFileError(f"{name}: not JSON: {exc}") from None
    return ExitReport.from_dict(data, name)


# ---------------------------------------------------------------------------- writing
def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename.

    Readers see either no file or the whole report, never half of one.
    """
    name = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(name))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(name) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _stream(options: Options) -> IO[str] | None:
    if options.log_path == "stdout":
        return sys.stdout or sys.__stdout__
    return sys.stderr or sys.__stderr__


def emit(result: ExitReport) -> str | None:
    """Write ``result`` where its options say; return the file written (``None`` for a stream).

    A text report with nothing to say is not written.  A JSON report going to a file is
    always written (a clean run is data too).  If the file cannot be written, the report
    goes to stderr with a note.
    """
    options = result.options
    human = render_text(result)
    target = options.log_file(result.pid or None)
    if options.report_format == "json":
        text = render_json(result)
        if target is None and not human:
            return None
    else:
        text = human
        if not text:
            return None
    if target is not None:
        try:
            write_atomic(target, text)
            return target
        except OSError as exc:
            stream = _stream(options)
            if stream is not None:
                stream.write(f"memguard: cannot write the report to {target!r} ({exc}); writing it here\n")
        text = human
        if not text:
            return None
    stream = _stream(options)
    if stream is not None:
        stream.write(text)
        stream.flush()
    return None


# ---------------------------------------------------------------------------- at exit
_last: ExitReport | None = None
_program_status: int | None = None
_dump_lock = threading.Lock()


def set_program_status(status: int | None) -> None:
    """Record the program's own exit status for the report (``memguard run`` does this)."""
    global _program_status
    _program_status = status


def last_exit_report() -> ExitReport | None:
    """The report the last :func:`dump` built (``None`` before any)."""
    return _last


def after_fork_in_child() -> None:
    """In a forked child: no exit report yet, and a lock no parent thread holds."""
    global _last, _dump_lock
    _last = None
    _dump_lock = threading.Lock()


def dump(heap: Any, options: Options, suppressions: Suppressions | None = None) -> ExitReport | None:
    """Build and emit the exit report for ``heap``; never raises (errors go to stderr).

    Returns the report (also available from :func:`last_exit_report`), or ``None`` when
    there is no heap or building it failed.
    """
    global _last
    if heap is None:
        return None
    with _dump_lock:
        try:
            result = build_report(heap, options, suppressions, program_status=_program_status)
            _last = result
            emit(result)
            return result
        except Exception as exc:  # noqa: BLE001 - at exit, a message beats a traceback
            stream = sys.stderr or sys.__stderr__
            if stream is not None:
                stream.write(f"memguard: could not produce the exit report: {type(exc).__name__}: {exc}\n")
                stream.flush()
            return None


def exit_status(program_status: int, result: ExitReport | None, options: Options | None = None) -> int:
    """The status ``memguard run`` exits with.

    The program's own status, unless the report found something (not suppressed, in
    scope): then ``options.exitcode`` (default 23).  ``exitcode=0`` keeps the program's.
    """
    options = options or (result.options if result is not None else Options())
    if result is not None and result.found and options.exitcode:
        return options.exitcode
    return program_status


# ---------------------------------------------------------------------------- SIGTERM
_prev_sigterm: Any = None
_sigterm_installed = False


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def install_sigterm_handler() -> None:
    """Make SIGTERM raise ``SystemExit(143)`` in the main thread, so ``finally`` blocks,
    ``atexit`` handlers and the exit report all run.

    :raises MemguardError: called from a thread other than the main thread.
    """
    global _prev_sigterm, _sigterm_installed
    if _sigterm_installed:
        return
    if threading.current_thread() is not threading.main_thread():
        raise MemguardError("handle_sigterm=1: memguard.install() must be called from the main thread")
    _prev_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True


def restore_sigterm_handler() -> None:
    """Put back the SIGTERM handler that was there before :func:`install_sigterm_handler`."""
    global _sigterm_installed
    if not _sigterm_installed:
        return
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, _prev_sigterm if _prev_sigterm is not None else signal.SIG_DFL)
    _sigterm_installed = False
