"""The pytest plugin as a new user meets it: what a run says, counts and writes (issue 12)."""

from __future__ import annotations

import json
import textwrap

import pytest

import memguard
from memguard.reporting.limits import format_size
from memguard.reporting.verdicts import parse_size
from pytest_samples import LEAKY
from report_schema import read_report

pytest_plugins = ["pytester"]



@pytest.fixture(autouse=True)
def _no_process_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each in-process run starts without a process heap and without $MEMGUARD_OPTIONS."""
    monkeypatch.delenv("MEMGUARD_OPTIONS", raising=False)
    memguard.uninstall()


# ----------------------------------------------------------------------------- 1. not asked for
def test_without_memguard_one_line_and_no_exit_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LEAKY)
    result = pytester.runpytest_subprocess()
    assert result.ret == 0
    result.assert_outcomes(passed=2)
    lines = [line for line in result.stdout.lines + result.stderr.lines if "memguard" in line.lower()]
    assert lines[-1] == ("memguard: the process heap has 3 blocks (72 bytes) still allocated at the end of the "
                         "run; run pytest --memguard to check each test")
    assert "Direct leak" not in result.stdout.str() + result.stderr.str()


def test_marker_only_runs_end_with_the_same_line_for_the_unchecked_tests(pytester: pytest.Pytester) -> None:
    """Only a marked test is checked: the blocks the other tests left are one line, not an exit report."""
    pytester.makepyfile(test_x=("import pytest\n" + LEAKY +
                                "\n@pytest.mark.memguard\ndef test_marked():\n    memguard.free(memguard.malloc(8))\n"))
    result = pytester.runpytest_subprocess()
    assert result.ret == 0
    result.assert_outcomes(passed=3)
    out = result.stdout.str() + result.stderr.str()
    assert "tests checked: 1" in out
    assert ("memguard: the process heap has 3 blocks (72 bytes) still allocated at the end of the "
            "run; run pytest --memguard to check each test") in out
    assert "Direct leak" not in out


def test_plugin_disabled_exit_report_hides_framework_frames(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LEAKY)
    result = pytester.runpytest_subprocess("-p", "no:memguard")
    result.assert_outcomes(passed=2)
    err = result.stderr.str()
    result.stderr.fnmatch_lines([
        "Direct leak of 72 byte(s) in 3 object(s) allocated from:",
        "    #0 *test_x.py:4 in helper",
        "    #1 *test_x.py:8 in test_leaks",
        "SUMMARY: memguard: 72 byte(s) leaked in 3 allocation(s).",
    ])
    for framework in ("/_pytest/", "/pluggy/", "runpy", "importlib"):
        assert framework not in err


def test_full_stacks_shows_framework_frames(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LEAKY)
    hidden = pytester.runpytest("--memguard")
    assert "/_pytest/" not in hidden.stdout.str() and "/pluggy/" not in hidden.stdout.str()
    shown = pytester.runpytest("--memguard", "--memguard-full-stacks", "--memguard-options=stack_depth=16")
    shown.assert_outcomes(passed=1, failed=1)
    shown.stdout.fnmatch_lines([
        "Direct leak of 72 byte(s) in 3 object(s) allocated from:",
        "    #0 *test_x.py:4 in helper",
        "    #1 *test_x.py:8 in test_leaks",
        "    #2 */_pytest/python.py:* in *",
    ])
    assert "/pluggy/" in shown.stdout.str()


# ----------------------------------------------------------------------------- 2. fixture leaks
def test_module_fixture_leak_is_an_error_where_pytest_tears_the_fixture_down(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="""
        import memguard, pytest

        @pytest.fixture(scope="module")
        def buf():
            yield memguard.malloc(64)

        def test_a(buf):
            pass

        def test_b(buf):
            memguard.free(memguard.malloc(8))

        def test_after():
            pass
    """)
    result = pytester.runpytest("--memguard", "-rE")
    result.assert_outcomes(passed=3, errors=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*_ ERROR at teardown of test_after _*",
        "fixture 'buf' (module scope) leaked 64 bytes in 1 block",
        "*- memguard -*",
        "Direct leak of 64 byte(s) in 1 object(s) allocated from:",
        "    #0 *test_x.py:5 in buf",
        "ERROR test_x.py::test_after - fixture 'buf'*",
        "*3 passed, 1 error*",
    ])
    assert "outside any test" not in result.stdout.str()


def test_a_fixture_is_charged_only_its_own_blocks(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import memguard, pytest

        @pytest.fixture(scope="session")
        def shared():
            p = memguard.malloc(32)
            yield p
            memguard.free(p)
    """)
    pytester.makepyfile(test_x="""
        import memguard, pytest

        @pytest.fixture(scope="module")
        def mod(shared):
            memguard.malloc(8)
            p = memguard.malloc(16)
            yield p

        def test_a(mod):
            pass
    """, test_y="def test_b(shared):\n    pass\n")
    result = pytester.runpytest("--memguard")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["fixture 'mod' (module scope) leaked 24 bytes in 2 blocks"])
    assert "32 byte" not in result.stdout.str()


