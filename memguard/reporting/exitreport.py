"""The exit report: what leaked and what was corrupted when a program ends.

Building (:func:`build_report`): the heap is checked one last time in ``report`` mode
(redzones of live blocks, poison of quarantined ones), its findings and its leaks (grouped
by allocation site, largest first) are collected, the launcher's own frames are trimmed
from the bottom of every stack, then the ``only=`` allow-list and the suppressions are
applied.  Nothing is dropped: suppressed and out-of-scope findings are kept aside.

Rendering: :func:`render_text` (corruption reports first, then LeakSanitizer's "Direct
leak of …" groups and ``SUMMARY:`` line, then the table of suppressions used) and
:func:`render_json` (the versioned document described in ``docs/exit-report.md``).
Writing: :func:`write_atomic` (:mod:`memguard.reporting.files`: a new 0600 file, then a rename).

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
import math
import os
import platform
import re
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Mapping, Sequence

from memguard.errors import MemguardError
from memguard.heapmaps import DEFAULT_WIDTH, HeapMap
from memguard.leaks import LeakGroup, format_leaks, leaks_to_dict
from memguard.options import Options
from memguard.report import Report
from memguard._location import PACKAGE_DIR
from memguard.stacks import Frame, Stack, hide_framework_frames
from memguard.reporting.files import write_report_file
from memguard.reporting.suppressions import Only, Rule, Suppressed, Suppressions, format_suppression_table, summarize
from memguard.reporting.retention import without_retained

__all__ = [
    "ExitReport",
    "SCHEMA",
    "SCHEMA_VERSION",
    "build_report",
    "render_text",
    "render_json",
    "load_report",
    "parse_report_text",
    "MAX_NESTING",
    "MAX_REPORT_BYTES",
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
    "MAX_HEAP_MAPS",
    "heap_maps",
]

#: The ``schema`` field of the JSON document.
SCHEMA = "memguard.exit-report"
#: The ``schema_version`` this memguard writes (and the newest it reads); 2 added ``heap_maps``.
SCHEMA_VERSION = 2
#: Most heap maps an exit report carries (the heap's, then its registered allocators').
MAX_HEAP_MAPS = 16



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
    """``stack`` without the launcher's frames at its bottom and without the frames of
    pytest, pluggy, ``runpy`` and ``importlib`` (kept whole if nothing else is left)."""
    end = len(stack)
    while end and _is_launcher(stack[end - 1]):
        end -= 1
    return hide_framework_frames(stack[:end]) if end else stack


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
    :ivar heap_maps: the layout of the heap and of its registered allocators at exit,
        sub-pixel blocks merged (:class:`~memguard.heapmaps.HeapMap`), leaked blocks drawn
        as leaked; made for ``report_format=json`` and ``html`` only.
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
    heap_maps: tuple[HeapMap, ...] = ()

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
            "heap_maps": [m.to_dict() for m in self.heap_maps],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<report>") -> ExitReport:
        """Rebuild an exit report from :meth:`to_dict` output (or a parsed JSON document).

        The document is treated as untrusted: every field this memguard reads is
        type-checked (integers are integers, not booleans or floats, and within 64 bits;
        strings are strings; bytes are hex strings); unknown fields are ignored.

        :raises ReportFileError: not a memguard exit report, a newer schema, or a bad
            field (the one-line message names it).
        """
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            raise ReportFileError(f"{source}: not a memguard exit report (no \"schema\": \"{SCHEMA}\")")
        version = data.get("schema_version")
        if type(version) is not int or not 1 <= version <= SCHEMA_VERSION:
            raise ReportFileError(
                f"{source}: schema_version {_show(version)} is not supported (this memguard reads 1 to {SCHEMA_VERSION})"
            )
        try:
            return _exit_report(cls, data)
        except _BadField as exc:
            raise ReportFileError(f"{source}: malformed memguard exit report: {exc}") from None


# ---------------------------------------------------------------------------- reading
#: The deepest nesting of arrays and objects a report file may have (memguard writes 6
#: levels, plus what a checker puts in a finding's ``extra``).
MAX_NESTING = 64
#: The largest report file :func:`load_report` reads.
MAX_REPORT_BYTES = 256 << 20
#: Integers in a report are addresses, sizes, counts, offsets, statuses: within 64 bits.
_INT_LO, _INT_HI = -(1 << 64), 1 << 64


class _BadField(Exception):
    """A field of a report document with the wrong type or value (message: where and what)."""


def _show(value: Any) -> str:
    """A short one-line rendering of a bad value for an error message."""
    text = type(value).__name__ if isinstance(value, (dict, list)) else json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


def _expect(value: Any, ok: bool, where: str, what: str) -> Any:
    if not ok:
        raise _BadField(f"{where}: expected {what}, got {_show(value)}")
    return value


def _int(d: Mapping[str, Any], key: str, where: str, default: int | None = 0, lo: int = _INT_LO) -> Any:
    """``d[key]``: an int (not a bool) in ``[lo, 2**64)``; required when ``default`` is ``None``."""
    value = d.get(key, default)
    ok = type(value) is int and lo <= value < _INT_HI
    return _expect(value, ok, f"{where}.{key}", "an integer" if lo == _INT_LO else "an integer >= 0")


def _str(d: Mapping[str, Any], key: str, where: str, default: str | None = "") -> str:
    value = d.get(key, default)
    return _expect(value, isinstance(value, str), f"{where}.{key}", "a string")  # type: ignore[no-any-return]


def _bool(d: Mapping[str, Any], key: str, where: str) -> bool:
    value = d.get(key, False)
    return _expect(value, isinstance(value, bool), f"{where}.{key}", "true or false")  # type: ignore[no-any-return]


def _list(d: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = d.get(key)
    if value is None:
        return []
    return _expect(value, isinstance(value, list), f"{where}.{key}", "an array")  # type: ignore[no-any-return]


def _obj(d: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = d.get(key)
    if value is None:
        return None
    return _expect(value, isinstance(value, dict), f"{where}.{key}", "an object")  # type: ignore[no-any-return]


def _items(d: Mapping[str, Any], key: str, where: str) -> list[tuple[str, dict[str, Any]]]:
    """The objects of the array ``d[key]``, each with where it is."""
    out = []
    for i, item in enumerate(_list(d, key, where)):
        at = f"{where}.{key}[{i}]"
        out.append((at, _expect(item, isinstance(item, dict), at, "an object")))
    return out


def _hex(d: Mapping[str, Any], key: str, where: str) -> bytes:
    value = _str(d, key, where)
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise _BadField(f"{where}.{key}: expected hex digits, got {_show(value)}") from None


def _stack(d: Mapping[str, Any], key: str, where: str) -> Stack:
    return tuple(
        Frame(_str(f, "filename", at, None), _int(f, "lineno", at, None, 0), _str(f, "name", at, None))
        for at, f in _items(d, key, where)
    )


def _report(d: Mapping[str, Any], where: str) -> Report:
    return Report(
        kind=_str(d, "kind", where, None), address=_int(d, "address", where, 0, 0), size=_int(d, "size", where, 0, 0),
        offset=_int(d, "offset", where), alloc_stack=_stack(d, "alloc_stack", where),
        free_stack=_stack(d, "free_stack", where), stack=_stack(d, "stack", where),
        expected=_hex(d, "expected", where), found=_hex(d, "found", where), thread=_str(d, "thread", where),
        message=_str(d, "message", where), serial=_int(d, "serial", where, 0, 0), memory=_hex(d, "memory", where),
        memory_start=_int(d, "memory_start", where, 0, 0), count=_int(d, "count", where, 0, 0),
        extra=dict(_obj(d, "extra", where) or {}), pid=_int(d, "pid", where, 0, 0),
    )


def _leak(d: Mapping[str, Any], where: str) -> LeakGroup:
    addresses = _list(d, "addresses", where)
    for i, a in enumerate(addresses):
        _expect(a, type(a) is int and 0 <= a < _INT_HI, f"{where}.addresses[{i}]", "an integer >= 0")
    return LeakGroup(
        _stack(d, "stack", where), _int(d, "size", where, None, 0), _int(d, "count", where, None, 0), tuple(addresses)
    )


def _suppressed(d: Mapping[str, Any], where: str, leak: bool) -> Suppressed:
    finding = _expect(d.get("finding"), isinstance(d.get("finding"), dict), f"{where}.finding", "an object")
    item: Report | LeakGroup = _leak(finding, f"{where}.finding") if leak else _report(finding, f"{where}.finding")
    text = _str(d, "rule", where, None)
    kind = "memory-leak" if leak else item.kind  # type: ignore[union-attr]
    filename = _str(d, "rule_file", where, "<string>")
    rule = Rule(kind, text.partition(":")[2], text, filename, _int(d, "rule_line", where, 0, 0))
    return Suppressed(item, rule)


def _exit_report(cls: type[ExitReport], data: Mapping[str, Any]) -> ExitReport:
    top = "report"
    options_doc = _obj(data, "options", top) or {}
    known = {f.name for f in dataclasses.fields(Options)}
    try:
        options = Options(**{k: v for k, v in options_doc.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise _BadField(f"{top}.options: {_one_line(str(exc).removeprefix('Options: '))}") from None
    sup = _obj(data, "suppressed", top) or {}
    oos = _obj(data, "out_of_scope", top) or {}
    stats_doc = _obj(data, "stats", top)
    stats = None if stats_doc is None else {k: _int(stats_doc, k, f"{top}.stats") for k in stats_doc}
    argv = _list(data, "argv", top)
    for i, a in enumerate(argv):
        _expect(a, isinstance(a, str), f"{top}.argv[{i}]", "a string")
    maps = []
    for at, m in _items(data, "heap_maps", top)[:MAX_HEAP_MAPS]:
        try:
            maps.append(HeapMap.from_dict(m, at))
        except ValueError as exc:
            raise _BadField(str(exc)) from None
    return cls(
        reports=tuple(_report(r, at) for at, r in _items(data, "reports", top)),
        leaks=tuple(_leak(g, at) for at, g in _items(data, "leaks", top)),
        suppressed_reports=tuple(_suppressed(s, at, False) for at, s in _items(sup, "reports", f"{top}.suppressed")),
        suppressed_leaks=tuple(_suppressed(s, at, True) for at, s in _items(sup, "leaks", f"{top}.suppressed")),
        out_of_scope_reports=tuple(_report(r, at) for at, r in _items(oos, "reports", f"{top}.out_of_scope")),
        out_of_scope_leaks=tuple(_leak(g, at) for at, g in _items(oos, "leaks", f"{top}.out_of_scope")),
        stats=stats,
        options=options,
        pid=_int(data, "pid", top, 0, 0),
        argv=tuple(argv),
        program_status=None if data.get("program_status") is None else _int(data, "program_status", top),
        created=_str(data, "created", top),
        memguard_version=_str(data, "memguard_version", top),
        python_version=_str(data, "python_version", top),
        heap_closed=_bool(data, "heap_closed", top),
        heap_maps=tuple(maps),
    )


#: A JSON string (skipped whole) or a bracket: enough to measure nesting without parsing.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _nesting_exceeds(text: str, limit: int) -> bool:
    """Whether arrays and objects in the JSON ``text`` nest deeper than ``limit`` (strings skipped)."""
    depth = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:197] + "..."


def parse_report_text(text: str, source: str = "<report>") -> ExitReport:
    """Parse the JSON text of an exit report, treating it as untrusted.

    Nesting deeper than :data:`MAX_NESTING`, ``NaN``/``Infinity`` and numbers beyond a
    float's range are refused before any field is read; then :meth:`ExitReport.from_dict`.

    :raises ReportFileError: with a one-line message naming ``source``.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    if _nesting_exceeds(text, MAX_NESTING):
        raise ReportFileError(f"{source}: not a memguard exit report: nested deeper than {MAX_NESTING} levels")
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:  # pragma: no cover - the nesting check comes first
        raise ReportFileError(f"{source}: not a memguard exit report: nested too deeply") from None
    except ValueError as exc:
        raise ReportFileError(f"{source}: not JSON: {_one_line(str(exc))}") from None
    return ExitReport.from_dict(data, source)


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
                leaks = without_retained(heap, leaks)  # blocks of objects still reachable (NumPy arrays)
            stats = dataclasses.asdict(heap.stats())
    # A forked child's findings start after those its parent had recorded (the parent's to report).
    reports = [_trim_report(r) for r in list(heap.reports)[getattr(heap, "inherited_reports", 0) :]]
    leaks = _trim_leaks(leaks)
    only = Only(options.only)
    reports, oos_reports = only.apply(reports)
    leaks, oos_leaks = only.apply(leaks)
    reports, sup_reports = suppressions.apply(reports)
    leaks, sup_leaks = suppressions.apply(leaks)
    maps: tuple[HeapMap, ...] = ()
    if not closed and options.report_format in ("json", "html"):
        maps = heap_maps(heap, {a for g in leaks for a in g.addresses})
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
        heap_maps=maps,
    )


