"""Guard pages: a bad access faults, becomes a finding naming its line, and the program runs on.

Every access that faults runs in a subprocess (a mistake there must not kill pytest); each
script ends by printing its findings as JSON and ``done``, which shows it survived.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import threading
import zlib

import pytest

import memguard
from memguard.native import mman

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.skipif(not mman.GUARD_PAGES_SUPPORTED, reason="guard pages need Linux x86-64 or aarch64")

X86 = mman._X86_64

PRELUDE = """\
import ctypes, json, sys, faulthandler
import memguard
faulthandler.enable()
def dump(heap):
    heap.check()
    print(json.dumps([
        {"kind": r.kind, "line": r.stack[0].lineno if r.stack else 0, "file": r.stack[0].filename if r.stack else "",
         "access": r.extra.get("access"), "offset": r.offset, "size": r.size, "serial": r.serial,
         "alloc_line": r.alloc_stack[0].lineno if r.alloc_stack else 0,
         "free_line": r.free_stack[0].lineno if r.free_stack else 0, "message": r.message, "thread": r.thread}
        for r in heap.reports
    ]))
    print("done")
"""


def run(body: str, *, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run PRELUDE + body in a fresh interpreter (lines of body are numbered from 1 after the prelude)."""
    script = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.rstrip().endswith("done"), proc.stdout + proc.stderr
    return proc


