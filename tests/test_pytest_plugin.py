"""End-to-end tests of the pytest plugin (``memguard.pytest_plugin``) through ``pytester``."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import memguard
from pytest_samples import LEAKY
from report_schema import read_report

pytest_plugins = ["pytester"]


OVERFLOW = """
import ctypes, memguard

def test_overflow():
    p = memguard.malloc(16)
    ctypes.memset(p + 16, 0x41, 1)
    memguard.free(p)
"""


@pytest.fixture(autouse=True)
def _no_process_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each in-process run starts without a process heap and without $MEMGUARD_OPTIONS."""
    monkeypatch.delenv("MEMGUARD_OPTIONS", raising=False)
    memguard.uninstall()


# ----------------------------------------------------------------------------- --memguard
def test_leak_fails_with_one_line_reason_and_section(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LEAKY)
    result = pytester.runpytest("--memguard", "-rf")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "memguard: on (every test), leaks=fail*",
        "*_ test_leaks _*",
        "leaked 72 bytes in 3 blocks",
        "*- memguard -*",
        "Direct leak of 72 byte(s) in 3 object(s) allocated from:",
        "    #0 *test_x.py:4 in helper",
        "    #1 *test_x.py:8 in test_leaks",
        "SUMMARY: memguard: 72 byte(s) leaked in 3 allocation(s).",
        "*= memguard =*",
        "tests checked: 2; failed by memguard: 1",
        "findings: memory-leak: 1",
        "top leaking sites:",
        "  72 bytes in 3 blocks (1 test) at test_x.py:4 in helper",
        "FAILED test_x.py::test_leaks - leaked 72 bytes in 3 blocks",
    ])
    # Trimmed: no pytest or pluggy frames in the stacks.
    assert "/_pytest/" not in result.stdout.str() and "/pluggy/" not in result.stdout.str()


def test_overflow_reason_and_hexdump(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=OVERFLOW)
    result = pytester.runpytest("--memguard")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "heap-buffer-overflow: 1 byte past a 16-byte block",
        "*ERROR: memguard: heap-buffer-overflow on address 0x*",
        "allocated (allocation #*) here:",
        "    #0 *test_x.py:4 in test_overflow",
        "*[41]*",
        "findings: heap-buffer-overflow: 1",
    ])


def test_clean_suite_has_zero_findings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="""
        import memguard, pytest

        @pytest.fixture(scope="module")
        def buf():
            p = memguard.malloc(64)
            yield p
            memguard.free(p)

        def test_a(buf):
            memguard.free(memguard.calloc(4, 8))

        def test_b(buf):
            q = memguard.realloc(memguard.malloc(8), 32)
            memguard.free(q)
    """)
    result = pytester.runpytest("--memguard")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["tests checked: 2; failed by memguard: 0", "findings: none"])


def test_corruption_raised_in_the_test_is_a_normal_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="""
        def test_double(guarded_heap):
            p = guarded_heap.malloc(16)
            guarded_heap.free(p)
            guarded_heap.free(p)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "INTERNALERROR" not in out
    assert "heap.py" not in out  # the heap's own frames are cut from the traceback
    result.stdout.fnmatch_lines([
        ">       guarded_heap.free(p)",
        "E       memguard.errors.DoubleFreeError: double-free: *",
        "*- memguard -*",
        "previously freed here:",
        "    #0 *test_x.py:3 in test_double",
    ])


def test_caught_error_is_not_a_finding(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="""
        import pytest, memguard

        def test_expects_it(guarded_heap):
            p = guarded_heap.malloc(16)
            guarded_heap.free(p)
            with pytest.raises(memguard.DoubleFreeError):
                guarded_heap.free(p)
    """)
    pytester.runpytest().assert_outcomes(passed=1)


def test_plugin_disabled_cleanly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LEAKY)
    result = pytester.runpytest("-p", "no:memguard")
    result.assert_outcomes(passed=2)
    assert "memguard:" not in result.stdout.str()
    result = pytester.runpytest("-p", "no:memguard", "--memguard")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --memguard*"])


def test_off_by_default_costs_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LEAKY)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    assert memguard.process_heap() is None or "tests checked" not in result.stdout.str()
    result.stdout.no_fnmatch_line("*= memguard =*")


# ----------------------------------------------------------------------------- entry-point plugins
PLUGIN_NAMES = """
import json, memguard

