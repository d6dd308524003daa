"""Usage errors of the pytest plugin: clean under xdist, and never from memguard's env var alone.

A bad ``$MEMGUARD_OPTIONS`` warns in a run that does not use memguard and is a usage
error in one that does; a bad ``memguard`` marker is the same usage error (exit status 4,
``ERROR: …``) with ``-n 2`` as without.
"""

from __future__ import annotations

import pytest

import memguard

pytest_plugins = ["pytester"]

BAD_MARKER = """
import pytest

@pytest.mark.memguard(redzone=17)
def test_a():
    pass

def test_b():
    pass
"""

USES_FIXTURE = """
def test_plain():
    pass

def test_heap(guarded_heap):
    guarded_heap.free(guarded_heap.malloc(8))
"""

MARKER_ERROR = (
    "ERROR: @pytest.mark.memguard on test_m.py::test_a: bad value 17 for 'redzone': "
    "expected a multiple of 16 from 16 to 2048"
)


@pytest.fixture(autouse=True)
def _no_process_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMGUARD_OPTIONS", raising=False)
    memguard.uninstall()


def test_bad_env_options_do_not_fail_a_plain_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMGUARD_OPTIONS", "bogus=1")
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*PytestConfigWarning: memguard is off for this run, MEMGUARD_OPTIONS is not valid*"])


def test_bad_env_options_fail_a_run_that_uses_memguard(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMGUARD_OPTIONS", "bogus=1")
    pytester.makepyfile(test_f=USES_FIXTURE)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: MEMGUARD_OPTIONS: unknown option 'bogus'*"])


def test_bad_env_options_with_memguard_asked_for_stay_an_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMGUARD_OPTIONS", "bogus=1")
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest("--memguard")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: MEMGUARD_OPTIONS: unknown option 'bogus'*"])


def test_bad_marker_is_the_same_usage_error_serially_and_under_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_m=BAD_MARKER)
    serial = pytester.runpytest_subprocess("-p", "no:xdist", timeout=60)
    assert serial.ret == pytest.ExitCode.USAGE_ERROR
    serial.stderr.fnmatch_lines([MARKER_ERROR])
    parallel = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", timeout=60)
    assert parallel.ret == pytest.ExitCode.USAGE_ERROR
    parallel.stderr.fnmatch_lines([MARKER_ERROR])
    assert "INTERNALERROR" not in parallel.stdout.str() + parallel.stderr.str()


def test_bad_env_options_under_xdist_are_a_clean_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    monkeypatch.setenv("MEMGUARD_OPTIONS", "bogus=1")
    pytester.makepyfile(test_f=USES_FIXTURE)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: MEMGUARD_OPTIONS: unknown option 'bogus'*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