# ----------------------------------------------------------------------------- 3. suppressions
def test_suppressions_used_table_and_json_count(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LEAKY)
    supp = pytester.path / "supp.txt"
    supp.write_text("leak:helper\n")
    out = pytester.path / "mg.json"
    result = pytester.runpytest("--memguard", f"--memguard-suppressions={supp}", f"--memguard-report={out}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*= memguard =*",
        "Suppressions used:",
        "  count      bytes template",
        "      3         72 leak:helper",
    ])
    doc = read_report(out)
    assert doc["totals"]["suppressed"] == 3
    assert doc["suppressions"] == [{"rule": "leak:helper", "rule_file": str(supp), "rule_line": 1,
                                    "count": 3, "bytes": 72}]


# ----------------------------------------------------------------------------- 5. limits
LIMITED = """
import memguard, pytest

@pytest.mark.memguard(max_peak="1 KiB")
def test_big():
    p = memguard.malloc(4096)
    memguard.free(p)

@pytest.mark.memguard(max_allocations=2)
def test_many():
    for _ in range(3):
        memguard.free(memguard.malloc(8))

@pytest.mark.memguard(max_peak="24 MiB", max_allocations=10)
def test_within():
    memguard.free(memguard.malloc(4096))
"""


def test_marker_limits_fail_with_memray_shaped_text(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LIMITED)
    out = pytester.path / "mg.json"
    result = pytester.runpytest(f"--memguard-report={out}", "-rf")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*_ test_big _*",
        "Test was limited to 1.0KiB but peaked at 4.0KiB",
        "*- memguard -*",
        "Test was limited to 1.0KiB but peaked at 4.0KiB",
        "List of allocations:",
        "    - 4.0KiB in 1 block(s) allocated here:",
        "        #0 *test_x.py:5 in test_big",
        "FAILED test_x.py::test_big - Test was limited to 1.0KiB but peaked at 4.0KiB",
        "FAILED test_x.py::test_many - Test was limited to 2 allocations but made 3",
    ])
    tests = {t["nodeid"].split("::")[1]: t for t in read_report(out)["tests"]}
    assert tests["test_big"]["limit_failures"] == ["Test was limited to 1.0KiB but peaked at 4.0KiB"]
    assert (tests["test_big"]["peak_bytes"], tests["test_many"]["allocations"]) == (4096, 3)
    assert tests["test_within"]["failed"] is False


def test_ini_limits_are_per_test_and_markers_override_them(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmemguard_max_peak = 2500\nmemguard_max_allocations = 5\n")
    pytester.makepyfile(test_x="""
        import memguard, pytest

        keep = []

        def test_first():
            memguard.free(memguard.malloc(2400))

        def test_second():
            keep.append(memguard.malloc(2000))

        def test_third():
            memguard.free(keep.pop())
            memguard.free(memguard.malloc(2400))

        @pytest.mark.memguard(max_peak="1 MiB")
        def test_raised():
            memguard.free(memguard.malloc(100_000))

        def test_over():
            memguard.free(memguard.malloc(3000))
    """)
    result = pytester.runpytest("--memguard", "--memguard-leaks=ignore", "-rf")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_x.py::test_over - Test was limited to 2.4KiB but peaked at 2.9KiB"])


@pytest.mark.parametrize(("ini", "marker", "args", "message"), [
    ("", "memguard(max_peak='lots')", [],
     "*@pytest.mark.memguard on test_x.py::test_a: max_peak: expected a size*got 'lots'"),
    ("", "memguard(max_allocations=-1)", [],
     "*@pytest.mark.memguard on test_x.py::test_a: max_allocations: expected a number of allocations*"),
    ("memguard_max_peak = big", "memguard", [], "*memguard_max_peak (ini): expected a size*got 'big'"),
    ("memguard_max_allocations = 1.5", "memguard", [], "*memguard_max_allocations (ini): expected a number*"),
    ("", "memguard", ["--memguard-top=0"], "*--memguard-top: expected a number of tests*got '0'"),
])
def test_bad_limits_are_usage_errors(pytester: pytest.Pytester, ini: str, marker: str, args: list[str],
                                     message: str) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_x=f"import pytest\n@pytest.mark.{marker}\ndef test_a(): pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: " + message])


