"""Heaps across ``os.fork()``: children never hang, and report only what is theirs.

Every scenario runs in its own interpreter (``subprocess`` with a timeout), and every
forked child arms ``signal.alarm`` first, so a child that hangs dies instead of
outliving the test.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def run(tmp_path: os.PathLike[str], script: str, *args: str, memguard_run: bool = False,
        options: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    path = os.path.join(tmp_path, "prog.py")
    with open(path, "w") as f:
        f.write(textwrap.dedent(script))
    env = dict(os.environ, MEMGUARD_OPTIONS=options)
    launcher = ("-m", "memguard", "run") if memguard_run else ()
    return subprocess.run(
        [sys.executable, *launcher, path, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path
    )


CHURN = """
    import os, signal, sys, threading
    import memguard
    from memguard.heap import fork

    fork.ACQUIRE_TIMEOUT = float(sys.argv[2])
    heap = memguard.GuardedHeap(on_error="raise", quarantine_bytes=1 << 16)
    stop = threading.Event()

    def churn():
        sizes = (16, 100, 5000, 40)
        while not stop.is_set():
            blocks = [heap.malloc(sizes[i % 4]) for i in range(50)]
            for p in blocks:
                heap.free(p)

    def stuck():
        with heap._lock:  # a parent thread that never leaves the heap
            stop.wait()

    threads = [threading.Thread(target=churn) for _ in range(2)]
    if sys.argv[1] == "stuck":
        threads.append(threading.Thread(target=stuck))
    for t in threads:
        t.start()
    statuses = []
    for i in range(6 if sys.argv[1] == "churn" else 1):
        pid = os.fork()
        if pid == 0:
            signal.alarm(10)
            blocks = [heap.malloc(n) for n in (16, 100, 5000, 70000)]
            for p in blocks:
                heap.free(p)
            heap.check()
            os._exit(0 if not heap.leaks() else 3)
        statuses.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    stop.set()
    for t in threads:
        t.join()
    print(statuses, flush=True)
"""


def test_children_forked_while_parent_threads_use_the_heap_allocate_free_and_exit(tmp_path: os.PathLike[str]) -> None:
    proc = run(tmp_path, CHURN, "churn", "2.0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == str([0] * 6), (proc.stdout, proc.stderr)


def test_a_child_forked_while_a_parent_thread_is_stuck_in_the_heap_still_allocates(tmp_path: os.PathLike[str]) -> None:
    # The fork waits a bounded time for the stuck thread, then goes on; the child resets the lock.
    proc = run(tmp_path, CHURN, "stuck", "0.2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "[0]", (proc.stdout, proc.stderr)


PROGRAM = """
    import ctypes, os, sys
    import memguard

    kept = memguard.malloc(48)          # live in the parent when it forks: inherited
    if "parent-finding" in sys.argv:
        p = memguard.malloc(24)
        memguard.free(p)
        memguard.free(p)                # the parent's own finding, recorded before the fork
    pid = os.fork()
    if pid == 0:
        import signal
        signal.alarm(20)
        if "leak" in sys.argv:
            memguard.malloc(77)         # the child's own leak
        if "damage" in sys.argv:
            ctypes.memset(kept + 48, 0, 1)  # the child damages an inherited block
        if "leaks-api" in sys.argv:
            heap = memguard.process_heap()
            print("child", [g.size for g in heap.leaks()], [g.size for g in heap.leaks(inherited=True)], flush=True)
        sys.exit(0)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    print("pid", pid, "status", status, flush=True)
    memguard.free(kept)
