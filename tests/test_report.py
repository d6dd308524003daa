"""Report: ASan-style text, hexdump brackets, to_dict/from_dict, the exception mapping."""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys

import pytest

import memguard
from memguard.report import hexdump

HERE = __file__


def _line() -> int:
    return sys._getframe(1).f_lineno




def _overflow(heap):
    p = heap.malloc(10); line = _line()
    ctypes.memset(p + 10, 0x41, 2)
    (r,) = heap.check()
    return p, line, r


def test_overflow_report_text(heap):
    p, line, r = _overflow(heap)
    text = str(r)
    lines = text.splitlines()
    assert lines[0] == "=" * 65
    assert lines[1] == f"=={os.getpid()}==ERROR: memguard: heap-buffer-overflow on address 0x{p + 10:x}"
    assert f"0x{p + 10:x} is located 0 bytes to the right of 10-byte region [0x{p:x},0x{p + 10:x})" in lines
    assert "allocated (allocation #1) here:" in lines
    i = lines.index("allocated (allocation #1) here:")
    assert lines[i + 1] == f"    #0 {HERE}:{line} in _overflow"
    assert re.match(rf"    #1 {re.escape(HERE)}:\d+ in test_overflow_report_text$", lines[i + 2])
    assert any(l.startswith("detected by thread MainThread (T") for l in lines)
    assert "freed here:" not in text
    assert f"expected: {r.expected.hex(' ')}" in lines
    assert "found:    41 41" in lines
    assert lines[-1] == f"SUMMARY: memguard: heap-buffer-overflow {HERE}:{line} in _overflow"


def test_hexdump_brackets_the_bad_bytes(heap):
    p, _, r = _overflow(heap)
    text = str(r)
    assert f"Memory around 0x{p + 10:x} (bad bytes in brackets):" in text
    dump = [l for l in text.splitlines() if l.startswith("  0x")]
    assert dump
    cells_only = [l.split("  |")[0] for l in dump]  # the ASCII column may show '[' itself
    assert sum(l.count("[") for l in cells_only) == 2  # exactly the 2 bad bytes
    assert "[41][41]" in text
    row = next(l for l in dump if "[41]" in l)
    start = int(row.split(":")[0], 16)
    cells = re.findall(r"\[..\]| .. ", row.split(":", 1)[1].split("  |")[0])
    assert len(cells) == 16
    bad = [i for i, c in enumerate(cells) if c.startswith("[")]
    assert [start + i for i in bad] == [p + 10, p + 11]
    # the user bytes before them are the 0xCD fill
    assert cells[bad[0] - 1] == " cd "
    # the memory is the block's own slot and the marked range is right
    assert r.memory_start <= p + 10 < r.memory_start + len(r.memory)
    assert r.memory[p + 10 - r.memory_start : p + 12 - r.memory_start] == b"AA"


def test_hexdump_function():
    out = hexdump(b"ABC\x00" * 5, 0x1000, range(0x1002, 0x1004))
    rows = out.splitlines()
    assert len(rows) == 2
    assert rows[0].startswith("  0x000000001000:")
    assert rows[1].startswith("  0x000000001010:")
    assert " 41  42 [43][00] 41 " in rows[0]
    assert rows[0].endswith("|ABC.ABC.ABC.ABC.|")
    assert "[" not in rows[1]
    assert "[" not in hexdump(b"xyz", 0)


def test_underflow_report_text(heap):
    p = heap.malloc(8)
    ctypes.memset(p - 3, 0x41, 1)
    (r,) = heap.check()
    text = str(r)
    assert f"ERROR: memguard: heap-buffer-underflow on address 0x{p - 3:x}" in text
    assert f"0x{p - 3:x} is located 3 bytes to the left of 8-byte region [0x{p:x},0x{p + 8:x})" in text
    assert r.bad_address == p - 3
    assert "[41]" in text


def test_use_after_free_report_text(heap):
    p = heap.malloc(32); aline = _line()
    heap.free(p); fline = _line()
    ctypes.memset(p + 4, 0x41, 1)
    (r,) = heap.check()
    text = str(r)
    assert f"ERROR: memguard: heap-use-after-free on address 0x{p + 4:x}" in text
    assert f"0x{p + 4:x} is located 4 bytes inside of 32-byte region" in text
    lines = text.splitlines()
    i = lines.index("freed here:")
    assert lines[i + 1] == f"    #0 {HERE}:{fline} in test_use_after_free_report_text"
    j = lines.index("allocated (allocation #1) here:")
    assert lines[j + 1] == f"    #0 {HERE}:{aline} in test_use_after_free_report_text"
    assert j < i
    assert "expected: dd" in text
    assert "SUMMARY: memguard: heap-use-after-free" in text


def test_double_free_report_text(heap):
    p = heap.malloc(16)
    heap.free(p); fline = _line()
    heap.free(p); dline = _line()
    (r,) = heap.reports
    text = str(r)
    assert f"ERROR: memguard: double-free on address 0x{p:x}" in text
    assert f"attempting free on 0x{p:x}" in text
    lines = text.splitlines()
    i = lines.index("previously freed here:")
    assert lines[i + 1] == f"    #0 {HERE}:{fline} in test_double_free_report_text"
    assert f"    #0 {HERE}:{dline} in test_double_free_report_text" in lines
    assert "SUMMARY: memguard: double-free" in text


