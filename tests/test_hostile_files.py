"""Files memguard reads or writes are treated as hostile.

``memguard report`` refuses every malformed document with exit status 2 and one line on
stderr (deep nesting, non-finite numbers, wrongly typed fields); report files are written
as new 0600 files renamed into place, never through a planted symlink; a suppressions
file with a UTF-8 byte order mark parses.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

import memguard
from memguard import cli
from memguard.options import Options
from memguard.reporting import exitreport
from memguard.reporting.exitreport import ReportFileError, build_report
from memguard.reporting.files import write_report_file
from memguard.reporting.suppressions import Suppressions
from sample_report import real_report

pytest_plugins = ["pytester"]


def _report(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "mg.json"
    path.write_text(text, encoding="utf-8")
    status = cli.main(["report", str(path)])
    return status, capsys.readouterr().err


def _assert_clean_error(status: int, err: str) -> None:
    assert status == cli.USAGE_ERROR
    assert err.startswith("memguard report: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_valid_document_still_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mg.json"
    path.write_text(json.dumps(real_report()))
    assert cli.main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "double-free" in out and "Direct leak of 24 byte(s) in 1 object(s)" in out


def test_deeply_nested_array_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = _report(tmp_path, "[" * 100_000 + "]" * 100_000, capsys)
    _assert_clean_error(status, err)
    assert f"nested deeper than {exitreport.MAX_NESTING} levels" in err


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = real_report()
    doc["argv"] = ["[" * 1000, '"{\\' * 100]
    path = tmp_path / "mg.json"
    path.write_text(json.dumps(doc))
    assert cli.main(["report", str(path)]) == 0


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"schema": "memguard.exit-report", "schema_version": 1, "pid": 1e400}', "1e400 is out of range"),
        ('{"schema": "memguard.exit-report", "schema_version": 1, "pid": -1e400}', "out of range"),
        ('{"schema": "memguard.exit-report", "schema_version": 1, "pid": Infinity}', "Infinity is not a number"),
        ('{"schema": "memguard.exit-report", "schema_version": 1, "pid": NaN}', "NaN is not a number"),
        ('{"schema": "memguard.exit-report", "schema_version": 1, "program_status": -Infinity}', "-Infinity"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str) -> None:
    status, err = _report(tmp_path, text, capsys)
    _assert_clean_error(status, err)
    assert fragment in err


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split("/")]
    target: Any = doc
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = value


@pytest.mark.parametrize(
    "path, value, fragment",
    [
        ("schema_version", True, "schema_version true is not supported"),
        ("schema_version", 1.0, "schema_version 1.0 is not supported"),
        ("pid", 1.5, "report.pid: expected an integer >= 0, got 1.5"),
        ("pid", True, "report.pid: expected an integer >= 0, got true"),
        ("pid", 1 << 70, "report.pid: expected an integer >= 0"),
        ("pid", "12", 'report.pid: expected an integer >= 0, got "12"'),
        ("argv", "app.py", "report.argv: expected an array"),
        ("argv", [1], "report.argv[0]: expected a string, got 1"),
        ("created", 5, "report.created: expected a string"),
        ("heap_closed", "no", "report.heap_closed: expected true or false"),
        ("program_status", "0", "report.program_status: expected an integer"),
        ("stats", [], "report.stats: expected an object"),
        ("stats/live_blocks", None, "report.stats.live_blocks: expected an integer"),
        ("options", {"redzone": 17}, "report.options: bad value 17"),
        ("options", "x", "report.options: expected an object"),
        ("reports", {}, "report.reports: expected an array"),
        ("reports/0", "x", "report.reports[0]: expected an object"),
        ("reports/0/kind", 3, "report.reports[0].kind: expected a string"),
        ("reports/0/alloc_stack/0/lineno", 1e300, "report.reports[0].alloc_stack[0].lineno: expected an integer >= 0"),
        ("reports/0/alloc_stack/0/lineno", None, "lineno: expected an integer >= 0, got null"),
        ("reports/0/alloc_stack/0", {"filename": "a.py", "name": "f"}, "lineno: expected an integer >= 0, got null"),
        ("reports/0/memory", "zz", "report.reports[0].memory: expected hex digits"),
        ("reports/0/extra", [1], "report.reports[0].extra: expected an object"),
        ("leaks/0/size", "24", "report.leaks[0].size: expected an integer >= 0"),
        ("leaks/0/addresses", [-1], "report.leaks[0].addresses[0]: expected an integer >= 0, got -1"),
        ("suppressed", {"leaks": [{"rule": "leak:x"}]}, "report.suppressed.leaks[0].finding: expected an object"),
        ("suppressed", {"reports": [{"rule": 1, "finding": {"kind": "bad-free"}}]}, "rule: expected a string"),
        ("out_of_scope", {"leaks": [{"size": 1}]}, "report.out_of_scope.leaks[0].count: expected an integer"),
    ],
)
def test_every_field_is_type_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, value: Any, fragment: str
) -> None:
    doc = real_report()
    _set(doc, path, value)
    status, err = _report(tmp_path, json.dumps(doc), capsys)
    _assert_clean_error(status, err)
    assert fragment in err


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"", "not JSON"),
        (b"[1, 2", "not JSON"),
        (b'"just a string"', "not a memguard exit report"),
    ],
)
def test_undecodable_and_truncated_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes, fragment: str) -> None:
    path = tmp_path / "mg.json"
    path.write_bytes(raw)
    _assert_clean_error(cli.main(["report", str(path)]), err := capsys.readouterr().err)
    assert fragment in err


def test_oversized_file_is_refused_without_reading_it_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exitreport, "MAX_REPORT_BYTES", 1024)
    path = tmp_path / "mg.json"
    path.write_text(json.dumps(real_report()))
    with pytest.raises(ReportFileError, match="larger than"):
        exitreport.load_report(path)


def test_byte_order_mark_in_a_report_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "mg.json"
    path.write_text("\ufeff" + json.dumps(real_report()), encoding="utf-8")
    assert exitreport.load_report(path).leaked_bytes == 24


# ----------------------------------------------------------------------------- suppressions
def test_suppressions_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "supp.txt"
    path.write_bytes("leak:helper\n".encode("utf-8-sig"))
    rules = Suppressions.load(path).rules
    assert [(r.kind, r.pattern) for r in rules] == [("memory-leak", "helper")]


# ----------------------------------------------------------------------------- writing
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_report_file_is_private_and_replaces_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "out" / "mg.1"
    target.parent.mkdir()
    target.symlink_to(victim)
    old_umask = os.umask(0)
    try:
        write_report_file(target, "report\n")
    finally:
        os.umask(old_umask)
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and target.read_text() == "report\n"
    assert _mode(target) == 0o600
    assert os.listdir(target.parent) == ["mg.1"]


def test_report_file_into_a_directory_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "mg.1").mkdir()
    with pytest.raises(OSError):
        write_report_file(tmp_path / "mg.1", "x")
    assert os.listdir(tmp_path) == ["mg.1"]


def test_exit_report_file_is_0600(tmp_path: Path) -> None:
    heap = memguard.GuardedHeap()
    try:
        heap.malloc(8)
        result = build_report(heap, Options(log_path=str(tmp_path / "mg"), report_format="json"))
    finally:
        heap.close(check=False)
    written = exitreport.emit(result)
    assert written is not None and _mode(Path(written)) == 0o600


def test_pytest_report_never_follows_planted_symlinks(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMGUARD_OPTIONS", raising=False)
    memguard.uninstall()
    pytester.makepyfile(test_x="def test_ok():\n    pass\n")
    victim_tmp = pytester.path / "victim_tmp"
    victim_tmp.write_text("precious tmp\n")
    victim = pytester.path / "victim"
    victim.write_text("precious\n")
    out = pytester.path / "mg.json"
    # The writer used to open the predictable "<path>.tmp<pid>" and follow whatever was there.
    Path(f"{out}.tmp{os.getpid()}").symlink_to(victim_tmp)
    out.symlink_to(victim)
    result = pytester.runpytest("--memguard", f"--memguard-report={out}")
    result.assert_outcomes(passed=1)
    assert victim_tmp.read_text() == "precious tmp\n" and victim.read_text() == "precious\n"
    assert not out.is_symlink() and json.loads(out.read_text())["schema"] == "memguard.pytest-report"
    assert _mode(out) == 0o600


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_pytest_report_is_0600_whatever_the_umask(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMGUARD_OPTIONS", raising=False)
    memguard.uninstall()
    pytester.makepyfile(test_x="def test_ok():\n    pass\n")
    out = pytester.path / "sub" / "mg.json"
    old_umask = os.umask(0o022)
    try:
        pytester.runpytest("--memguard", f"--memguard-report={out}").assert_outcomes(passed=1)
    finally:
        os.umask(old_umask)
    assert _mode(out) == 0o600 and os.listdir(out.parent) == ["mg.json"]
