"""Interrupts: a KeyboardInterrupt at any line of the heap's paths leaves it consistent and unlocked.

A tracer raises ``KeyboardInterrupt`` at the N-th line the heap's own code runs, for every
N in turn, inside each operation (fast and general paths, large and aligned blocks,
eviction, realloc).  Afterwards the heap must still allocate and free, ``check()`` must find
nothing (no block nobody touched reported as corrupt) and ``close()`` must return: both run
in a thread with a timeout, so a lost lock fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from types import FrameType
from typing import Any, Callable

import pytest

import memguard
from memguard.heap import guarded

HEAP_DIR = os.path.dirname(guarded.__file__)
#: Seconds a check() or close() may take before the heap counts as hung.
HANG = 10.0


def _interrupt_at(n: int, op: Callable[[], Any]) -> bool:
    """Run ``op`` raising KeyboardInterrupt at the ``n``-th line event in the heap's code.

    Returns whether the interrupt was raised (False: ``op`` runs fewer lines than ``n``).
    """
    count = 0
    fired = False

    def local(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count, fired
        if event == "line":
            count += 1
            if count == n:
                fired = True
                raise KeyboardInterrupt
        return local

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        if os.path.dirname(frame.f_code.co_filename) != HEAP_DIR:
            return None
        frame.f_trace_lines = True
        return local(frame, event, arg)

    previous = sys.gettrace()  # (coverage's, under coverage)
    sys.settrace(tracer)
    try:
        op()
    except KeyboardInterrupt:
        if not fired:  # pragma: no cover - a real Ctrl-C
            raise
    finally:
        sys.settrace(previous)
    return fired


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread; fail if it does not return in time (a lost lock spins forever)."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # pragma: no cover - reported below
            error.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():  # pragma: no cover - the failure this file is about
        pytest.fail(f"{getattr(fn, '__name__', fn)} hung: the heap's lock was lost")
    if error:  # pragma: no cover
        raise error[0]
    return result[0] if result else None


def _after(heap: memguard.GuardedHeap) -> None:
    """The heap still works, finds nothing false, and closes."""

    def use() -> list[memguard.Report]:
        for size in (24, 64, 5000):
            heap.free(heap.malloc(size))
        return heap.check()

    reports = _within(HANG, use)
    assert reports == [], [r.kind for r in reports]
    assert heap.reports == [], [r.kind for r in heap.reports]
    s = heap.stats()
    assert s.live_bytes >= 0 and s.live_blocks >= 0
    assert s.live_blocks == sum(g.count for g in heap.leaks())
    _within(HANG, heap.close)


def _setup_fast(heap: memguard.GuardedHeap) -> list[int]:
    # a few blocks, and a slot on the 64-byte free list for the fast malloc
    blocks = [heap.malloc(64) for _ in range(4)]
    heap.free(blocks.pop())
    return blocks


SCENARIOS: dict[str, tuple[dict[str, Any], Callable[[memguard.GuardedHeap, list[int]], Any]]] = {
    "fast malloc": ({}, lambda h, b: h.malloc(64)),
    "fast free": ({}, lambda h, b: h.free(b[0])),
    "fast free, evicting": ({"quarantine_bytes": 0}, lambda h, b: h.free(b[0])),
    "malloc of a new size class": ({}, lambda h, b: h.malloc(200)),
    "calloc": ({}, lambda h, b: h.calloc(3, 40)),
    "memalign": ({}, lambda h, b: h.memalign(64, 100)),
    "large malloc": ({}, lambda h, b: h.malloc(9000)),
    "large free, evicting": ({"quarantine_bytes": 0}, lambda h, b: h.free(h.malloc(9000))),
    "realloc": ({}, lambda h, b: h.realloc(b[0], 100)),
    "realloc to a large block": ({}, lambda h, b: h.realloc(b[0], 9000)),
    "general free": ({}, lambda h, b: h.free(h.memalign(128, 40))),
    "double free": ({}, lambda h, b: (h.free(b[1]), h.free(b[1]))),
    "check": ({}, lambda h, b: h.check()),
    "stats and leaks": ({}, lambda h, b: (h.stats(), h.leaks(), h.mark())),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_an_interrupt_at_any_line_leaves_the_heap_consistent_and_unlocked(name: str) -> None:
    options, op = SCENARIOS[name]
    n = 0
    while True:
        n += 1
        heap = memguard.GuardedHeap(on_error="report", **options)
        blocks = _setup_fast(heap)
        fired = _interrupt_at(n, lambda: op(heap, blocks))
        if name == "double free":
            # the double free is a finding of its own: only the interrupt's are wrong
            heap.reports.clear()
        _after(heap)
        if not fired:
            break
    assert n > 5  # the tracer did reach the heap's code


def test_a_token_lost_in_exit_is_taken_over_by_the_next_caller() -> None:
    """The one window the lock cannot close (``__exit__`` is interrupted on entry) heals."""
    heap = memguard.GuardedHeap()
    lock = heap._lock

    def lose() -> None:
        lock.__enter__()  # and never __exit__: the frame that entered returns

    lose()
    assert not lock.token
    # another thread waits, finds the holder gone and takes over; so does this one
    _within(HANG, heap.stats)
    _within(HANG, lambda: heap.free(heap.malloc(10)))
    heap.stats()
    assert lock.token == [True]
    heap.close()


def test_a_real_reentry_is_not_taken_for_a_lost_token() -> None:
    from memguard.heap.mutex import Mutex

    m = Mutex()
    with m:
        with m:
            assert m.held()
        assert m.held() and not m.token
    assert m.token == [True] and not m.held()


# ---------------------------------------------------------------------------- memguard run + SIGINT
#: How many times the looping program is interrupted (the report asked for 50; each run
#: costs an interpreter start, so the suite runs this many, each a fraction of a second).
SIGINT_RUNS = 12

_LOOP = textwrap.dedent(
    """
    import signal
    import memguard

    # (a shell may start a background job with SIGINT ignored: Ctrl-C as in a terminal)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sizes = (16, 64, 200, 5000)
    print("ready", flush=True)
    i = 0
    while True:
        p = memguard.malloc(sizes[i & 3])
        q = memguard.realloc(p, sizes[(i + 1) & 3])
        memguard.free(q)
        i += 1
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_memguard_run_exits_130_on_sigint_with_no_finding(tmp_path: Any) -> None:
    prog = tmp_path / "loop.py"
    prog.write_text(_LOOP)
    env = dict(os.environ)
    # The program's own line between malloc() returning and free() may leak the block
    # in hand when the interrupt lands there: that is a true leak, so leaks are not asked for.
    env["MEMGUARD_OPTIONS"] = "leak_check=0:quarantine_mb=1"
    env.pop("PYTEST_XDIST_WORKER", None)
    for i in range(SIGINT_RUNS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "memguard", "run", str(prog)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(0.02 + 0.013 * i)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=HANG)
        except subprocess.TimeoutExpired:  # pragma: no cover - the failure this test is about
            proc.kill()
            proc.communicate()
            pytest.fail(f"run {i}: memguard run hung after SIGINT")
        assert proc.returncode == 130, err
        assert "ERROR: memguard" not in err and "found problems" not in err, err