def test_bad_free_report_text(heap):
    p = heap.malloc(32)
    heap.free(p + 4)
    heap.free(12345)
    inner, wild = heap.reports
    assert "attempting free on address which was not malloc()-ed" in str(inner)
    assert f"0x{p + 4:x} is located 4 bytes inside of 32-byte region [0x{p:x},0x{p + 32:x})" in str(inner)
    assert "ERROR: memguard: bad-free on address 0x3039" in str(wild)
    assert "allocated" not in str(wild)
    assert "region" not in str(wild)
    assert str(wild).splitlines()[-1].startswith("SUMMARY: memguard: bad-free ")


def test_headline_and_error_message(heap):
    _, _, r = _overflow(heap)
    assert r.headline() == f"heap-buffer-overflow: {r.message}"
    assert "2 byte(s)" in r.message
    err = memguard.kinds.error_for(r)
    assert isinstance(err, memguard.HeapCorruptionError)
    assert str(err) == r.headline()
    assert err.report is r and err.kind == r.kind
    assert memguard.Report(kind="bad-free", address=16).headline() == "bad-free on address 0x10"


@pytest.mark.parametrize(
    "kind,cls",
    [
        ("heap-buffer-overflow", memguard.HeapCorruptionError),
        ("heap-buffer-underflow", memguard.HeapCorruptionError),
        ("heap-use-after-free", memguard.HeapCorruptionError),
        ("double-free", memguard.DoubleFreeError),
        ("bad-free", memguard.InvalidFreeError),
        ("memory-leak", memguard.LeakError),
    ],
)
def test_error_classes_by_kind(kind, cls):
    err = memguard.kinds.error_for(memguard.Report(kind=kind))
    assert type(err) is cls
    assert isinstance(err, memguard.MemguardError)


def test_to_dict_is_json_ready_and_round_trips(heap):
    p = heap.malloc(24)
    heap.free(p)
    ctypes.memset(p + 1, 0x41, 3)
    (uaf,) = heap.check()
    heap.free(p)
    heap.free(p + 8)  # interior of a quarantined block
    _, _, ovf = _overflow(heap)
    leak = memguard.LeakGroup(stack=ovf.alloc_stack, size=10, count=1, addresses=(ovf.address,)).report()
    for r in heap.reports + [leak]:
        d = r.to_dict()
        text = json.dumps(d)
        back = memguard.Report.from_dict(json.loads(text))
        assert back == r
        assert back.extra == r.extra
        assert str(back) == str(r)
        assert back.to_dict() == d
    d = uaf.to_dict()
    assert d["kind"] == "heap-use-after-free"
    assert d["found"] == "414141"
    assert d["expected"] == "dddddd"
    assert d["offset"] == 1
    assert d["free_stack"][0] == {"filename": HERE, "lineno": d["free_stack"][0]["lineno"], "name": "test_to_dict_is_json_ready_and_round_trips"}
    assert isinstance(d["memory"], str)


def test_from_dict_with_extra_and_defaults():
    r = memguard.Report(kind="refcount-underflow", address=5, extra={"object": "x", "n": [1, 2]})
    back = memguard.Report.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.extra == {"object": "x", "n": [1, 2]}
    minimal = memguard.Report.from_dict({"kind": "bad-free"})
    assert minimal == memguard.Report(kind="bad-free")


def test_report_is_immutable(heap):
    _, _, r = _overflow(heap)
    with pytest.raises(AttributeError):
        r.kind = "x"  # type: ignore[misc]


def test_location_falls_back_to_detection_stack():
    f = memguard.Frame("a.py", 3, "f")
    assert memguard.Report(kind="bad-free", stack=(f,)).location() == "a.py:3 in f"
    assert memguard.Report(kind="bad-free").location() == "<unknown>"
    assert str(f) == "a.py:3 in f"
    assert f.to_dict() == {"filename": "a.py", "lineno": 3, "name": "f"}


def test_region_wording_past_the_end_of_a_freed_block(heap):
    """An offset past the end is "to the right of", whatever the kind (ASan wording)."""
    p = heap.malloc(5)
    heap.free(p)
    ctypes.memset(p + 10, 0x41, 1)  # the freed block's padding
    (r,) = heap.check()
    assert (r.kind, r.offset) == ("heap-use-after-free", 10)
    assert f"0x{p + 10:x} is located 5 bytes to the right of 5-byte region [0x{p:x},0x{p + 5:x})" in str(r)
    assert "inside of" not in str(r)


def test_region_wording_of_a_bad_free_past_the_end(heap):
    p = heap.malloc(5)
    heap.free(p + 8)  # inside the slot, past the 5 user bytes
    (r,) = heap.reports
    assert (r.kind, r.offset) == ("bad-free", 8)
    assert "3 bytes to the right of 5-byte region" in r.message
    assert f"0x{p + 8:x} is located 3 bytes to the right of 5-byte region [0x{p:x},0x{p + 5:x})" in str(r)
    assert "inside of" not in str(r)