def test_names():
    heap = memguard.process_heap()
    with open("plugins.json", "w") as fh:
        json.dump(sorted(heap.plugins.get_name(p) for p in heap.plugins), fh)
"""


def test_first_party_plugins_load_unless_disabled_by_name(pytester: pytest.Pytester) -> None:
    # the first-party plugins this installation declares (an editable install declares
    # the ones of its last install)
    declared = sorted(ep.name for ep in importlib.metadata.entry_points(group="memguard")
                      if ep.value.startswith("memguard_plugins."))
    assert "pool_invariants" in declared
    pytester.makepyfile(test_x=PLUGIN_NAMES)
    names = pytester.path / "plugins.json"
    pytester.runpytest("--memguard").assert_outcomes(passed=1)
    assert json.loads(names.read_text()) == declared
    memguard.uninstall()
    disable = [arg for name in declared for arg in ("--memguard-disable-plugin", name)]
    result = pytester.runpytest("--memguard", *disable, "--memguard-options=disable_plugins=other")
    result.assert_outcomes(passed=1)
    assert json.loads(names.read_text()) == []
    result.stdout.fnmatch_lines(["memguard: on (every test), *disable_plugins=('other', *'pool_invariants'*)*"])


# ----------------------------------------------------------------------------- options, ini, precedence
def test_ini_keys(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LEAKY)
    pytester.makeini("""
        [pytest]
        memguard = true
        memguard_leaks = warn
        memguard_options = redzone=32:stack_depth=4
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines([
        "memguard: on (every test), leaks=warn, options=redzone=32:stack_depth=4",
        "*MemguardLeakWarning: test_x.py::test_leaks: leaked 72 bytes in 3 blocks",
    ])