def test_a_ctrl_c_caught_by_a_buffer_finalizer_is_raised_again_by_the_heap() -> None:
    """An exception cannot leave a finalizer: a KeyboardInterrupt that lands in the one that
    releases a large block's memory would be printed and lost (the program would go on
    after Ctrl-C).  The heap raises it again once the block is gone."""
    from memguard import native

    heap = memguard.GuardedHeap(quarantine_bytes=0, on_error="report")
    p = heap.malloc(9000)
    owner = heap._large[p].view.obj
    release = owner.release

    def interrupted(address: int) -> None:
        release(address)
        raise KeyboardInterrupt

    owner.release = interrupted
    del owner
    with pytest.raises(KeyboardInterrupt):
        heap.free(p)  # leaves the quarantine at once: the buffer is dropped
    native.raise_caught_interrupt()  # raised once, not again
    _after(heap)


def test_a_ctrl_c_at_the_first_instruction_of_a_buffer_finalizer_is_raised_again() -> None:
    """A KeyboardInterrupt can land before the finalizer's ``try`` (on its first line):
    Python reports it as unraisable and goes on, and a program in a loop would never stop.
    memguard keeps it from the unraisable hook, and the heap raises it again."""
    from memguard import native

    heap = memguard.GuardedHeap(quarantine_bytes=0, on_error="report")
    p = heap.malloc(9000)
    owner = heap._large[p].view.obj
    finalizer = type(owner).__del__
    armed = [True]

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is finalizer.__code__ and armed:
            armed.clear()
            raise KeyboardInterrupt  # before the first line of the body
        return None

    del owner
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt):
            heap.free(p)  # leaves the quarantine at once: the buffer is dropped
    finally:
        sys.settrace(previous)
    assert not armed
    native.raise_caught_interrupt()  # raised once, not again
    _after(heap)
