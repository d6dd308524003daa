"""Native strings (``StringTable``, ``RString``, ``CowString``): each classic bug a finding with stacks."""

from __future__ import annotations

import ctypes
import inspect
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import memguard
from memguard import CowString, GuardedHeap, RString, StringTable, hookimpl
from memguard_plugins import strtab_invariants

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


def line_of(marker: str, fn: Callable[..., object]) -> int:
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, text in enumerate(lines) if marker in text)


def kinds(heap: GuardedHeap) -> list[str]:
    return [r.kind for r in heap.reports]


# ----------------------------------------------------------------------------- the table
def test_equal_strings_share_one_nul_terminated_copy(heap: GuardedHeap) -> None:
    t = StringTable(heap=heap)
    a = t.intern("héllo")
    b = t.intern("héllo".encode())
    assert a.address == b.address and a.refcount == 2 and a.length == 6
    assert ctypes.string_at(a.address) == "héllo".encode() and ctypes.string_at(a.address + 6, 1) == b"\0"
    assert heap.block(a.address).size == 7
    assert t.lookup("héllo") == t.lookup(b"h\xc3\xa9llo") and t.lookup("nope") is None
    assert len(t) == 1 and "héllo" in t and 3 not in t
    s = t.stats()
    assert (s.entries, s.bytes, s.references, s.interns, s.hits, s.misses) == (1, 7, 2, 2, 1, 1)
    t.release(a)
    t.release("héllo")
    assert len(t) == 0 and heap.block(a.address).state != "live" and a.refcount == 0
    assert t.close() == [] and heap.check() == [] and heap.reports == []


def test_str_and_bytes_interned_in_any_order_are_one_entry_until_removed(heap: GuardedHeap) -> None:
    t = StringTable(heap=heap)
    a = t.intern(b"mix")
    b = t.intern("mix")
    t.release("mix")
    t.release(a)
    assert len(t) == 0 and "mix" not in t and b.refcount == 0
    c = t.intern("mix")
    assert c.refcount == 1 and t.lookup(b"mix") == c
    t.release(c)
    assert heap.reports == [] and t.close() == []


@pytest.mark.parametrize("bad, error", [(3, TypeError), (None, TypeError), ("a\0b", ValueError), (b"\0", ValueError)])
def test_bad_values_are_refused(heap: GuardedHeap, bad: Any, error: type) -> None:
    t = StringTable(heap=heap)
    with pytest.raises(error):
        t.intern(bad)
    with pytest.raises(TypeError):
        StringTable(heap=object())  # type: ignore[arg-type]
    t.close()
    with pytest.raises(memguard.HeapClosedError):
        t.intern("x")


def test_over_release_of_a_freed_entry_names_the_release_that_freed_it(heap: GuardedHeap) -> None:
    t = StringTable(heap=heap)

    def body() -> None:
        s = t.intern("gone")  # interned
        t.release(s)  # freed
        t.release(s.address)  # again
        t.release("never")

    body()
    over = [r for r in heap.reports if r.kind == "strtab-over-release"]
    assert len(over) == 2
    r = over[0]
    assert r.alloc_stack[0].lineno == line_of("# interned", body)
    assert r.free_stack[0].lineno == line_of("# freed", body)
    assert r.stack[0].lineno == line_of("# again", body)
    assert "not interned" in over[1].message
    assert "released here:" in str(r) and "interned here:" in str(r)
    assert t.stats().releases == 1


def test_releasing_one_handle_twice_is_an_over_release_while_others_still_hold(heap: GuardedHeap) -> None:
    t = StringTable(heap=heap)
    a = t.intern("x")
    b = t.intern("x")
    t.release(b)
    t.release(b)
    assert kinds(heap) == ["strtab-over-release"] and a.refcount == 1
    assert "already released through this handle" in heap.reports[0].message
    t.release(a)
    assert t.close() == []


def test_releasing_by_value_then_by_handles_counts_like_c(heap: GuardedHeap) -> None:
    t = StringTable(heap=heap)
    a, b = t.intern("v"), t.intern("v")
    t.release("v")
    t.release(b)
    assert heap.reports == [] and len(t) == 0
    t.release(a)
    assert kinds(heap) == ["strtab-over-release"]