def test_precedence_marker_over_cli_over_ini_over_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMGUARD_OPTIONS", "redzone=64:stack_depth=2")
    pytester.makeini("""
        [pytest]
        memguard_leaks = ignore
        memguard_options = redzone=32
    """)
    pytester.makepyfile(test_x="""
        import memguard, pytest

        def test_plain():
            memguard.malloc(8)

        @pytest.mark.memguard(leaks="ignore")
        def test_marked():
            memguard.malloc(8)
    """)
    result = pytester.runpytest("--memguard", "--memguard-leaks=fail", "--memguard-options=stack_depth=3")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        # env < ini < command line, key by key
        "memguard: on (every test), leaks=fail, options=redzone=32:stack_depth=3",
        "FAILED test_x.py::test_plain - leaked 8 bytes in 1 block",
    ])


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--memguard-leaks=maybe"], "", "*--memguard-leaks: expected one of fail, warn, ignore, got 'maybe'*"),
        ([], "memguard_leaks = often", "*memguard_leaks (ini): expected one of fail, warn, ignore*"),
        ([], "memguard = perhaps", "*memguard (ini): expected a boolean*"),
        (["--memguard-options=redzone=7"], "", "*--memguard-options: bad value '7' for option 'redzone'*"),
        (["--memguard-options=bogus=1"], "", "*--memguard-options: unknown option 'bogus'*"),
        ([], "memguard_options = nokey", "*memguard_options (ini): expected key=value*"),
        (["--memguard-suppressions=/nonexistent/supp.txt"], "", "*suppressions*nonexistent*"),
    ],
)
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], ini: str, message: str) -> None:
    pytester.makepyfile(test_x="def test_a(): pass")
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_env_options_are_usage_errors(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMGUARD_OPTIONS", "stack_depth=lots")
    pytester.makepyfile(test_x="def test_a(): pass")
    result = pytester.runpytest("--memguard")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*MEMGUARD_OPTIONS: bad value 'lots' for option 'stack_depth'*"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("memguard(leaks='sometimes')", "*memguard on test_x.py::test_a: leaks: expected one of*"),
        ("memguard(colour='red')", "*memguard on test_x.py::test_a: unknown argument 'colour'*"),
        ("memguard(redzone=3)", "*memguard on test_x.py::test_a: bad value 3 for 'redzone'*"),
        ("memguard_growth()", "*memguard_growth on test_x.py::test_a: max_bytes is required*"),
        ("memguard_growth('lots')", "*memguard_growth on test_x.py::test_a: max_bytes: expected a size*"),
        ("memguard_growth(100, runs=1)", "*runs must be an int >= 2*"),
    ],
)
def test_bad_markers_are_usage_errors(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(test_x=f"import pytest\n@pytest.mark.{marker}\ndef test_a(): pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_suppressions_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LEAKY)
    supp = pytester.path / "supp.txt"
    supp.write_text("leak:helper\n")
    result = pytester.runpytest("--memguard", f"--memguard-suppressions={supp}")
    result.assert_outcomes(passed=2)


# ----------------------------------------------------------------------------- fixtures and markers
def test_fixtures_opt_in_without_memguard(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="""
        def test_heap_leak(guarded_heap):
            guarded_heap.malloc(40)

        def test_heap_clean(guarded_heap):
            guarded_heap.free(guarded_heap.malloc(40))

        def test_refs(ref_audit):
            ref_audit.track(object(), name="widget")

        def test_refs_clean(ref_audit):
            ref_audit.track(object(), name="widget").dec()
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "FAILED test_x.py::test_heap_leak - leaked 40 bytes in 1 block",
        "FAILED test_x.py::test_refs - refcount-leak: widget@0x* has 1/1 users",
    ])


def test_marker_opts_in_and_configures_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="""
        import memguard, pytest

        @pytest.mark.memguard
        def test_marked():
            memguard.malloc(8)

        def test_unmarked():
            memguard.malloc(8)

        @pytest.mark.memguard(redzone=64, stack_depth=2)
        def test_options(guarded_heap):
            assert guarded_heap.redzone == 64 and guarded_heap.stack_depth == 2

        @pytest.mark.memguard(leaks="warn")
        def test_warn(guarded_heap):
            guarded_heap.malloc(8)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=3, failed=1, warnings=1)
    result.stdout.fnmatch_lines(["FAILED test_x.py::test_marked - leaked 8 bytes in 1 block"])


def test_session_level_leak_fails_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="""
        import memguard
        KEEP = memguard.malloc(100)   # at import time: outside any test

        def test_a():
            pass
    """)
    result = pytester.runpytest("--memguard")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "FAILED (outside any test): leaked 100 bytes in 1 block",
        "Direct leak of 100 byte(s) in 1 object(s) allocated from:",
        "    #0 *test_x.py:2 in <module>",
    ])
    assert memguard.process_heap() is None  # uninstalled: no exit dump repeats it


def test_growth_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="""
        import ctypes, pytest
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        KEEP = []

        @pytest.mark.memguard_growth("64 KiB", runs=4, warmup=1)
        def test_leaks_natively():
            KEEP.append(libc.malloc(100_000))
            ctypes.memset(KEEP[-1], 1, 100_000)

        @pytest.mark.memguard_growth(64 << 10)
        def test_steady():
            b = bytearray(100_000)
            del b
    """)
    result = pytester.runpytest("-rf")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "native memory grew by * bytes over 4 runs (4 of 4 runs grew: steady); the limit is 65536 bytes",
        "*run phase*bytes*change",
        "*0 before*",
        "*1 warm-up*",
        "*5 measured*",
        "FAILED test_x.py::test_leaks_natively - *native memory grew by *",
    ])


