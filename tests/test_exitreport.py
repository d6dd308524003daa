"""The exit report: building, rendering, JSON schema, atomic files, exit status."""

from __future__ import annotations

import ctypes
import io
import json
import os
from pathlib import Path
from typing import Iterator

import pytest

import memguard
from memguard.reporting import exitreport
from memguard.reporting.exitreport import ExitReport, ReportFileError, build_report, exit_status, render_json, render_text
from memguard.options import Options
from memguard.reporting.suppressions import Suppressions


@pytest.fixture
def heap() -> Iterator[memguard.GuardedHeap]:
    h = memguard.GuardedHeap(on_error="report", name="t")
    yield h
    h.close(check=False)


def leak_small(h: memguard.GuardedHeap) -> int:
    return h.malloc(8)


def leak_big(h: memguard.GuardedHeap) -> int:
    return h.malloc(100)


def overflow(h: memguard.GuardedHeap) -> int:
    p = h.malloc(4)
    ctypes.memset(p + 4, 0x41, 1)
    return p


def test_clean_heap_says_nothing(heap: memguard.GuardedHeap) -> None:
    heap.free(heap.malloc(10))
    result = build_report(heap, Options())
    assert not result.found and result.leaks == () and result.reports == ()
    assert render_text(result) == ""
    assert "no leaks or heap errors found (1 allocation(s), 1 free(s)" in render_text(result, verbose=True)


def test_leaks_grouped_largest_first_with_summary(heap: memguard.GuardedHeap) -> None:
    for _ in range(3):
        leak_small(heap)
    leak_big(heap)
    result = build_report(heap, Options())
    assert [(g.size, g.count) for g in result.leaks] == [(100, 1), (24, 3)]
    text = render_text(result)
    assert text.index("Direct leak of 100 byte(s) in 1 object(s) allocated from:") < text.index(
        "Direct leak of 24 byte(s) in 3 object(s) allocated from:"
    )
    assert "in leak_big" in text and "in leak_small" in text
    assert "SUMMARY: memguard: 124 byte(s) leaked in 4 allocation(s)." in text
    assert result.found and result.leaked_bytes == 124
    assert not build_report(heap, Options(leak_check=False)).leaks


def test_exit_check_finds_corruption_and_prints_it_first(heap: memguard.GuardedHeap) -> None:
    p = overflow(heap)
    result = build_report(heap, Options())
    assert [r.kind for r in result.reports] == ["heap-buffer-overflow"]
    assert heap.on_error == "report"
    text = render_text(result)
    assert text.index("heap-buffer-overflow") < text.index("detected memory leaks")
    heap.free(p)


def test_exit_check_runs_in_report_mode_even_for_raise_heaps() -> None:
    h = memguard.GuardedHeap(on_error="raise")
    try:
        overflow(h)
        result = build_report(h, Options())  # does not raise
        assert result.reports[0].kind == "heap-buffer-overflow" and h.on_error == "raise"
    finally:
        h.close(check=False)


def test_suppressed_are_listed_not_dropped(heap: memguard.GuardedHeap) -> None:
    for _ in range(2):
        leak_small(heap)
    leak_big(heap)
    result = build_report(heap, Options(), Suppressions.parse("leak:leak_small\n", "s.txt"))
    assert [g.size for g in result.leaks] == [100]
    assert [s.item.size for s in result.suppressed_leaks] == [16]
    text = render_text(result)
    assert "Suppressions used:" in text and "      2         16 leak:leak_small" in text
    # everything suppressed: not a failure, but still listed (unless print_suppressions=0)
    only_small = build_report(heap, Options(), Suppressions.parse("leak:leak_*\n"))
    assert not only_small.found and "Suppressions used:" in render_text(only_small)
    assert render_text(build_report(heap, Options(print_suppressions=False), Suppressions.parse("leak:leak_*\n"))) == ""


def test_suppressions_option_is_read(heap: memguard.GuardedHeap, tmp_path: Path) -> None:
    supp = tmp_path / "supp.txt"
    supp.write_text("overflow:overflow\n")
    overflow(heap)
    result = build_report(heap, Options(suppressions=str(supp), leak_check=False))
    assert not result.reports and result.suppressed_reports[0].rule.filename == str(supp)


def test_only_keeps_matching_findings(heap: memguard.GuardedHeap) -> None:
    leak_small(heap)
    leak_big(heap)
    result = build_report(heap, Options(only=("leak_small",)))
    assert [g.size for g in result.leaks] == [8] and [g.size for g in result.out_of_scope_leaks] == [100]
    assert "1 finding(s) (100 leaked byte(s)) outside only=leak_small not shown" in render_text(result)
    nothing = build_report(heap, Options(only=("nowhere*",)))
    assert not nothing.found and render_text(nothing) == ""


def test_closed_heap_does_not_crash() -> None:
    h = memguard.GuardedHeap(on_error="report")
    overflow(h)
    h.close()  # records the overflow
    result = build_report(h, Options())
    assert result.heap_closed and result.stats is None and result.leaks == ()
    assert [r.kind for r in result.reports] == ["heap-buffer-overflow"]


