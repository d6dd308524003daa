"""memguard.findings: the thread label, the bad span and the memory window of the heap's reports."""

from __future__ import annotations

import ctypes
import threading

import pytest

import memguard
from memguard.findings import WINDOW, bad_span, memory_window, thread_label


def test_thread_label_names_the_current_or_given_thread():
    me = threading.current_thread()
    assert thread_label() == f"{me.name} (T{me.ident})"
    seen: list[str] = []
    t = threading.Thread(target=lambda: seen.append(thread_label()), name="worker-7")
    t.start()
    t.join()
    assert seen == [f"worker-7 (T{t.ident})"]
    assert thread_label(t) == seen[0]


@pytest.mark.parametrize(
    ("found", "expected", "span"),
    [
        (b"abcd", b"abcd", None),
        (b"", b"", None),
        (b"xbcd", b"abcd", (0, 0)),
        (b"abcx", b"abcd", (3, 3)),
        (b"aXcY", b"abcd", (1, 3)),
        (b"\xdd" * 5 + b"\x00" + b"\xdd" * 10, b"\xdd" * 16, (5, 5)),
        (b"ab", b"abcd", (2, 3)),  # the longer one's extra bytes differ
        (b"xbcdef", b"abcd", (0, 5)),
    ],
)
def test_bad_span_is_the_first_and_last_differing_byte(found, expected, span):
    assert bad_span(found, expected) == span


def test_bad_span_of_a_megabyte_matches_a_byte_by_byte_scan():
    expected = b"\xdd" * (1 << 20)
    found = bytearray(expected)
    found[12345] = 0
    found[999_999] = 0xDC
    assert bad_span(bytes(found), expected) == (12345, 999_999)


def test_memory_window_is_aligned_around_the_bad_address_and_clipped():
    buf = bytes(range(256))
    view = memoryview(buf)
    start = 0x1000  # view[0] is at address 0x1000
    data, at = memory_window(view, start, start, start + 256, start + 100)
    assert at == start + 64 and data == buf[64:128] and len(data) == WINDOW
    # clipped to the owned span on either side
    data, at = memory_window(view, start, start + 16, start + 40, start + 20)
    assert (at, data) == (start + 16, buf[16:40])
    data, at = memory_window(view, start, start, start + 256, start + 250)
    assert (at, data) == (start + 208, buf[208:256])
    # a bad address past the owned span shows nothing rather than foreign bytes
    assert memory_window(view, start, start, start + 40, start + 200)[0] == b""


def test_heap_reports_show_the_window_and_span_of_the_block():
    heap = memguard.GuardedHeap(on_error="report")
    p = heap.malloc(40)
    ctypes.memset(p + 41, 0x00, 3)  # 3 bytes, one past the end
    (report,) = heap.check()
    assert (report.kind, report.offset, report.count) == ("heap-buffer-overflow", 41, 3)
    assert report.found == b"\x00\x00\x00"
    assert report.memory_start == (p + 41 - 32) & ~15
    assert len(report.memory) == WINDOW
    heap.close()