# ----------------------------------------------------------------------------- JSON, xdist
def test_json_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LEAKY + OVERFLOW.replace("import ctypes, memguard", "import ctypes"))
    out = pytester.path / "out" / "mg.json"
    result = pytester.runpytest("--memguard", f"--memguard-report={out}")
    result.assert_outcomes(passed=1, failed=2)
    doc = read_report(out)
    assert doc["schema"] == "memguard.pytest-report"
    assert doc["versions"]["memguard"] == memguard.__version__
    tests = {t["nodeid"]: t for t in doc["tests"]}
    assert set(tests) == {"test_x.py::test_leaks", "test_x.py::test_clean", "test_x.py::test_overflow"}
    leak = tests["test_x.py::test_leaks"]
    assert (leak["failed"], leak["leaked_bytes"], leak["leaked_blocks"]) == (True, 72, 3)
    assert leak["leaks"][0]["stack"][0]["name"] == "helper"
    assert tests["test_x.py::test_overflow"]["findings"][0]["kind"] == "heap-buffer-overflow"
    clean = tests["test_x.py::test_clean"]
    assert set(clean) == set(leak) == set(tests["test_x.py::test_overflow"])
    assert (clean["failed"], clean["findings"], clean["leaks"], clean["leaked_bytes"]) == (False, [], [], 0)
    assert (clean["allocations"], clean["allocated_bytes"], clean["peak_bytes"]) == (1, 16, 16)
    assert (leak["allocations"], leak["allocated_bytes"], leak["peak_bytes"]) == (3, 72, 72)
    assert clean["duration"] > 0
    assert doc["created"].endswith("Z")
    totals = doc["totals"]
    assert totals["tests_checked"] == 3 and totals["tests_failed"] == 2
    assert totals["findings_by_kind"] == {"heap-buffer-overflow": 1, "memory-leak": 1}


def test_xdist_two_workers_aggregate(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    body = "\n".join(
        f"def test_leak_{i}():\n    helper({8 * (i + 1)})\n\ndef test_ok_{i}():\n    memguard.free(memguard.malloc(8))\n"
        for i in range(4)
    )
    pytester.makepyfile(test_x="import memguard\n\ndef helper(n):\n    return memguard.malloc(n)\n\n" + body)
    out = pytester.path / "mg.json"
    result = pytester.runpytest_subprocess("-n", "2", "--memguard", f"--memguard-report={out}", "-p", "xdist")
    result.assert_outcomes(passed=4, failed=4)
    result.stdout.fnmatch_lines([
        "tests checked: 8; failed by memguard: 4",
        "  80 bytes in 4 blocks (4 tests) at test_x.py:4 in helper",
    ])
    doc = read_report(out)
    assert doc["workers"] == 2
    assert len(doc["tests"]) == 8
    assert doc["totals"]["leaked_bytes"] == 80


# ----------------------------------------------------------------------------- benchmark
def test_benchmark_quick_runs() -> None:
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_pytest.py"
    proc = subprocess.run([sys.executable, str(bench), "--quick"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MEMGUARD_OPTIONS": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio --memguard / plain" in proc.stdout


def test_leak_is_charged_even_when_the_test_also_frees_an_older_block(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_swap="""
        import memguard

        OLD = []

        def test_makes_old():
            OLD.append(memguard.malloc(8))

        def test_swaps():
            memguard.free(OLD.pop())   # the live-block count is unchanged...
            memguard.malloc(40)        # ...but this block leaks
        """
    )
    result = pytester.runpytest("--memguard", "-rf")
    result.assert_outcomes(passed=0, failed=2)
    result.stdout.fnmatch_lines(["*test_swaps*leaked 40 bytes in 1 block*"])


def test_private_pytest_apis_are_used_only_where_the_code_says_why() -> None:
    """Each use of a pytest private API sits in one small function that explains it."""
    allowed = {"_run_protocol", "_crash_location", "_test_argnames"}
    root = Path(memguard.__file__).resolve().parent
    uses: list[tuple[str, str, str]] = []

    def visit(node: ast.AST, where: str, path: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            private = (
                isinstance(child, ast.ImportFrom) and (child.module or "").startswith("_pytest")
                or isinstance(child, ast.Import) and any(a.name.startswith("_pytest") for a in child.names)
                or isinstance(child, ast.Attribute) and child.attr in {
                    "_fixtureinfo", "_excinfo", "_repr_failure_py", "_pyfuncitem", "_request"}
            )
            if private:
                uses.append((path, inner, ast.dump(child)[:60]))
            visit(child, inner, path)

    for path in sorted(root.glob("pytest_*.py")):
        visit(ast.parse(path.read_text()), "<module>", path.name)
    assert uses, "the plugin needs pytest's runtestprotocol: one private use is expected"
    assert {where for _, where, _ in uses} <= allowed, uses
    for name in allowed:
        assert sum(1 for _, where, _ in uses if where == name) == 1, name
