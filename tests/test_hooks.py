"""The hook contract: every hook is called when documented, guarded, traced, documented and tested."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest

import memguard
from memguard import GuardedHeap, MemPool, RefAudit, Report, hookimpl
from memguard import hookspecs
from memguard.seams import Seams
from memguard.plugin_manager import PluginValidationError, load_entrypoint_plugins, write_leak_report

ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    """Records every event hook it sees."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    @hookimpl
    def memguard_configure(self, heap):
        self.events.append(("configure", heap))

    @hookimpl
    def memguard_unconfigure(self, heap):
        self.events.append(("unconfigure", heap))

    @hookimpl
    def memguard_alloc(self, heap, block):
        self.events.append(("alloc", block))

    @hookimpl
    def memguard_free(self, heap, block):
        self.events.append(("free", block))

    @hookimpl
    def memguard_report(self, report):
        self.events.append(("report", report))

    def kinds(self, what: str) -> list:
        return [e[1] for e in self.events if e[0] == what]


# ----------------------------------------------------------------------------- meta: docs and tests
def _hook_params(name: str) -> list[str]:
    return list(inspect.signature(getattr(hookspecs, name)).parameters)


def test_every_hookspec_has_a_docstring_with_its_params() -> None:
    assert len(hookspecs.HOOK_NAMES) >= 12
    for name in hookspecs.HOOK_NAMES:
        assert name.startswith("memguard_")
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert doc, name
        for param in _hook_params(name):
            assert f":param {param}:" in doc, (name, param)


def test_every_hookspec_is_documented_in_docs_plugins_md() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text()
    for name in hookspecs.HOOK_NAMES:
        match = re.search(rf"^### `?{name}\((.*?)\)`?", text, re.M)
        assert match, f"{name} has no '### {name}(...)' section in docs/plugins.md"
        assert [p.strip() for p in match.group(1).split(",") if p.strip()] == _hook_params(name), name