def findings(proc: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return json.loads(proc.stdout.rstrip().splitlines()[-2])  # type: ignore[no-any-return]


def line_of(body: str, marker: str) -> int:
    """The line number in the ``-c`` script of the body line containing ``marker``."""
    lines = (PRELUDE + textwrap.dedent(body)).splitlines()
    return next(i for i, line in enumerate(lines, 1) if marker in line)


ACCESSES = {
    # name: (statement at the bad address `a`, expected access, GIL held during the access)
    "memset": ("ctypes.memset(a, 0x41, 1)", "write"),
    "memmove-read": ("buf = ctypes.create_string_buffer(1); ctypes.memmove(buf, a, 1)", "read"),
    "string_at": ("ctypes.string_at(a, 1)", "read"),
    "c_char-read": ("ctypes.c_char.from_address(a).value", "read"),
    "c_char-write": ("ctypes.c_char.from_address(a).value = b'x'", "write"),
    "memoryview-write": ("memoryview((ctypes.c_ubyte * 1).from_address(a)).cast('B')[0] = 7", "write"),
}


@pytest.mark.parametrize("access", sorted(ACCESSES))
@pytest.mark.parametrize("kind", ["overflow", "use-after-free", "underflow"])
def test_each_kind_through_each_access_names_the_line_and_survives(kind: str, access: str) -> None:
    stmt, rw = ACCESSES[access]
    mode = "underflow" if kind == "underflow" else "all"
    setup = {
        "overflow": "p = heap.malloc(64)  # ALLOC\na = p + 64",
        "underflow": "p = heap.malloc(64)  # ALLOC\na = p - 1",
        "use-after-free": "p = heap.malloc(64)  # ALLOC\nheap.free(p)  # FREE\na = p + 10",
    }[kind]
    body = f"""\
heap = memguard.GuardedHeap(on_error="report", guard={mode!r})
{setup}
{stmt}  # ACCESS
after = heap.malloc(8)
heap.free(after)
dump(heap)
"""
    found = findings(run(body))
    assert len(found) == 1, found
    (r,) = found
    assert r["kind"] == {"overflow": "heap-buffer-overflow", "underflow": "heap-buffer-underflow",
                         "use-after-free": "heap-use-after-free"}[kind]
    assert r["line"] == line_of(body, "# ACCESS") and r["file"] == "<string>"
    assert r["alloc_line"] == line_of(body, "# ALLOC")
    assert r["serial"] == 1 and r["size"] == 64
    assert r["offset"] == {"overflow": 64, "underflow": -1, "use-after-free": 10}[kind]
    if kind == "use-after-free":
        assert r["free_line"] == line_of(body, "# FREE")
    if X86:
        assert r["access"] == rw
        assert str(r["message"]).startswith(rw.upper())
    assert "caught at the access by a guard page" in str(r["message"])


def test_a_fault_outside_guard_pages_still_crashes_with_faulthandlers_traceback() -> None:
    body = """\
heap = memguard.GuardedHeap(on_error="report", guard="all")
p = heap.malloc(16)
ctypes.string_at(8, 1)  # CRASH
print("not reached")
"""
    proc = run(body, check=False)
    assert proc.returncode != 0
    assert "not reached" not in proc.stdout
    assert "Fatal Python error: Segmentation fault" in proc.stderr
    assert f'File "<string>", line {line_of(body, "# CRASH")}' in proc.stderr


def test_the_finding_follows_on_error_raise_at_the_next_memguard_call() -> None:
    body = """\
heap = memguard.GuardedHeap(guard="all")
p = heap.malloc(32)
ctypes.memset(p + 32, 0, 1)  # ACCESS
print("went on")
try:
    heap.malloc(8)
except memguard.HeapCorruptionError as exc:
    print("raised", exc.kind, exc.report.stack[0].lineno)
heap.close(check=False)
print("done")
"""
    proc = subprocess.run([sys.executable, "-c", PRELUDE + body], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "went on", f"raised heap-buffer-overflow {line_of(body, '# ACCESS')}", "done",
    ]


def test_threads_faulting_at_once_each_get_their_finding() -> None:
    body = """\
import threading
heap = memguard.GuardedHeap(on_error="report", guard="all")
blocks = [heap.malloc(48) for _ in range(8)]
barrier = threading.Barrier(8)
def work(i):
    barrier.wait()
    if i % 2:
        ctypes.memset(blocks[i] + 48, 1, 1)  # WRITE
    else:
        ctypes.string_at(blocks[i] + 48, 1)  # READ
threads = [threading.Thread(target=work, args=(i,), name=f"w{i}") for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
dump(heap)
"""
    found = findings(run(body))
    assert len(found) == 8
    assert {str(r["thread"]).split()[0] for r in found} == {f"w{i}" for i in range(8)}
    lines = {r["line"] for r in found}
    assert lines == {line_of(body, "# WRITE"), line_of(body, "# READ")}


def test_fork_with_guarded_blocks_live() -> None:
    body = """\
import os
heap = memguard.GuardedHeap(on_error="report", guard="all")
keep = heap.malloc(64)
gone = heap.malloc(64)
heap.free(gone)
early = heap.malloc(16)
ctypes.memset(early + 16, 1, 1)  # PARENT: recorded, not reported yet when the child starts
pid = os.fork()
if pid == 0:
    ctypes.memset(keep + 64, 1, 1)  # CHILD
    ctypes.string_at(gone, 1)
    heap.check()
    kinds = sorted(r.kind for r in heap.reports)
    os._exit(0 if kinds == ["heap-buffer-overflow", "heap-use-after-free"] else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
ctypes.memset(keep, 0, 64)
heap.free(keep)
heap.free(early)
dump(heap)
"""
    proc = run(body)
    assert "child 0" in proc.stdout
    assert [(r["kind"], r["line"]) for r in findings(proc)] == [("heap-buffer-overflow", line_of(body, "# PARENT"))]


def test_faults_in_several_heaps_go_to_their_own_heap() -> None:
    body = """\
a = memguard.GuardedHeap(on_error="report", guard="all", name="a")
b = memguard.GuardedHeap(on_error="report", guard="underflow", name="b")
pa, pb = a.malloc(16), b.malloc(16)
ctypes.memset(pa + 16, 0, 1)
ctypes.memset(pb - 1, 0, 1)
a.check()
print(json.dumps([[r.kind for r in a.reports], [r.kind for r in b.check()]]))
print("done")
"""
    proc = run(body)
    assert json.loads(proc.stdout.splitlines()[-2]) == [["heap-buffer-overflow"], ["heap-buffer-underflow"]]


# --------------------------------------------------------------------------- in process (no fault)
@pytest.mark.parametrize(
    "options",
    [{"guard": "all"}, {"guard_sample": 3}, {"guard": "underflow", "guard_sample": 2, "check_every": 97}],
    ids=["all", "sample", "underflow-check_every"],
)
def test_a_clean_guard_all_workload_has_zero_findings(options: dict[str, object]) -> None:
    heap = memguard.GuardedHeap(on_error="raise", guard_max=512, **options)  # type: ignore[arg-type]
    from memguard.clibs import libz

    errors: list[BaseException] = []
    done = threading.Event()

    def checker() -> None:
        try:
            while not done.is_set():
                assert heap.check() == []
                heap.leaks()
                heap.stats()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def work(seed: int) -> None:
        try:
            live: list[tuple[int, int]] = []
            for i in range(750):
                n = (seed * 31 + i * 17) % 300
                op = i % 5
                if op == 0 and live:
                    p, size = live.pop()
                    heap.free(p)
                elif op == 1 and live:
                    p, size = live.pop(0)
                    q = heap.realloc(p, size + 20)
                    ctypes.memset(q, 1, size + 20)
                    live.append((q, size + 20))
                elif op == 2:
                    p = heap.calloc(2, n // 2 + 1)
                    assert ctypes.string_at(p, 2 * (n // 2 + 1)) == bytes(2 * (n // 2 + 1))
                    live.append((p, 2 * (n // 2 + 1)))
                else:
                    p = heap.malloc(n)
                    ctypes.memset(p, 2, n)
                    assert ctypes.string_at(p, n) == b"\x02" * n
                    live.append((p, n))
            for p, _ in live:
                heap.free(p)
            data = bytes(range(256)) * 64
            packed = libz.deflate(data, heap)
            assert libz.inflate(packed, heap) == data
            assert zlib.decompress(packed) == data
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    watcher = threading.Thread(target=checker)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert errors == []
    assert heap.check() == []
    assert heap.leaks() == []
    assert heap.reports == []
    s = heap.stats()
    assert s.live_blocks == 0 and s.live_bytes == 0 and s.total_allocs == s.total_frees
    heap.close()


def test_slack_canary_overflow_is_found_at_free() -> None:
    heap = memguard.GuardedHeap(on_error="report", guard="all")
    p = heap.malloc(10)  # 6 bytes of slack before the guard page
    ctypes.memset(p + 10, 0x41, 2)
    heap.free(p)
    (r,) = heap.reports
    assert r.kind == "heap-buffer-overflow" and r.offset == 10 and r.count == 2 and r.found == b"AA"
    assert "not at the access" in r.message
    heap.close()


def test_slack_canary_is_checked_and_repaired_by_check() -> None:
    heap = memguard.GuardedHeap(on_error="report", guard="all")
    p = heap.malloc(1)
    ctypes.memset(p + 3, 0x41, 1)
    assert [r.offset for r in heap.check()] == [3]
    assert heap.check() == []
    heap.free(p)
    assert len(heap.reports) == 1
    heap.close()


def test_double_free_and_free_after_close_of_a_guarded_block() -> None:
    heap = memguard.GuardedHeap(on_error="report", guard="all")
    p = heap.malloc(32)
    heap.free(p)
    heap.free(p)
    (r,) = heap.reports
    assert r.kind == "double-free" and r.serial == 1 and r.free_stack and r.alloc_stack
    q = heap.malloc(8)
    heap.close(check=False)
    with pytest.raises(memguard.HeapClosedError):
        heap.malloc(8)
    assert q


def test_guarded_blocks_in_stats_leaks_and_block() -> None:
    heap = memguard.GuardedHeap(on_error="report", guard="all")
    p = heap.malloc(100)
    info = heap.block(p)
    assert (info.size, info.state, info.serial) == (100, "live", 1)
    assert ctypes.string_at(p, 100) == b"\xcd" * 100
    assert [g.size for g in heap.leaks()] == [100]
    assert heap.allocated_bytes == 100
    s = heap.stats()
    assert (s.live_blocks, s.live_bytes, s.total_allocs) == (1, 100, 1)
    view = heap.view(p)
    assert len(view) == 100 and view.format == "B" and bytes(view[:2]) == b"\xcd\xcd"
    view[:2] = b"ok"
    assert ctypes.string_at(p, 2) == b"ok"
    del view
    heap.free(p)
    with pytest.raises(memguard.InvalidAddressError):
        heap.view(p)
    assert heap.block(p).state == "quarantined" and heap.block(p).free_stack
    assert heap.leaks() == []
    assert heap.stats().live_blocks == 0
    heap.close()


def test_guarded_blocks_in_leaks_since_a_mark_from_the_allocation_log() -> None:
    heap = memguard.GuardedHeap(on_error="report", guard_sample=2)
    mark = heap.mark()
    kept = [heap.malloc(24) for _ in range(8)]  # about half of them guarded
    for p in [heap.malloc(40) for _ in range(8)]:
        heap.free(p)
    assert heap._guard is not None and any(p in heap._guard.blocks for p in kept)
    (group,) = heap.leaks(since=mark)
    assert (group.count, group.size) == (8, 8 * 24)
    assert sorted(group.addresses) == sorted(kept)
    assert heap.check(since=mark) == []
    for p in kept:
        heap.free(p)
    assert heap.leaks(since=mark) == []
    heap.close()


def test_calloc_memalign_and_realloc_of_guarded_blocks() -> None:
    heap = memguard.GuardedHeap(on_error="raise", guard="all")
    z = heap.calloc(3, 5)
    assert ctypes.string_at(z, 15) == bytes(15)
    a = heap.memalign(256, 40)
    assert a % 256 == 0 and a in heap._guard.blocks  # type: ignore[union-attr]
    big = heap.memalign(1 << 16, 8)  # beyond a page: an ordinary block
    assert big % (1 << 16) == 0 and big not in heap._guard.blocks  # type: ignore[union-attr]
    ctypes.memmove(z, b"0123456789abcde", 15)
    r = heap.realloc(z, 40)
    assert ctypes.string_at(r, 15) == b"0123456789abcde"
    r2 = heap.realloc(r, 4)
    assert ctypes.string_at(r2, 4) == b"0123"
    assert heap.block(r).state == "quarantined"
    for q in (a, big, r2):
        heap.free(q)
    assert heap.realloc(0, 8)
    heap.close(check=False)


def test_realloc_of_an_ordinary_block_into_a_guarded_one_and_bad_reallocs() -> None:
    heap = memguard.GuardedHeap(on_error="report", guard_sample=1, guard_max=1)
    g = heap.malloc(8)  # guarded: the one guarded block allowed
    o = heap.malloc(8)  # over guard_max: ordinary
    assert g in heap._guard.blocks and o not in heap._guard.blocks  # type: ignore[union-attr]
    heap.free(g)
    ctypes.memmove(o, b"abcdefgh", 8)
    n = heap.realloc(o, 16)
    assert n in heap._guard.blocks and ctypes.string_at(n, 8) == b"abcdefgh"  # type: ignore[union-attr]
    assert heap.realloc(g, 8) == 0  # a freed guarded block
    assert heap.reports[-1].kind == "double-free"
    assert heap.realloc(12345, 8) == 0
    assert heap.reports[-1].kind == "bad-free"
    heap.close(check=False)


def test_guard_sample_guards_about_one_in_n() -> None:
    heap = memguard.GuardedHeap(on_error="raise", guard_sample=10)
    blocks = [heap.malloc(16) for _ in range(2000)]
    guarded = sum(p in heap._guard.blocks for p in blocks)  # type: ignore[union-attr]
    assert 100 <= guarded <= 400
    for p in blocks:
        heap.free(p)
    assert heap.check() == [] and heap.stats().live_blocks == 0
    heap.close()


def test_the_guard_quarantine_is_bounded() -> None:
    from memguard.heap.guardpages import QUARANTINE_BLOCKS

    heap = memguard.GuardedHeap(on_error="raise", guard="all")
    first = heap.malloc(8)
    heap.free(first)
    for _ in range(QUARANTINE_BLOCKS + 5):
        heap.free(heap.malloc(8))
    blocks = heap._guard.blocks  # type: ignore[union-attr]
    assert len(blocks) == QUARANTINE_BLOCKS
    assert 1 not in {b.serial for b in blocks.values()}  # the oldest went first (its pages unmapped)
    heap.close()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"guard": "everything"}, ValueError),
        ({"guard_sample": -1}, ValueError),
        ({"guard_sample": "3"}, TypeError),
        ({"guard_max": 1.5}, TypeError),
        ({"check_every": -2}, ValueError),
        ({"break_on_action": "gdb"}, ValueError),
    ],
)
def test_bad_guard_arguments_raise_clear_errors(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        memguard.GuardedHeap(**kwargs)  # type: ignore[arg-type]


def test_guard_options_raise_a_clear_error_where_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mman, "GUARD_PAGES_SUPPORTED", False)
    with pytest.raises(memguard.GuardPagesUnavailableError, match="Linux"):
        memguard.GuardedHeap(guard="all")


def test_the_options_and_memguard_options_keys() -> None:
    from memguard.options import Options

    opts = Options.resolve(env="guard=underflow:guard_sample=50:guard_max=10:check_every=7:break_on=3")
    kwargs = opts.heap_kwargs()
    assert {k: kwargs[k] for k in ("guard", "guard_sample", "guard_max", "check_every", "break_on")} == {
        "guard": "underflow", "guard_sample": 50, "guard_max": 10, "check_every": 7, "break_on": 3,
    }
    assert "guard" not in Options().heap_kwargs()
    heap = memguard.GuardedHeap(**Options.resolve(env="guard=all").heap_kwargs())
    p = heap.malloc(8)
    assert p in heap._guard.blocks  # type: ignore[union-attr]
    heap.free(p)
    heap.close()
    with pytest.raises(memguard.OptionsError, match="guard"):
        Options.resolve(env="guard=sometimes")


def test_memguard_options_guard_on_the_process_heap() -> None:
    body = """\
import os
heap = memguard.install()
p = memguard.malloc(32)
ctypes.memset(p + 32, 0, 1)  # ACCESS
memguard.free(p)
dump(heap)
"""
    found = findings(run(body, env={"MEMGUARD_OPTIONS": "guard=all:leak_check=0"}))
    assert [(r["kind"], r["line"]) for r in found] == [("heap-buffer-overflow", line_of(body, "# ACCESS"))]


# --------------------------------------------------------------------------- check_every, break_on
def test_check_every_reports_the_window_that_contains_the_corrupting_line() -> None:
    heap = memguard.GuardedHeap(on_error="report", check_every=2)
    a = heap.malloc(24)
    b = heap.malloc(24)  # operation 2: a check, clean
    c = heap.malloc(8)  # operation 3
    start = sys._getframe().f_lineno
    ctypes.memset(b + 24, 0x41, 1)  # the corrupting line
    heap.free(a)  # operation 4: a check finds it
    end = sys._getframe().f_lineno - 1
    (r,) = heap.reports
    assert r.kind == "heap-buffer-overflow" and r.serial == 2
    window = r.extra["check_window"]
    assert (window["from"]["operation"], window["to"]["operation"]) == (2, 4)
    assert (window["from"]["serial"], window["to"]["serial"]) == (2, 1)
    from_line = int(window["from"]["line"].split(":")[1].split()[0])
    to_line = int(window["to"]["line"].split(":")[1].split()[0])
    assert from_line < start + 1 < to_line == end
    assert "corrupted between operation #2 (malloc of allocation #2" in r.message
    assert "operation #4 (free of allocation #1" in r.message
    for p in (b, c):
        heap.free(p)
    assert len(heap.reports) == 1  # repaired: reported once
    heap.close()


def test_check_every_counts_every_kind_of_operation_and_raises_under_raise() -> None:
    heap = memguard.GuardedHeap(on_error="raise", check_every=3)
    a = heap.calloc(2, 8)
    b = heap.memalign(64, 16)
    ctypes.memset(a - 1, 0, 1)
    with pytest.raises(memguard.HeapCorruptionError) as info:
        heap.realloc(b, 32)
    assert info.value.kind == "heap-buffer-underflow"
    assert "check_every=3" in info.value.report.message
    # The new block the caller never got was freed again: only `a` is live.
    assert [g.count for g in heap.leaks()] == [1] and heap.stats().live_blocks == 1
    guarded = memguard.GuardedHeap(on_error="raise", check_every=2, guard="all")
    g = guarded.malloc(8)
    ctypes.memset(g + 8, 0, 1)  # into the slack: seen by the check
    with pytest.raises(memguard.HeapCorruptionError):
        guarded.malloc(8)
    assert guarded.stats().live_blocks == 1
    heap.close(check=False)
    guarded.close(check=False)


def test_break_on_raises_once_before_that_allocation() -> None:
    heap = memguard.GuardedHeap(on_error="raise", break_on=3)
    heap.malloc(8)
    heap.calloc(1, 8)
    line = sys._getframe().f_lineno + 2
    with pytest.raises(memguard.BreakOnAllocation) as info:
        heap.malloc(77)
    assert (info.value.serial, info.value.size, heap.serial) == (3, 77, 2)
    assert f"{__file__}:{line} in " in str(info.value)
    assert heap.malloc(5) and heap.serial == 3  # once only
    heap.close(check=False)


def test_break_on_the_serial_a_report_printed() -> None:
    heap = memguard.GuardedHeap(on_error="report")
    heap.malloc(8)
    leaked = heap.malloc(8)
    serial = heap.block(leaked).serial
    assert f"allocation #{serial}" in str(heap.leaks()[0]) or serial == 2
    again = memguard.GuardedHeap(on_error="report", break_on=serial, guard="all")
    again.malloc(8)
    with pytest.raises(memguard.BreakOnAllocation):
        again.malloc(8)
    heap.close(check=False)
    again.close(check=False)


def test_break_on_action_pdb_stops_in_the_callers_frame() -> None:
    body = """\
heap = memguard.GuardedHeap(break_on=2, break_on_action="pdb")
heap.malloc(1)
marker = "in the caller"
p = heap.malloc(2)  # BREAK
print("allocated", heap.serial)
print("done")
"""
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + body], input="p marker\nc\n", capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "break_on=2: allocation #2 (2 bytes)" in proc.stderr
    assert "(Pdb) 'in the caller'" in proc.stdout
    assert "allocated 2" in proc.stdout


def test_marker_arguments_configure_the_guarded_heap_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_g='''
import ctypes
import pytest


@pytest.mark.memguard(guard="all", guard_max=8)
def test_overflow(guarded_heap):
    p = guarded_heap.malloc(16)
    ctypes.memset(p + 16, 0, 1)  # THE ACCESS
    guarded_heap.free(p)


@pytest.mark.memguard(guard="underflow", check_every=5, break_on=0)
def test_clean(guarded_heap):
    for _ in range(20):
        guarded_heap.free(guarded_heap.malloc(8))

''', test_bad='''
import pytest


@pytest.mark.memguard(guard="sometimes")
def test_bad(guarded_heap):
    pass
''')
    result = pytester.runpytest_subprocess("test_g.py")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "heap-buffer-overflow" in out and "test_g.py:9" in out
    bad = pytester.runpytest_subprocess("test_bad.py")
    assert "bad value 'sometimes' for 'guard'" in bad.stdout.str() + bad.stderr.str()


def _helper_alloc(heap: memguard.GuardedHeap, n: int) -> int:
    return heap.malloc(n)


def test_stacks_through_the_wrapped_entry_points_are_the_users_at_the_asked_depth() -> None:
    for kwargs in ({"guard_sample": 1}, {"guard_sample": 10_000}, {"check_every": 1000}, {"guard": "all"}):
        heap = memguard.GuardedHeap(on_error="report", stack_depth=2, **kwargs)  # type: ignore[arg-type]
        blocks = []
        for _ in range(3):
            line = sys._getframe().f_lineno + 1
            blocks.append(_helper_alloc(heap, 8))
        line2 = sys._getframe().f_lineno + 1
        blocks += [heap.calloc(1, 8), heap.memalign(32, 8)]
        for p in blocks[:3]:
            stack = heap.block(p).alloc_stack
            assert [f.name for f in stack] == ["_helper_alloc", "test_stacks_through_the_wrapped_entry_points_are_the_users_at_the_asked_depth"], kwargs
            assert stack[1].lineno == line
        for p in blocks[3:]:
            stack = heap.block(p).alloc_stack
            assert len(stack) == 2 and stack[0].lineno == line2 and stack[0].filename == __file__, kwargs
        (group,) = [g for g in heap.leaks() if g.count == 3]
        assert group.stack[0].name == "_helper_alloc"
        heap.close(check=False)


@pytest.mark.parametrize("crash", [False, True])
def test_faulthandler_enabled_after_the_first_guarded_heap(crash: bool) -> None:
    body = f"""\
faulthandler.disable()
heap = memguard.GuardedHeap(on_error="report", guard="all")
faulthandler.enable()            # on top of memguard's handler now (as pytest --memguard does)
p = heap.malloc(16)              # puts memguard's handler back on top
ctypes.memset(p + 16, 0, 1)  # ACCESS
if {crash}:
    ctypes.string_at(8, 1)  # CRASH
dump(heap)
"""
    proc = run(body, check=not crash)
    if crash:
        assert proc.returncode != 0 and "done" not in proc.stdout
        assert "Fatal Python error: Segmentation fault" in proc.stderr
        assert f'File "<string>", line {line_of(body, "# CRASH")}' in proc.stderr
        assert proc.stderr.count("Fatal Python error") == 1
    else:
        assert [(r["kind"], r["line"]) for r in findings(proc)] == [("heap-buffer-overflow", line_of(body, "# ACCESS"))]


def test_a_segv_sent_by_kill_is_not_swallowed() -> None:
    body = """\
import os, signal
heap = memguard.GuardedHeap(on_error="report", guard="all")
p = heap.malloc(16)
os.kill(os.getpid(), signal.SIGSEGV)
print("not reached")
"""
    proc = run(body, check=False)
    assert proc.returncode != 0 and "not reached" not in proc.stdout
    assert "Fatal Python error: Segmentation fault" in proc.stderr


def test_pytest_with_guard_sampling_on_the_process_heap_fails_the_test_at_the_access(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_p='''
import ctypes
import memguard


def test_reads_past_the_end():
    p = memguard.malloc(32)
    data = ctypes.string_at(p, 33)
    memguard.free(p)
    assert len(data) == 33


def test_clean():
    memguard.free(memguard.malloc(32))
''')
    result = pytester.runpytest_subprocess("--memguard", "--memguard-options=guard_sample=1")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "heap-buffer-overflow" in out and "test_p.py:7 in test_reads_past_the_end" in out
    if X86:
        assert "READ at 0x" in out


def test_hooks_see_guarded_blocks_and_a_raising_alloc_hook_frees_the_block() -> None:
    seen: list[tuple[str, int]] = []

    class Plugin:
        fail = False

        @memguard.hookimpl
        def memguard_alloc(self, heap: memguard.GuardedHeap, block: memguard.BlockInfo) -> None:
            seen.append(("alloc", block.address))
            if self.fail:
                raise KeyboardInterrupt

        @memguard.hookimpl
        def memguard_free(self, heap: memguard.GuardedHeap, block: memguard.BlockInfo) -> None:
            seen.append(("free", block.address))

    plugin = Plugin()
    heap = memguard.GuardedHeap(on_error="raise", guard="all", plugins=[plugin])
    p = heap.malloc(8)
    heap.free(p)
    assert seen == [("alloc", p), ("free", p)]
    plugin.fail = True
    with pytest.raises(KeyboardInterrupt):
        heap.malloc(8)
    q = seen[-1][1]
    assert heap.block(q).state == "quarantined" and heap.leaks() == []
    plugin.fail = False
    heap.close()


def test_a_pool_over_a_guarded_chunk() -> None:
    heap = memguard.GuardedHeap(on_error="report", guard="all")
    chunk = heap.malloc(256)
    assert heap.live_serial(chunk) == 1
    pool = memguard.MemPool(heap, name="pool")
    start = pool.add_chunk(chunk)
    a = pool.alloc(start, 24)
    b = pool.alloc(start + 64, 24)
    pool.free(a)
    assert heap.check() == []
    ctypes.memset(b, 0, 25)
    assert [r.kind for r in heap.check()] == ["pool-buffer-overflow"]
    pool.free(b)
    pool.destroy()
    heap.free(chunk)
    assert heap.live_serial(chunk) == 0
    heap.close(check=False)


def test_a_view_keeps_the_pages_of_a_freed_guarded_block_mapped_and_its_use_is_reported() -> None:
    body = """\
from memguard.heap.guardpages import QUARANTINE_BLOCKS
heap = memguard.GuardedHeap(on_error="report", guard="all")
p = heap.malloc(64)
view = heap.view(p)
heap.free(p)
for _ in range(QUARANTINE_BLOCKS + 10):
    heap.free(heap.malloc(8))
view[3] = 1  # ACCESS
del view
for _ in range(QUARANTINE_BLOCKS + 10):
    heap.free(heap.malloc(8))
dump(heap)
"""
    found = findings(run(body))
    assert [(r["kind"], r["line"], r["offset"]) for r in found] == [
        ("heap-use-after-free", line_of(body, "# ACCESS"), 3)
    ]


def test_a_freed_block_out_of_the_quarantine_whose_mapping_is_kept_is_still_reported() -> None:
    body = """\
from memguard.heap.guardpages import QUARANTINE_BLOCKS
heap = memguard.GuardedHeap(on_error="report", guard="all")
p = heap.malloc(64)
heap.free(p)
for _ in range(QUARANTINE_BLOCKS + 10):
    heap.free(heap.malloc(5000))     # blocks of another length: p's mapping is kept, not reused
assert heap._guard.size_of(p) is None and p not in heap._guard.blocks
ctypes.string_at(p, 1)  # ACCESS
q = heap.malloc(64)                  # reuses p's mapping
ctypes.memset(q, 7, 64)
assert ctypes.string_at(q, 64) == bytes([7]) * 64
heap.free(q)
dump(heap)
"""
    found = findings(run(body))
    assert [(r["kind"], r["line"]) for r in found] == [("heap-use-after-free", line_of(body, "# ACCESS"))]


def test_memguard_run_with_guard_all_names_the_access_in_the_exit_report(tmp_path: object) -> None:
    from pathlib import Path

    prog = Path(str(tmp_path)) / "prog.py"
    prog.write_text(
        "import ctypes, memguard\n"
        "q = memguard.malloc(32)\n"
        "ctypes.string_at(q, 33)\n"
        "memguard.free(q)\n"
        "print('finished')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "memguard", "run", "-o", "guard=all", str(prog)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 23 and "finished" in proc.stdout
    assert "ERROR: memguard: heap-buffer-overflow" in proc.stderr
    assert f"SUMMARY: memguard: heap-buffer-overflow {prog}:3 in <module>" in proc.stderr
    assert f"allocated (allocation #1) here:\n    #0 {prog}:2 in <module>" in proc.stderr
