"""Suppressions files and the only= allow-list."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import memguard
from memguard import Frame, LeakGroup, Report
from memguard.reporting.suppressions import Only, Suppressions, SuppressionsError, frame_candidates, module_of

SITE = "/venv/lib/python3.11/site-packages"
VENDOR = Frame(f"{SITE}/vendorlib/cache.py", 10, "Cache.fill")
MINE = Frame("/home/me/app/main.py", 3, "main")
HELPER = Frame("/home/me/app/helpers.py", 7, "make_buffer")


def leak(*frames: Frame, size: int = 16, count: int = 1) -> LeakGroup:
    return LeakGroup(tuple(frames), size, count, tuple(range(1, count + 1)))


def test_parse_rules_comments_and_kinds() -> None:
    sup = Suppressions.parse(
        "# header\n\nleak:vendor_*   # trailing comment\n  overflow:helpers.py\n"
        "double-free:*/legacy/*\nheap-use-after-free:old\ninvalid-free:x\n",
        "s.txt",
    )
    assert [(r.kind, r.pattern, r.lineno) for r in sup.rules] == [
        ("memory-leak", "vendor_*", 3),
        ("heap-buffer-overflow", "helpers.py", 4),
        ("double-free", "*/legacy/*", 5),
        ("heap-use-after-free", "old", 6),
        ("bad-free", "x", 7),
    ]
    assert sup.rules[0].text == "leak:vendor_*" and sup.rules[0].filename == "s.txt"


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("vendor_cache", "expected <kind>:<pattern>"),
        ("laek:foo", "unknown kind 'laek'"),
        ("leak:", "empty pattern after 'leak:'"),
        ("leak:   # nothing", "empty pattern"),
    ],
)
def test_malformed_line_names_file_line_and_expectation(line: str, fragment: str) -> None:
    with pytest.raises(SuppressionsError) as info:
        Suppressions.parse(f"# ok\nleak:fine\n{line}\n", "rules.supp")
    message = str(info.value)
    assert message.startswith("rules.supp:3: ") and fragment in message
    assert "leak:" in message  # says what a rule looks like
    assert info.value.filename == "rules.supp" and info.value.lineno == 3


def test_load_reads_a_file_and_reports_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "supp.txt"
    path.write_text("leak:make_buffer\n")
    sup = Suppressions.load(path)
    assert sup.rules[0].filename == str(path)
    with pytest.raises(SuppressionsError, match="cannot read suppressions file"):
        Suppressions.load(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text("leak:a\nnonsense\n")
    with pytest.raises(SuppressionsError, match=r"bad\.txt:2: expected <kind>:<pattern>"):
        Suppressions.load(tmp_path / "bad.txt")


def test_leak_rules_match_any_frame_by_function_file_or_module() -> None:
    group = leak(HELPER, VENDOR, MINE)  # the vendor frame is in the middle of the stack
    for pattern in ("Cache.fill", "fill", "Cache.*", f"{SITE}/vendorlib/*", "cache.py", "vendorlib", "vendorlib.cache", "vendor*"):
        assert Suppressions.parse(f"leak:{pattern}").is_suppressed(group), pattern
    for pattern in ("nomatch", "Cache", "vendorlib.other", "*.c"):
        assert not Suppressions.parse(f"leak:{pattern}").is_suppressed(group), pattern


def test_rules_only_apply_to_their_kind_and_use_every_stack() -> None:
    overflow = Report(kind="heap-buffer-overflow", alloc_stack=(MINE,), stack=(HELPER,))
    uaf = Report(kind="heap-use-after-free", alloc_stack=(MINE,), free_stack=(VENDOR,))
    sup = Suppressions.parse("overflow:make_buffer\nuse-after-free:fill\n")
    assert sup.match(overflow).text == "overflow:make_buffer"  # detection stack
    assert sup.match(uaf).text == "use-after-free:fill"  # free stack
    assert not sup.is_suppressed(Report(kind="double-free", alloc_stack=(HELPER,), free_stack=(VENDOR,)))
    assert not Suppressions.parse("leak:make_buffer").is_suppressed(overflow)
    assert not sup.is_suppressed(leak(HELPER))  # overflow: rules never touch leaks


def test_apply_keeps_order_and_lists_suppressed() -> None:
    a, b, c = leak(MINE, size=30), leak(VENDOR, size=20), leak(HELPER, size=10)
    kept, suppressed = Suppressions.parse("leak:vendorlib\n").apply([a, b, c])
    assert kept == [a, c]
    assert [(s.item, s.rule.text) for s in suppressed] == [(b, "leak:vendorlib")]
    assert suppressed[0].to_dict()["rule"] == "leak:vendorlib"


def test_only_keeps_findings_with_a_matching_frame() -> None:
    a, b = leak(VENDOR, MINE), leak(VENDOR)
    report = Report(kind="double-free", stack=(HELPER,))
    only = Only(("*/app/main.py", "helpers.py"))
    assert only.apply([a, b]) == ([a], [b])
    assert only.matches(report)
    assert Only().apply([a, b]) == ([a, b], [])  # empty allow-list keeps everything
    assert not Only()
    with pytest.raises(ValueError):
        Only(("",))


def test_module_of_uses_sys_modules_then_guesses() -> None:
    assert module_of(os.__file__) == "os"
    assert module_of(memguard.reporting.suppressions.__file__) == "memguard.reporting.suppressions"
    assert module_of(f"{SITE}/pkg/sub/__init__.py") == "pkg.sub"
    assert module_of("/nowhere/tool.py") == "tool"
    assert module_of("<string>") == ""
    assert "memguard" in frame_candidates(Frame(memguard.reporting.suppressions.__file__, 1, "f"))