def heap_maps(heap: Any, leaked: set[int], width: int = DEFAULT_WIDTH) -> tuple[HeapMap, ...]:
    """The maps of ``heap`` and of the allocators registered with it that draw one (``layout_map``).

    A pool that belongs to an allocator with a map of its own is left out (the allocator's
    map shows it).  A map that cannot be made is left out: the report is still written.
    """
    owners = [heap] + [c for c in heap.registered() if hasattr(c, "layout_map")]
    drawn = {id(c) for c in owners}
    maps: list[HeapMap] = []
    for obj in owners:
        if id(getattr(obj, "owner", None)) in drawn:
            continue
        try:
            maps.append(obj.layout_map(leaked=leaked, width=width))
        except Exception:  # noqa: BLE001 - a map is a picture: the report goes on without it
            continue
        if len(maps) == MAX_HEAP_MAPS:
            break
    return tuple(maps)


# ---------------------------------------------------------------------------- rendering
def _suppression_table(result: ExitReport) -> str:
    return format_suppression_table((rule.text, count, size) for rule, count, size in summarize(result.suppressed))


def render_text(result: ExitReport, verbose: bool | None = None) -> str:
    """The report for a person: corruption first, then leaks, then suppressions used.

    Empty when there is nothing to say (nothing found, nothing suppressed) unless
    ``verbose`` (default: ``result.options.verbose``), which adds a summary line.
    """
    if verbose is None:
        verbose = result.options.verbose
    parts = [str(r) for r in result.reports]
    if result.leaks:
        parts.append(format_leaks(result.leaks, pid=result.pid or None))
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
    """Read a report written with ``report_format=json``, treating the file as untrusted.

    At most :data:`MAX_REPORT_BYTES` are read; see :func:`parse_report_text` for the rest.

    :raises ReportFileError: unreadable, too large, not UTF-8, not JSON, or not a memguard
        exit report this version can read; the message is one line.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        raise ReportFileError(f"cannot read {name!r}: {exc.strerror or exc}") from None
    if len(raw) > MAX_REPORT_BYTES:
        raise ReportFileError(f"{name}: not a memguard exit report: larger than {MAX_REPORT_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportFileError(f"{name}: not JSON: not UTF-8 (byte {exc.start})") from None
    return parse_report_text(text, name)


# ---------------------------------------------------------------------------- writing
def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` as a new 0600 file, atomically (see :mod:`memguard.reporting.files`).

    Readers see either no file or the whole report, never half of one; nothing planted
    in the directory (a symlink at a predictable name) is opened or followed.
    """
    write_report_file(path, text)


def _stream(options: Options) -> IO[str] | None:
    if options.log_path == "stdout":
        return sys.stdout or sys.__stdout__
    return sys.stderr or sys.__stderr__


def emit(result: ExitReport) -> str | None:
    """Write ``result`` where its options say; return the file written (``None`` for a stream).

    A text report with nothing to say is not written.  A JSON report going to a file is
    always written (a clean run is data too), and so is an HTML one (``PREFIX.<pid>.html``);
    with no file to go to (``log_path`` unset), ``report_format=html`` prints the text report.  If the file cannot be written, the report
    goes to stderr with a note.
    """
    options = result.options
    human = render_text(result)
    target = options.log_file(result.pid or None)
    if options.report_format == "json":
        text = render_json(result)
        if target is None and not human:
            return None
    elif options.report_format == "html" and target is not None:
        from memguard.reporting.html import render_html  # noqa: PLC0415 (the page is rarely asked for)

        target += ".html"
        text = render_html(result)
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