def test_sizes_and_their_rendering() -> None:
    assert parse_size("24 MiB", "x") == parse_size("24MiB", "x") == 24 << 20
    assert parse_size("1.5 GB", "x") == 1_500_000_000
    assert parse_size(4096, "x") == 4096
    assert format_size(24 << 20) == "24.0MiB" and format_size(int(31.2 * 2**20)) == "31.2MiB"


def test_top_lists_the_most_allocating_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="""
        import memguard

        def test_small():
            memguard.free(memguard.malloc(100))

        def test_large():
            for _ in range(4):
                memguard.free(memguard.malloc(5000))

        def test_medium():
            memguard.free(memguard.malloc(3000))
    """)
    result = pytester.runpytest("--memguard", "--memguard-top=2")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "top 2 allocating tests (bytes allocated, allocations, peak):",
        "     19.5KiB        4 allocations, peak 4.9KiB: test_x.py::test_large",
        "      2.9KiB        1 allocation, peak 2.9KiB: test_x.py::test_medium",
    ])
    assert "test_x.py::test_small" not in result.stdout.str().split("top 2 allocating tests")[1]


def test_fail_on_increase_against_a_saved_report(pytester: pytest.Pytester) -> None:
    body = "import memguard\n\ndef test_grows():\n    memguard.free(memguard.malloc({n}))\n\n" \
           "def test_same():\n    memguard.free(memguard.malloc(64))\n"
    pytester.makepyfile(test_x=body.format(n=64))
    prev = pytester.path / "prev.json"
    pytester.runpytest("--memguard", f"--memguard-report={prev}").assert_outcomes(passed=2)
    read_report(prev)
    pytester.makepyfile(test_x=body.format(n=128))
    result = pytester.runpytest("--memguard", f"--memguard-fail-on-increase={prev}", "-rf")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_x.py::test_grows - peak grew from 64.0B to 128.0B since prev.json"])


def test_fail_on_increase_with_a_bad_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_a(): pass\n")
    bad = pytester.path / "bad.json"
    bad.write_text(json.dumps({"schema": "memguard.exit-report"}))
    result = pytester.runpytest("--memguard", f"--memguard-fail-on-increase={bad}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --memguard-fail-on-increase: *bad.json: not a memguard pytest report*"])


# ----------------------------------------------------------------------------- 6. ini paths
def test_ini_paths_are_relative_to_the_ini_file(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nmemguard_suppressions = supp.txt\nmemguard_report = out/mg.json\n")
    (pytester.path / "supp.txt").write_text("leak:helper\n")
    sub = pytester.mkdir("tests")
    (sub / "test_x.py").write_text(textwrap.dedent(LEAKY))
    monkeypatch.chdir(sub)
    result = pytester.runpytest("--memguard")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["      3         72 leak:helper"])
    assert read_report(pytester.path / "out" / "mg.json")["totals"]["suppressed"] == 3


def test_a_missing_ini_path_names_the_ini_key(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nmemguard_suppressions = missing.txt\n")
    sub = pytester.mkdir("tests")
    (sub / "test_x.py").write_text("def test_a(): pass\n")
    monkeypatch.chdir(sub)
    result = pytester.runpytest("--memguard")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: memguard_suppressions (ini): cannot load '{pytester.path / 'missing.txt'}'*"])


def test_the_documented_json_example_follows_the_schema() -> None:
    import re
    from pathlib import Path

    from report_schema import validate

    text = (Path(__file__).resolve().parent.parent / "docs" / "pytest.md").read_text()
    section = text.split("## JSON report", 1)[1]
    example = re.search(r"```json\n(.*?)```", section, re.S)
    assert example is not None
    validate(json.loads(example.group(1)))


def test_the_documented_limits_example_passes(pytester: pytest.Pytester) -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "pytest.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", text.split("## Limits", 1)[1], re.S)
    assert snippet is not None
    pytester.makepyfile(test_doc=snippet.group(1))
    result = pytester.runpytest("--memguard", "--memguard-top=1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*4.0KiB*1 allocation, peak 4.0KiB: test_doc.py::test_parse_small_file"])


def test_peak_windows_and_bytes_allocated() -> None:
    heap = memguard.GuardedHeap()
    try:
        keep = heap.malloc(100)
        heap.free(heap.malloc(1000))
        assert heap.reset_peak() == 1100
        assert heap.allocated_bytes == 1100
        heap.free(heap.malloc(50))
        assert heap.reset_peak() == 150  # the new window started at the 100 bytes live
        assert heap.stats().peak_bytes == 1100  # the all-time peak is kept
        heap.free(keep)
    finally:
        heap.close(check=False)
    assert heap.allocated_bytes == 0