def test_every_hookspec_has_a_test() -> None:
    covered: set[str] = set()
    for path in sorted((ROOT / "tests").glob("test_hooks*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and node.name != "test_every_hookspec_has_a_test":
                source = ast.get_source_segment(path.read_text(), node) or ""
                covered.update(n for n in hookspecs.HOOK_NAMES if re.search(rf"\b{n}\b", source))
    # Hooks implemented by the Recorder (used by the tests below) count as covered through it.
    covered.update(n for n in hookspecs.HOOK_NAMES if hasattr(Recorder, n))
    missing = sorted(set(hookspecs.HOOK_NAMES) - covered)
    assert not missing, f"hooks without a test: {missing}"


# ----------------------------------------------------------------------------- laziness and cost
def test_no_plugin_manager_at_import_or_for_a_plain_heap() -> None:
    code = textwrap.dedent(
        """
        import gc, pluggy, memguard
        h = memguard.GuardedHeap()
        h.free(h.malloc(8)); h.check(); h.close()
        managers = [o for o in gc.get_objects() if isinstance(o, pluggy.PluginManager)]
        print(len(managers), h._plugins is None)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["0", "True"]


def test_seams_are_set_only_for_implemented_hooks() -> None:
    class OnlyReports:
        @hookimpl
        def memguard_report(self, report):
            pass

    heap = GuardedHeap()
    heap.plugins  # creating the manager sets nothing
    assert heap.seams == Seams() == (None, None, None, None, None)
    plugin = OnlyReports()
    heap.plugins.register(plugin)
    assert heap.seams.on_alloc is None and heap.seams.on_free is None and heap.seams.on_check is None
    assert heap.seams.on_report is not None
    assert heap.plugins.is_implemented("memguard_report")
    heap.plugins.unregister(plugin)
    assert heap.seams.on_report is None and not heap.plugins.is_implemented("memguard_report")
    heap.close()


# ----------------------------------------------------------------------------- lifetime hooks
def test_memguard_configure_runs_once_per_plugin_at_registration() -> None:
    first, second = Recorder(), Recorder()
    heap = GuardedHeap(plugins=[first])
    assert first.kinds("configure") == [heap]
    heap.plugins.register(second)
    assert first.kinds("configure") == [heap]  # not called again for the first plugin
    assert second.kinds("configure") == [heap]
    heap.close()


def test_memguard_unconfigure_runs_at_close_after_the_final_check() -> None:
    order: list[str] = []

    class P:
        @hookimpl
        def memguard_check(self, heap):
            order.append("check")

        @hookimpl
        def memguard_unconfigure(self, heap):
            order.append("unconfigure")

    heap = GuardedHeap(plugins=[P()])
    heap.close()
    heap.close()
    assert order == ["check", "unconfigure"]


# ----------------------------------------------------------------------------- heap events
def test_memguard_alloc_and_memguard_free_see_every_block_with_stacks() -> None:
    rec = Recorder()
    heap = GuardedHeap(plugins=[rec])
    a = heap.malloc(24)
    b = heap.calloc(2, 8)
    c = heap.memalign(64, 100)
    d = heap.realloc(a, 48)
    heap.free(b)
    allocs, frees = rec.kinds("alloc"), rec.kinds("free")
    assert [(x.address, x.size, x.state) for x in allocs] == [(a, 24, "live"), (b, 16, "live"), (c, 100, "live"), (d, 48, "live")]
    assert allocs[0].alloc_stack[0].name == "test_memguard_alloc_and_memguard_free_see_every_block_with_stacks"
    assert [(x.address, x.size, x.state) for x in frees] == [(a, 24, "quarantined"), (b, 16, "quarantined")]
    assert frees[1].free_stack and frees[1].free_stack[0].filename == __file__
    heap.free(c)
    heap.free(d)
    heap.close()


def test_memguard_free_is_not_called_for_a_rejected_free() -> None:
    rec = Recorder()
    heap = GuardedHeap(plugins=[rec], on_error="report")
    p = heap.malloc(8)
    heap.free(p)
    heap.free(p)  # double free: reported, not a free
    heap.free(p + 4)  # interior pointer
    assert [b.address for b in rec.kinds("free")] == [p]
    assert [r.kind for r in rec.kinds("report")] == ["double-free", "bad-free"]
    heap.close()


def test_memguard_free_announces_a_large_block_released_at_once() -> None:
    rec = Recorder()
    heap = GuardedHeap(plugins=[rec], quarantine_bytes=0)
    p = heap.malloc(10000)
    heap.free(p)
    (block,) = rec.kinds("free")
    assert block.address == p and block.state == "released"
    heap.close()


def test_memguard_report_sees_findings_even_when_the_heap_raises() -> None:
    rec = Recorder()
    heap = GuardedHeap(plugins=[rec])
    p = heap.malloc(16)
    heap.free(p)
    with pytest.raises(memguard.DoubleFreeError):
        heap.free(p)
    (report,) = rec.kinds("report")
    assert report.kind == "double-free" and report.address == p and report is heap.reports[-1]
    heap.close()


def test_memguard_check_adds_custom_findings_to_heap_check() -> None:
    class Budget:
        @hookimpl
        def memguard_check(self, heap):
            s = heap.stats()
            if s.live_bytes > 100:
                return [Report(kind="over-budget", size=s.live_bytes, message=f"{s.live_bytes} bytes live")]
            return None

    heap = GuardedHeap(plugins=[Budget()], on_error="report")
    assert heap.check() == []
    p = heap.malloc(200)
    (r,) = heap.check()
    assert r.kind == "over-budget" and r.size == 200 and heap.reports[-1] is r
    heap.on_error = "raise"
    with pytest.raises(memguard.MemguardError, match="over-budget"):
        heap.check()
    heap.free(p)
    heap.close()


def test_memguard_check_may_return_one_report_but_not_garbage() -> None:
    class One:
        @hookimpl
        def memguard_check(self, heap):
            return Report(kind="custom")

    class Garbage:
        @hookimpl
        def memguard_check(self, heap):
            return "not a report"

    heap = GuardedHeap(plugins=[One(), Garbage()], on_error="report")
    kinds = sorted(r.kind for r in heap.check())
    assert kinds == ["custom", "plugin-error"]
    err = next(r for r in heap.reports if r.kind == "plugin-error")
    assert err.extra["hook"] == "memguard_check" and err.extra["plugin"].startswith("Garbage")
    heap.close()


# ----------------------------------------------------------------------------- leak report (firstresult)
def test_memguard_leak_report_first_result_wins_and_ordering_applies() -> None:
    calls: list[str] = []

    class Csv:
        @hookimpl
        def memguard_leak_report(self, leaks, stream, fmt):
            calls.append("csv")
            if fmt != "csv":
                return None
            for g in leaks:
                stream.write(f"{g.size},{g.count}\n")
            return True

    class Early:
        @hookimpl(tryfirst=True)
        def memguard_leak_report(self, leaks, stream, fmt):
            calls.append("early")
            return None

    class Late:
        @hookimpl(trylast=True)
        def memguard_leak_report(self, leaks, stream, fmt):
            calls.append("late")
            stream.write("late wins\n")
            return True

    heap = GuardedHeap(plugins=[Late(), Csv(), Early()], on_error="report")
    for _ in range(2):
        heap.malloc(10)
    out = io.StringIO()
    heap.plugins.write_leaks(heap.leaks(), out, "csv")
    assert out.getvalue() == "20,2\n"
    assert calls == ["early", "csv"]  # Late never ran: the first result won
    calls.clear()
    out = io.StringIO()
    heap.plugins.write_leaks(heap.leaks(), out, "text")
    assert calls == ["early", "csv", "late"] and out.getvalue() == "late wins\n"
    heap.close()


def test_builtin_leak_writers_and_unknown_format() -> None:
    heap = GuardedHeap()
    heap.malloc(12)
    text, js = io.StringIO(), io.StringIO()
    write_leak_report(heap.leaks(), text, "text", heap=heap)
    write_leak_report(heap.leaks(), js, "json")
    assert "Direct leak of 12 byte(s) in 1 object(s)" in text.getvalue()
    assert json.loads(js.getvalue())["total_bytes"] == 12
    with pytest.raises(ValueError, match="unknown leak report format 'xml'"):
        heap.plugins.write_leaks(heap.leaks(), io.StringIO(), "xml")
    heap.close(check=False)


# ----------------------------------------------------------------------------- sub-allocator events
def test_pool_hooks_memguard_pool_create_alloc_free_move_destroy() -> None:
    events: list[tuple] = []

    class PoolWatcher:
        @hookimpl
        def memguard_pool_create(self, pool):
            events.append(("create", pool.name))

        @hookimpl
        def memguard_pool_alloc(self, pool, region):
            events.append(("alloc", region.address, region.size, region.state))

        @hookimpl
        def memguard_pool_free(self, pool, region):
            events.append(("free", region.address, region.state, bool(region.free_stack)))

        @hookimpl
        def memguard_pool_move(self, pool, old, new):
            events.append(("move", old.address, new.address, new.alloc_stack == old.alloc_stack))

        @hookimpl
        def memguard_pool_destroy(self, pool):
            events.append(("destroy", len(pool.regions())))

    heap = GuardedHeap(plugins=[PoolWatcher()], on_error="report")
    chunk = heap.malloc(256)
    pool = MemPool(heap, name="strings")
    pool.add_chunk(chunk)
    pool.alloc(chunk, 20)
    pool.alloc(chunk + 64, 20)
    pool.move(chunk + 64, chunk + 128)
    pool.free(chunk)
    pool.free(chunk)  # double free: a finding, not an event
    pool.destroy()
    assert events == [
        ("create", "strings"),
        ("alloc", chunk, 20, "live"),
        ("alloc", chunk + 64, 20, "live"),
        ("move", chunk + 64, chunk + 128, True),
        ("free", chunk, "quarantined", True),
        ("destroy", 1),
    ]
    heap.close(check=False)


def test_memguard_defrag_pass_sees_begin_apply_end_around_the_pool_moves() -> None:
    events: list[tuple] = []

    class DefragWatcher:
        @hookimpl
        def memguard_defrag_pass(self, context, phase, moves):
            events.append((phase, context.pass_number, [(m.src_offset, m.dst_offset, m.op) for m in moves]))

        @hookimpl
        def memguard_pool_move(self, pool, old, new):
            events.append(("move", new.address - old.address))

    heap = GuardedHeap(plugins=[DefragWatcher()], on_error="raise")
    blocks = memguard.BlockAllocator(page_size=300, heap=heap)
    hole = blocks.allocate(100)
    a = blocks.allocate(100)
    blocks.free(hole)
    blocks.defragment("full")
    assert events == [
        ("begin", 1, [(100, 0, "copy")]), ("apply", 1, [(100, 0, "copy")]), ("move", -100),
        ("end", 1, [(100, 0, "copy")]), ("begin", 2, []), ("apply", 2, []), ("end", 2, []),
    ]
    blocks.free(a)
    blocks.close()
    heap.close()


def test_memguard_refcount_sees_track_inc_dec_release() -> None:
    seen: list[tuple[str, int]] = []
    reported: list[str] = []

    class Refs:
        @hookimpl
        def memguard_refcount(self, audit, ref, op):
            seen.append((op, ref.count))

        @hookimpl
        def memguard_report(self, report):
            reported.append(report.kind)

    audit = RefAudit(plugins=[Refs()], on_error="report")
    ref = audit.track("session")
    ref.inc()
    ref.dec()
    ref.dec()
    ref.dec()  # underflow: a finding, not an event
    assert seen == [("track", 1), ("inc", 2), ("dec", 1), ("release", 0)]
    assert reported == ["refcount-underflow"]
    audit.close()


# ----------------------------------------------------------------------------- robustness
def test_a_raising_plugin_becomes_a_plugin_error_and_others_still_run() -> None:
    class Broken:
        @hookimpl
        def memguard_alloc(self, heap, block):
            raise RuntimeError("broken plugin")

    rec = Recorder()
    heap = GuardedHeap(plugins=[Broken(), rec])
    p = heap.malloc(32)  # does not raise: the block exists, the error is deferred
    assert [b.address for b in rec.kinds("alloc")] == [p]
    err = heap.reports[-1]
    assert err.kind == "plugin-error"
    assert err.extra["plugin"].startswith("Broken@0x") and err.extra["hook"] == "memguard_alloc"
    assert "broken plugin" in err.message and "memguard_alloc" in err.message
    assert err.stack[0].name.endswith("memguard_alloc")  # the plugin's own frame
    assert [r.kind for r in rec.kinds("report")] == ["plugin-error"]
    with pytest.raises(memguard.PluginError, match="broken plugin"):
        heap.check()  # the deferred error is raised by the next check
    heap.free(p)  # the heap is intact
    assert heap.check() == []
    heap.close()


def test_a_raising_wrapper_is_named_too() -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def memguard_check(self, heap):
            yield
            raise ValueError("wrapper failed")

    heap = GuardedHeap(plugins=[Wrapper()], on_error="report")
    (err,) = heap.check()
    assert err.kind == "plugin-error" and err.extra["plugin"].startswith("Wrapper@") and err.extra["hook"] == "memguard_check"
    heap.close()


def test_a_raising_memguard_report_does_not_loop() -> None:
    class Loud:
        calls = 0

        @hookimpl
        def memguard_report(self, report):
            Loud.calls += 1
            raise RuntimeError("cannot report")

    heap = GuardedHeap(plugins=[Loud()], on_error="report")
    p = heap.malloc(8)
    heap.free(p)
    heap.free(p)
    assert Loud.calls == 1
    assert [r.kind for r in heap.reports] == ["double-free", "plugin-error"]
    heap.close()


def test_a_plugin_that_allocates_inside_hooks_is_not_reentered() -> None:
    class Hungry:
        def __init__(self) -> None:
            self.calls = 0
            self.mine: list[int] = []

        @hookimpl
        def memguard_alloc(self, heap, block):
            self.calls += 1
            self.mine.append(heap.malloc(block.size))  # re-enters the heap, not the hook

        @hookimpl
        def memguard_check(self, heap):
            heap.check()  # a nested check does not re-enter the plugins
            return []

    plugin = Hungry()
    heap = GuardedHeap(plugins=[plugin])
    ps = [heap.malloc(n) for n in (8, 16, 5000)]
    assert plugin.calls == 3 and len(plugin.mine) == 3
    assert heap.stats().live_blocks == 6
    assert heap.check() == []
    for p in ps + plugin.mine:
        heap.free(p)
    heap.close()


def test_configure_error_raises_under_raise_policy() -> None:
    class BadConfig:
        @hookimpl
        def memguard_configure(self, heap):
            raise KeyError("missing setting")

    heap = GuardedHeap()
    with pytest.raises(memguard.PluginError, match="memguard_configure"):
        heap.plugins.register(BadConfig())
    heap.close(check=False)


# ----------------------------------------------------------------------------- registration
def test_registration_validates_hook_names_and_arguments() -> None:
    class Typo:
        @hookimpl
        def memguard_aloc(self, heap, block):
            pass

    class BadArg:
        @hookimpl
        def memguard_alloc(self, heap, blok):
            pass

    heap = GuardedHeap()
    with pytest.raises(PluginValidationError, match="unknown hook.*memguard_aloc"):
        heap.plugins.register(Typo())
    with pytest.raises(PluginValidationError, match="blok"):
        heap.plugins.register(BadArg())
    with pytest.raises(TypeError):
        heap.plugins.register("not a plugin")
    rec = Recorder()
    heap.plugins.register(rec, name="rec")
    with pytest.raises(PluginValidationError, match="already registered"):
        heap.plugins.register(rec)
    assert "rec" in heap.plugins and rec in heap.plugins and len(heap.plugins) == 1
    with pytest.raises(ValueError):
        heap.plugins.unregister("nobody")
    heap.free(heap.malloc(8))
    seen = len(rec.kinds("alloc"))
    assert seen == 1
    heap.plugins.unregister("rec")
    assert heap.seams.on_alloc is None
    heap.free(heap.malloc(8))  # the fast paths no longer call it
    assert len(rec.kinds("alloc")) == seen
    heap.close()


def test_memguard_bufpool_event_sees_each_event_with_a_consistent_snapshot() -> None:
    seen: list[tuple[str, int | None, int, int]] = []

    class BudgetWatcher:
        @hookimpl
        def memguard_bufpool_event(self, pool, event, allocation, stats, live):
            seen.append((event, allocation.length if allocation else None, stats.used_bytes,
                         sum(a.nbytes for a in live)))

    heap = GuardedHeap(plugins=[BudgetWatcher()])
    pool = memguard.BufPool(buffer_size=64, max_memory=1024, heap=heap)
    a = pool.allocate(3)
    b = pool.allocate(1)
    a.release()
    b.release()
    pool.close()
    assert seen == [("allocate", 3, 192, 192), ("allocate", 1, 256, 256), ("release", 3, 64, 64),
                    ("release", 1, 0, 0), ("close", None, 0, 0)]
    heap.close()


@pytest.mark.parametrize("module_name", __import__("memguard_plugins").FIRST_PARTY)
def test_first_party_plugins_register_cleanly(module_name: str) -> None:
    module = importlib.import_module(module_name)
    heap = GuardedHeap()
    heap.plugins.register(module)
    heap.plugins.check_pending()
    # first-party plugins use only the public memguard names
    tree = ast.parse(Path(module.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("memguard"):
            assert node.module == "memguard", f"{module_name} imports {node.module}"
            assert all(alias.name in memguard.__all__ for alias in node.names)
    heap.close()


# ----------------------------------------------------------------------------- entry points
def test_entry_point_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "memguard_fake_plugin.py").write_text(textwrap.dedent(
        """
        import memguard
        seen = []

        @memguard.hookimpl
        def memguard_configure(heap):
            seen.append(heap.name)
        """
    ))
    monkeypatch.syspath_prepend(str(tmp_path))

    class FakeDist:
        metadata = {"name": "memguard-fake-plugin"}
        version = "1.0"
        entry_points = [
            importlib.metadata.EntryPoint("fake", "memguard_fake_plugin", "memguard"),
            importlib.metadata.EntryPoint("other", "json", "not-memguard"),
            importlib.metadata.EntryPoint("disabled", "memguard_fake_plugin_missing", "memguard"),
        ]

    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [FakeDist()])
    heap = GuardedHeap(name="process")
    assert load_entrypoint_plugins(heap, disabled=["disabled"]) == 1
    fake = importlib.import_module("memguard_fake_plugin")
    assert fake.seen == ["process"]
    assert heap.plugins.get_name(fake) == "fake"
    with pytest.raises(TypeError):
        load_entrypoint_plugins(heap, disabled="disabled")
    with pytest.raises(TypeError, match="a memguard checker"):
        load_entrypoint_plugins(object())
    heap.close()


# ----------------------------------------------------------------------------- tracing
def test_trace_env_prints_every_hook_call(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MEMGUARD_TRACE_PLUGINS", "1")
    heap = GuardedHeap(name="traced", plugins=[Recorder()])
    heap.free(heap.malloc(8))
    err = capsys.readouterr().err
    assert "memguard[traced]: memguard_configure(heap=" in err
    assert re.search(r"memguard\[traced\]: memguard_alloc\(heap=.*block=BlockInfo\(.*size=8", err)
    assert "memguard[traced]: memguard_free(" in err and "returned []" in err
    heap.plugins.trace(False)
    heap.free(heap.malloc(8))
    assert capsys.readouterr().err == ""
    heap.close()


def test_pluggy_is_the_engine() -> None:
    heap = GuardedHeap()
    assert isinstance(heap.plugins.pm, pluggy.PluginManager)
    assert heap.plugins.pm.project_name == "memguard"
    heap.close()


def test_memguard_manager_event_sees_every_change_with_its_stats() -> None:
    seen: list[tuple[str, str | None, int]] = []

    class Spy:
        @hookimpl
        def memguard_manager_event(self, manager, event, allocation_id, stats):
            seen.append((event, allocation_id, stats.allocated))

    heap = GuardedHeap(plugins=[Spy()])
    mm = memguard.MemoryManager(1 << 20, heap=heap, name="mm")
    aid, _ = mm.allocate(100)
    mm.create_pool("p", 64, initial_count=1)
    pid, _ = mm.allocate_from_pool("p")
    mm.return_to_pool("p", pid)
    mm.deallocate(aid)
    mm.garbage_collect()
    mm.close()
    heap.close()
    assert [e for e, _, _ in seen] == ["allocate", "create_pool", "allocate_from_pool", "return_to_pool",
                                       "deallocate", "garbage_collect"]
    assert seen[0] == ("allocate", aid, 100) and seen[4] == ("deallocate", aid, 64)