def test_leaks_at_close_are_grouped_by_the_stack_that_took_them() -> None:
    heap = GuardedHeap(on_error="raise")
    t = StringTable(heap=heap)

    def take() -> None:
        t.intern("kept")  # taker

    t.intern("kept")
    for _ in range(2):
        take()
    with pytest.raises(memguard.StringError) as exc:
        t.close()
    assert exc.value.kind == "strtab-leak"
    leaks = [r for r in heap.reports if r.kind == "strtab-leak"]
    assert sorted(r.count for r in leaks) == [1, 2]
    two = next(r for r in leaks if r.count == 2)
    assert two.alloc_stack[0].lineno == line_of("# taker", take) and "has 2/3 users at:" in two.message
    assert heap.check() == [] and heap.stats().live_blocks == 0
    heap.close()


def test_a_write_into_an_interned_string_is_found_on_hit_release_and_check(heap: GuardedHeap) -> None:
    t = StringTable(heap=heap)
    s = t.intern("immutable")
    ctypes.memset(s.address + 2, ord("X"), 1)
    t.intern("immutable")
    r = heap.reports[-1]
    assert r.kind == "strtab-mutation" and r.offset == 2 and r.found == b"X" and r.expected == b"m"
    assert r.alloc_stack and ctypes.string_at(s.address) == b"immutable"  # restored
    ctypes.memset(s.address, ord("Y"), 1)
    assert [x.kind for x in heap.check()] == ["strtab-mutation"]
    ctypes.memset(s.address, ord("Z"), 1)
    t.release(s)
    assert kinds(heap).count("strtab-mutation") == 3
    t.release(s.address)
    assert t.close() == []


def test_a_write_after_the_entry_was_freed_is_the_heaps_use_after_free(heap: GuardedHeap) -> None:
    t = StringTable(heap=heap)
    s = t.intern("brief")
    t.release(s)
    ctypes.memset(s.address, 0, 1)
    assert [r.kind for r in heap.check()] == ["heap-use-after-free"]
    t.close()


def test_refcount_and_pool_hooks_see_interning_release_and_removal() -> None:
    seen: list[tuple[str, ...]] = []

    class Spy:
        @hookimpl
        def memguard_refcount(self, audit: Any, ref: Any, op: str) -> None:
            seen.append(("ref", op, str(ref.count)))

        @hookimpl
        def memguard_pool_alloc(self, pool: Any, region: Any) -> None:
            seen.append(("alloc", str(region.size)))

        @hookimpl
        def memguard_pool_free(self, pool: Any, region: Any) -> None:
            seen.append(("free", str(region.size)))

    heap = GuardedHeap(on_error="report", plugins=[Spy(), strtab_invariants])
    t = StringTable(heap=heap)
    a = t.intern("abc")
    t.intern("abc")
    t.release(a)
    t.release("abc")
    assert seen == [("alloc", "4"), ("ref", "track", "1"), ("ref", "inc", "2"), ("ref", "dec", "1"),
                    ("free", "4"), ("ref", "release", "0")]
    t.intern("left")
    assert "has 1/1 users" in t.audit.format_leaks()
    assert heap.check() == []
    t.close()
    heap.close()


def test_the_invariants_plugin_catches_a_table_whose_counters_lie(heap: GuardedHeap) -> None:
    heap.plugins.register(strtab_invariants)
    t = StringTable(heap=heap)
    t.intern("a")
    assert heap.check() == []
    t._references += 1  # a bookkeeping bug
    found = heap.check()
    assert [r.kind for r in found] == ["strtab-invariant"] and "references" in found[0].message
    t._references -= 1
    t.close()


def test_a_table_without_a_heap_closes_its_private_heap() -> None:
    t = StringTable()
    s = t.intern("solo")
    assert s.text == "solo" and t.heap.name == "strtab-heap"
    t.release(s)
    assert t.close() == [] and t.heap.closed and t.close() == []