def test_json_schema_round_trip(heap: memguard.GuardedHeap) -> None:
    overflow(heap)
    leak_small(heap)
    leak_big(heap)
    result = build_report(
        heap, Options(only=("leak_*", "overflow")), Suppressions.parse("leak:leak_big\n"), program_status=3, argv=["prog", "x"]
    )
    doc = json.loads(render_json(result))
    assert doc["schema"] == "memguard.exit-report" and doc["schema_version"] == 2
    assert doc["memguard_version"] == memguard.__version__ and doc["python_version"].count(".") == 2
    assert doc["argv"] == ["prog", "x"] and doc["program_status"] == 3 and doc["found"] is True
    assert doc["options"]["only"] == ["leak_*", "overflow"] and doc["options"]["exitcode"] == 23
    assert doc["stats"]["total_allocs"] == 3
    assert [r["kind"] for r in doc["reports"]] == ["heap-buffer-overflow"]
    assert doc["leak_summary"] == {"total_bytes": 12, "total_blocks": 2}
    assert doc["suppression_counts"] == [{"rule": "leak:leak_big", "file": "<string>", "line": 1, "count": 1, "bytes": 100}]
    again = ExitReport.from_dict(doc)
    assert again == result
    assert render_text(again) == render_text(result)


@pytest.mark.parametrize(
    "doc, fragment",
    [
        ({"schema": "other"}, "not a memguard exit report"),
        ({"schema": "memguard.exit-report", "schema_version": 99}, "schema_version 99 is not supported"),
        ({"schema": "memguard.exit-report", "schema_version": 1, "leaks": [{"size": "x"}]}, "malformed"),
    ],
)
def test_from_dict_rejects_bad_documents(doc: dict[str, object], fragment: str) -> None:
    with pytest.raises(ReportFileError, match=fragment):
        ExitReport.from_dict(doc)


def test_write_atomic_replaces_whole_file_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.1"
    exitreport.write_atomic(target, "first\n")
    exitreport.write_atomic(target, "second\n")
    assert target.read_text() == "second\n" and os.listdir(tmp_path) == ["report.1"]

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        exitreport.write_atomic(target, "third\n")
    assert target.read_text() == "second\n" and os.listdir(tmp_path) == ["report.1"]


def test_emit_to_log_path(heap: memguard.GuardedHeap, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = tmp_path / "mg"
    clean = build_report(heap, Options(log_path=str(prefix)))
    assert exitreport.emit(clean) is None and os.listdir(tmp_path) == []  # text: nothing to say, no file
    as_json = build_report(heap, Options(log_path=str(prefix), report_format="json"))
    written = exitreport.emit(as_json)
    assert written == f"{prefix}.{os.getpid()}" and json.loads(Path(written).read_text())["found"] is False
    leak_small(heap)
    text = build_report(heap, Options(log_path=str(prefix)))
    assert "Direct leak of 8 byte(s)" in Path(exitreport.emit(text) or "").read_text()
    assert capsys.readouterr().err == ""
    missing = build_report(heap, Options(log_path=str(tmp_path / "no" / "dir")))
    assert exitreport.emit(missing) is None
    err = capsys.readouterr().err
    assert "cannot write the report" in err and "Direct leak of 8 byte(s)" in err


def test_emit_to_stdout(heap: memguard.GuardedHeap, capsys: pytest.CaptureFixture[str]) -> None:
    leak_small(heap)
    exitreport.emit(build_report(heap, Options(log_path="stdout")))
    out = capsys.readouterr()
    assert "Direct leak" in out.out and out.err == ""


def test_dump_never_raises(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(memguard.GuardedHeap):
        def check(self, since: object = None) -> list[memguard.Report]:
            raise RuntimeError("plugin exploded")

    broken = Broken()
    assert exitreport.dump(broken, Options()) is None
    assert broken.on_error == "raise"  # restored after the failed dump
    assert "could not produce the exit report: RuntimeError: plugin exploded" in capsys.readouterr().err
    assert exitreport.dump(None, Options()) is None


def test_exit_status_rules() -> None:
    found = ExitReport(leaks=(memguard.LeakGroup((), 8, 1),))
    clean = ExitReport()
    suppressed_only = ExitReport(suppressed_leaks=())
    assert exit_status(0, clean) == 0
    assert exit_status(3, clean) == 3
    assert exit_status(0, found) == 23
    assert exit_status(3, found) == 23
    assert exit_status(0, found, Options(exitcode=1)) == 1
    assert exit_status(4, found, Options(exitcode=0)) == 4  # exitcode=0 keeps the program's
    assert exit_status(5, None) == 5
    assert exit_status(0, suppressed_only) == 0


def test_trim_stack_drops_launcher_and_framework_frames() -> None:
    from memguard.stacks import Frame

    user = Frame("/app/x.py", 1, "f")
    runpy = Frame("<frozen runpy>", 88, "_run_code")
    importer = Frame("<frozen importlib._bootstrap>", 241, "_call_with_frames_removed")
    runner = Frame(os.path.join(os.path.dirname(pytest.__file__), "__init__.py"), 5, "main")
    mine = Frame(os.path.join(os.path.dirname(memguard.__file__), "cli.py"), 9, "main")
    assert exitreport.drop_launcher_frames((user, runpy, mine)) == (user,)
    assert exitreport.drop_launcher_frames((runpy, user)) == (user,)
    assert exitreport.drop_launcher_frames((user, importer, user, runner)) == (user, user)
    assert exitreport.drop_launcher_frames((importer,)) == (importer,)  # nothing else: kept whole
    assert exitreport.drop_launcher_frames((mine,)) == (mine,)


def test_render_text_ends_with_newline(heap: memguard.GuardedHeap) -> None:
    leak_small(heap)
    text = render_text(build_report(heap, Options()))
    assert text.endswith(".\n") and io.StringIO(text).readline().startswith("====")
