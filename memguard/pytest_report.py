"""The pytest plugin's output: the JSON report, the terminal summary, the one-line hint.

:func:`report_document` is the ``--memguard-report`` document, described by the JSON
Schema shipped as ``memguard/schemas/pytest-report.schema.json``; :func:`write_report`
writes it through :mod:`memguard.reporting.files` (a new 0600 file, renamed into place).
:func:`terminal_summary` is the ``memguard`` section of pytest's summary, and
:func:`unasked_heap_hint` the one line that ends a run that did not ask for memguard but
used the process heap.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from typing import TYPE_CHECKING, Any

import pytest

from memguard.reporting import limits as _limits
from memguard.reporting import verdicts as _v

if TYPE_CHECKING:
    from memguard.pytest_session import Run

__all__ = ["REPORT_SCHEMA_VERSION", "report_document", "terminal_summary", "unasked_heap_hint", "write_html", "write_report"]


def _versions() -> dict[str, str]:
    import memguard

    return {
        "memguard": getattr(memguard, "__version__", "?"),
        "pytest": pytest.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


#: The ``schema_version`` of the pytest report this memguard writes (``memguard/schemas/pytest-report.schema.json``).
REPORT_SCHEMA_VERSION = 2


def _utc_now() -> str:
    """Now, in UTC, to the second, ending in ``Z`` (as the exit report's ``created``)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def report_document(run: Run) -> dict[str, Any]:
    """The JSON report of the run (see ``memguard/schemas/pytest-report.schema.json``)."""
    totals = _v.summarize(run.records, run.session)
    rows = run.suppression_rows()
    totals["suppressed"] = sum(row["count"] for row in rows)
    return {
        "schema": "memguard.pytest-report",
        "schema_version": REPORT_SCHEMA_VERSION,
        "created": _utc_now(),
        "versions": _versions(),
        "settings": {
            "enabled": run.settings.enabled,
            "leaks": run.settings.leaks,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in run.settings.options.items()},
            "suppressions": run.settings.suppressions,
            "max_peak": run.settings.max_peak,
            "max_allocations": run.settings.max_allocations,
        },
        "workers": run.workers,
        "tests": run.records,
        "session": {k: v for k, v in run.session.items() if k not in ("section", "sections")},
        "suppressions": rows,
        "totals": totals,
    }


def write_report(run: Run) -> None:
    """Write the JSON report to ``--memguard-report``'s path (a message on stderr if it cannot)."""
    from memguard.reporting.files import write_report_file

    path = run.settings.report or ""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_report_file(path, json.dumps(report_document(run), indent=1) + "\n")
    except OSError as exc:
        sys.stderr.write(f"memguard: --memguard-report: cannot write {path!r}: {exc}\n")


def write_html(run: Run) -> None:
    """Write the HTML report to ``--memguard-html``'s path (a message on stderr if it cannot)."""
    from memguard.reporting.files import write_report_file
    from memguard.reporting.html import render_pytest_html

    path = run.settings.html or ""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_report_file(path, render_pytest_html(json.loads(json.dumps(report_document(run), default=str)),
                                                 run.heap_maps))
    except OSError as exc:
        sys.stderr.write(f"memguard: --memguard-html: cannot write {path!r}: {exc}\n")


def terminal_summary(terminalreporter: Any, config: pytest.Config, run: Run) -> None:
    """The ``memguard`` section: tests checked, findings by kind, the top leaking sites."""
    if not (run.records or run.settings.enabled):
        return
    tr = terminalreporter
    tr.write_sep("=", "memguard")
    totals = _v.summarize(run.records, run.session)
    for line in _v.format_summary(totals, relto=lambda s: _relsite(config, s)):
        tr.write_line(line)
    if run.session.get("failed"):
        tr.write_line(f"FAILED (outside any test): {run.session.get('reason', '')}", red=True, bold=True)
        for text in [run.session.get("section", "")] + list(run.session.get("sections", ())):
            if text:
                tr.write_line(text)
    rows = run.suppression_rows()
    if rows:
        from memguard.reporting.suppressions import format_suppression_table

        tr.write_line(format_suppression_table((r["rule"], r["count"], r["bytes"]) for r in rows))
    if run.settings.top:
        for line in _limits.top_tests(run.records, run.settings.top):
            tr.write_line(line)
    if run.settings.report:
        tr.write_line(f"JSON report: {run.settings.report}")
    if run.settings.html:
        tr.write_line(f"HTML report: {run.settings.html}")


def unasked_heap_hint(process: Any) -> str:
    """The one line that ends a run that did not ask for memguard but used the process heap.

    The process heap's exit report is not printed for it (:func:`memguard.process.skip_exit_report`):
    the run did not ask memguard to check anything.
    """
    from memguard.reporting.exitreport import build_report

    heap = process.process_heap()
    result = build_report(heap, process.process_options())
    process.skip_exit_report()
    found = []
    if result.leaks:
        found.append(f"{_v.plural(result.leaked_blocks, 'block')} ({_v.plural(result.leaked_bytes, 'byte')}) "
                     "still allocated")
    if result.reports:
        found.append(_v.plural(len(result.reports), "heap error"))
    if not found:
        return ""
    return (f"memguard: the process heap has {' and '.join(found)} at the end of the run; "
            "run pytest --memguard to check each test")


def _relsite(config: pytest.Config, site: str) -> str:
    root = str(config.rootpath) + os.sep
    return site[len(root):] if site.startswith(root) else site