def test_a_pool_chunk_can_be_removed_only_without_live_regions(heap: GuardedHeap) -> None:
    pool = memguard.MemPool(heap, quarantine_bytes=1 << 10)
    block = heap.malloc(64)
    pool.add_chunk(block)
    pool.alloc(block + 16, 8)
    with pytest.raises(ValueError, match="live regions"):
        pool.remove_chunk(block)
    with pytest.raises(ValueError, match="not a chunk"):
        pool.remove_chunk(block + 1)
    pool.free(block + 16)
    ctypes.memset(block + 16, 0, 1)  # a write into the quarantined region: found on removal
    assert [r.kind for r in pool.remove_chunk(block)] == ["pool-use-after-free"]
    assert pool.chunks() == [] and pool.stats().quarantined_bytes == 0
    heap.free(block)
    assert heap.check() == []
    pool.destroy()


def test_eight_threads_interning_and_releasing_the_same_strings(heap: GuardedHeap) -> None:
    from memguard_plugins import pool_invariants

    heap.plugins.register(strtab_invariants)
    heap.plugins.register(pool_invariants)
    t = StringTable(heap=heap)
    words = [f"word{i}" for i in range(100)]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                held = [t.intern(w) for w in words]
                for s in held:
                    t.release(s)
            for w in words[:10]:
                t.intern(w)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and heap.check() == [] and heap.reports == []
    s = t.stats()
    assert s.entries == 10 and s.references == 80 and s.interns == 8 * 310 and s.releases == 8 * 300
    assert all(t.lookup(w).refcount == 8 for w in words[:10])  # type: ignore[union-attr]
    leaks = t.close()
    assert len(leaks) == 10 and all(r.count == 8 for r in leaks)


class TableModel(RuleBasedStateMachine):
    """The table against a dict of counts: no false finding, the right leaks at close."""

    def __init__(self) -> None:
        super().__init__()
        self.heap = GuardedHeap(on_error="raise", plugins=[strtab_invariants])
        self.table = StringTable(heap=self.heap)
        self.model: dict[bytes, int] = {}
        self.handles: list[memguard.InternedString] = []

    @rule(word=st.sampled_from(["a", "b", "ccc", "", "déjà"]))
    def intern(self, word: str) -> None:
        h = self.table.intern(word)
        key = word.encode()
        self.model[key] = self.model.get(key, 0) + 1
        self.handles.append(h)
        assert h.refcount == self.model[key]

    @precondition(lambda self: self.handles)
    @rule(i=st.integers(0, 1000), how=st.sampled_from(["handle", "value", "address"]))
    def release(self, i: int, how: str) -> None:
        """Each handle stands for one reference, released once, by any of the three forms."""
        h = self.handles.pop(i % len(self.handles))
        self.table.release({"handle": h, "value": h.value, "address": h.address}[how])
        self.model[h.value] -= 1
        if not self.model[h.value]:
            del self.model[h.value]

    @rule(word=st.sampled_from(["a", "b", "zzz"]))
    def lookup(self, word: str) -> None:
        found = self.table.lookup(word)
        assert (found.refcount if found else 0) == self.model.get(word.encode(), 0)

    @invariant()
    def agrees(self) -> None:
        assert {e.value: e.refcount for e in self.table.entries()} == self.model
        assert self.table.stats().references == sum(self.model.values())

    def teardown(self) -> None:
        with self.heap.reporting():
            leaks = self.table.close()
        assert sum(r.count for r in leaks) == sum(self.model.values())
        assert {r.kind for r in leaks} <= {"strtab-leak"}
        assert self.heap.check() == []
        self.heap.close()


TestTableModel = TableModel.TestCase
TestTableModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


# ----------------------------------------------------------------------------- refcounted strings
def test_rstring_counts_and_frees_at_zero(heap: GuardedHeap) -> None:
    r = RString("text", heap=heap)
    assert r.dup() is r and r.refcount == 2 and r.value == b"text" and ctypes.string_at(r.address) == b"text"
    r.release()
    r.release()
    assert r.refcount == 0 and heap.block(r.address).state != "live" and heap.reports == []
    with pytest.raises(ValueError, match="released"):
        r.value