"""


def child_report(tmp_path: os.PathLike[str], proc: subprocess.CompletedProcess[str]) -> tuple[int, str | None]:
    """(the child's exit status, its exit report or None when it wrote none)."""
    line = next(line for line in proc.stdout.splitlines() if line.startswith("pid "))
    _, pid, _, status = line.split()
    path = os.path.join(tmp_path, f"log.{pid}")
    if not os.path.exists(path):
        return int(status), None
    with open(path) as f:
        return int(status), f.read()


def test_a_child_that_just_exits_reports_nothing_and_exits_0(tmp_path: os.PathLike[str]) -> None:
    proc = run(tmp_path, PROGRAM, memguard_run=True, options=f"log_path={tmp_path}/log")
    assert proc.returncode == 0, proc.stderr
    assert child_report(tmp_path, proc) == (0, None)
    assert glob.glob(os.path.join(tmp_path, "log.*")) == []  # the parent freed everything too


def test_a_child_reports_only_its_own_leaks_and_corruption(tmp_path: os.PathLike[str]) -> None:
    proc = run(tmp_path, PROGRAM, "leak", "damage", "parent-finding", memguard_run=True,
               options=f"log_path={tmp_path}/log")
    status, report = child_report(tmp_path, proc)
    assert status == 23 and report is not None, (proc.stdout, proc.stderr)
    # Its leak and its damage to an inherited block; not the inherited block as a leak,
    # nor the parent's double free (the parent reports that one).
    assert "Direct leak of 77 byte(s)" in report
    assert "heap-buffer-overflow" in report
    assert "48 byte(s)" not in report.split("heap-buffer-overflow")[0]
    assert "SUMMARY: memguard: 77 byte(s) leaked in 1 allocation(s)." in report
    assert "double-free" not in report
    with open(os.path.join(tmp_path, f"log.{parent_pid(tmp_path, proc)}")) as f:
        assert "double-free" in f.read()  # the parent's report has it


def parent_pid(tmp_path: os.PathLike[str], proc: subprocess.CompletedProcess[str]) -> int:
    """The parent's pid (the one log that is not the child's)."""
    child = int(next(line for line in proc.stdout.splitlines() if line.startswith("pid ")).split()[1])
    logs = glob.glob(os.path.join(tmp_path, "log.*"))
    return next(int(p.rsplit(".", 1)[1]) for p in logs if int(p.rsplit(".", 1)[1]) != child)


def test_inherited_leaks_1_reports_the_parents_blocks_in_the_child(tmp_path: os.PathLike[str]) -> None:
    proc = run(tmp_path, PROGRAM, memguard_run=True, options=f"log_path={tmp_path}/log:inherited_leaks=1")
    status, report = child_report(tmp_path, proc)
    assert status == 23 and report is not None, (proc.stdout, proc.stderr)
    assert "Direct leak of 48 byte(s) in 1 object(s)" in report


def test_leaks_in_a_child_leave_out_inherited_blocks_unless_asked(tmp_path: os.PathLike[str]) -> None:
    proc = run(tmp_path, PROGRAM, "leak", "leaks-api", options="leak_check=0")
    assert proc.returncode == 0, proc.stderr
    assert "child [77] [77, 48]" in proc.stdout, proc.stdout


ALLOCATORS = """
    import os, signal, sys, threading
    import memguard
    from memguard.heap import fork

    fork.ACQUIRE_TIMEOUT = 0.2
    heap = memguard.GuardedHeap(on_error="raise")
    made = {
        "bufpool": lambda: memguard.BufPool(buffer_size=4096, max_memory=1 << 14, heap=heap),
        "strings": lambda: memguard.StringTable(heap=heap),
        "blocks": lambda: memguard.BlockAllocator(heap=heap),
        "manager": lambda: memguard.MemoryManager(total_budget=1 << 20, heap=heap),
        "buddy": lambda: memguard.BuddyAllocator(),
    }
    use = {
        "bufpool": lambda o: o.allocate(1).release(),
        "strings": lambda o: o.release(o.intern("x")),
        "blocks": lambda o: o.free(o.allocate(8)),
        "manager": lambda o: o.deallocate(o.allocate(64)[0]),
        "buddy": lambda o: o.release(o.allocate(1 << 20)),
    }
    statuses = {}
    for name in sys.argv[1:]:
        obj = made[name]()
        waiter = None
        if name == "bufpool":  # one caller queued for room in the parent
            big = obj.allocate(4)
            waiter = threading.Thread(target=lambda: obj.allocate(4, timeout=10).release())
            waiter.start()
            while obj.stats().waiting != 1:
                pass
        held, stop = threading.Event(), threading.Event()

        def holder():
            with obj._lock:  # a parent thread inside the allocator at the fork
                held.set()
                stop.wait()

        t = threading.Thread(target=holder)
        t.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            signal.alarm(10)
            if name == "bufpool":
                big.release()
            use[name](obj)
            os._exit(0)
        statuses[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        stop.set()
        t.join()
        if waiter is not None:
            big.release()
            waiter.join()
    print(statuses, flush=True)
"""


def test_a_child_forked_while_a_parent_thread_holds_an_allocators_lock_still_uses_it(tmp_path: os.PathLike[str]) -> None:
    """Each allocator's own lock is held across the fork like the heap's: a child forked
    while another parent thread is inside the allocator (or, for the buffer pool, queued in
    it) uses it at once instead of waiting forever for a thread it does not have."""
    names = ("bufpool", "strings", "blocks", "manager", "buddy")
    r = run(tmp_path, ALLOCATORS, *names)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str({name: 0 for name in names}), r.stdout + r.stderr