def test_rstring_release_at_zero_underflows_and_saturates(heap: GuardedHeap) -> None:
    def body() -> RString:
        r = RString("x", heap=heap)  # created
        r.release()  # final
        r.release()  # underflow
        r.release()
        r.dup()
        return r

    r = body()
    assert kinds(heap) == ["rstr-underflow"]
    rep = heap.reports[0]
    assert rep.stack[0].lineno == line_of("# underflow", body)
    assert rep.alloc_stack[0].lineno == line_of("# created", body)
    assert rep.free_stack[0].lineno == line_of("# final", body)
    ctypes.memset(r.address, 0, 1)
    assert [x.kind for x in heap.check()] == ["heap-use-after-free"]


def test_rstring_dup_after_the_final_release(heap: GuardedHeap) -> None:
    r = RString(b"y", heap=heap)
    r.release()
    r.dup()
    assert kinds(heap) == ["rstr-use-after-release"]


def test_rstring_without_a_heap_uses_a_shared_one() -> None:
    r = RString("shared")
    assert r.heap is RString("other").heap and r.heap.name == "strings"
    r.release()


# ----------------------------------------------------------------------------- copy-on-write strings
def test_cow_copy_shares_and_modify_unshares(heap: GuardedHeap) -> None:
    c = CowString(b"abc", heap=heap)
    d = c.copy()
    assert d.address == c.address and c.refcount == 2
    with pytest.raises(TypeError):
        d.view()[0] = 1  # read-only while shared
    e = d.modify()
    assert e.address != c.address and d.closed and c.refcount == 1 and e.refcount == 1
    e.view()[0] = ord("X")
    assert e.value == b"Xbc" and c.value == b"abc" and c.modify() is c
    c.release()
    e.release()
    assert heap.reports == [] and heap.check() == [] and heap.stats().live_blocks == 0


def test_writing_a_shared_cow_buffer_is_found(heap: GuardedHeap) -> None:
    c = CowString("shared", heap=heap)
    writable = c.view()
    d = c.copy()
    writable[0] = ord("S")  # without modify()
    assert [r.kind for r in heap.check()] == ["cow-shared-write"]
    r = heap.reports[0]
    assert r.found == b"S" and r.expected == b"s" and r.alloc_stack and c.value == b"shared"
    writable[1] = ord("H")
    d.release()
    assert kinds(heap) == ["cow-shared-write", "cow-shared-write"]
    writable[1] = ord("h")  # sole owner now: allowed
    assert heap.check() == [] and c.value == b"shhred"[:1] + b"hared"
    del writable
    c.release()
    c.release()
    assert kinds(heap)[-1] == "rstr-underflow"


# ----------------------------------------------------------------------------- pytest and the example
def test_pytest_fails_a_forgotten_release_and_a_write_into_an_interned_string(pytester: pytest.Pytester) -> None:
    source = textwrap.dedent("""
        import ctypes
        import memguard


        def test_forgets(guarded_heap):
            table = memguard.StringTable(heap=guarded_heap)
            table.intern("kept")
            s = table.intern("dropped")
            table.release(s)


        def test_writes(guarded_heap):
            table = memguard.StringTable(heap=guarded_heap)
            s = table.intern("const")
            ctypes.memset(s.address, ord("C"), 1)
            table.release(s)


        def test_clean(guarded_heap):
            with memguard.StringTable(heap=guarded_heap) as table:
                table.release(table.intern("fine"))
    """).lstrip()
    pytester.makepyfile(test_x=source)
    line = 1 + source.splitlines().index('    table.intern("kept")')
    result = pytester.runpytest_subprocess("--memguard", "-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=1, failed=2)
    text = result.stdout.str()
    assert f"test_x.py:{line} in test_forgets" in text
    assert "strtab-mutation" in text
    result.stdout.fnmatch_lines(["FAILED *test_forgets*", "FAILED *test_writes*"])


def test_the_example_finds_the_forgotten_release() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "string_interning.py")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "strtab-leak" in r.stdout and "has 1/" in r.stdout and "in forgetful_worker" in r.stdout


def test_the_benchmark_runs_quickly_and_reports_every_case() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_strings.py"), "--quick", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    figures = json.loads(r.stdout)
    assert {"heap pair", "intern hit", "sys.intern hit", "dict lookup", "intern miss+release",
            "cow copy+release"} <= set(figures)
    assert all(f["us"] > 0 for f in figures.values())
