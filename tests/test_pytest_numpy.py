"""``pytest --memguard-numpy``: every array of the run on the process heap, leaks judged by reachability."""

from __future__ import annotations

import pytest

pytest.importorskip("numpy")

from memguard.native import trampoline  # noqa: E402

pytest_plugins = ["pytester"]

SAMPLE = '''
import ctypes
import numpy as np
import pytest

CACHE = {}


@pytest.fixture(scope="session")
def big():
    return np.ones(1000)


def test_clean(big):
    a = np.arange(100) * 2
    assert a.sum() == 9900 and big.sum() == 1000


def test_cached_in_a_module_global():
    CACHE["x"] = np.zeros(10)


def test_reference_leaked_in_c():
    a = np.ones(7)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(a))


def test_overflow():
    a = np.zeros(3)
    ctypes.memset(a.ctypes.data + a.nbytes, 1, 1)


def test_error_path():
    with pytest.raises(ValueError, match="could not convert"):
        np.array(["a"], dtype=float)


def test_threads():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        assert list(ex.map(lambda n: np.ones(n).sum(), range(50)))[-1] == 49
'''

COUNT_WALKS = '''
import memguard.reachability as r

WALKS = []
_walk = r.reachable_blocks


def counting(*args, **kwargs):
    WALKS.append(1)
    return _walk(*args, **kwargs)


r.reachable_blocks = counting


def pytest_unconfigure(config):
    print(f"WALKS={len(WALKS)}")
'''


def line_of(text: str) -> int:
    """The line of SAMPLE (as written to test_np.py) that contains ``text``."""
    return next(i for i, line in enumerate(SAMPLE.lstrip("\n").splitlines(), 1) if text in line)


@pytest.fixture(autouse=True)
def _built() -> None:
    if not trampoline.available():
        pytest.skip(f"--memguard-numpy needs the trampolines: {trampoline.unavailable_reason()}")


def test_arrays_are_checked_and_reachable_ones_are_not_leaks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_np=SAMPLE)
    result = pytester.runpytest_subprocess("--memguard-numpy", "-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=4, failed=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["memguard: on (every test), *numpy=on (every array on the process heap)*"])
    result.stdout.fnmatch_lines([
        "*_ test_reference_leaked_in_c _*",
        "leaked 56 bytes in 1 block",
        "Direct leak of 56 byte(s) in 1 object(s) allocated from:",
        f"*test_np.py:{line_of('a = np.ones(7)')} in test_reference_leaked_in_c",
    ])
    result.stdout.fnmatch_lines(["*heap-buffer-overflow*", "allocated (allocation #*) here:",
                                 f"    #0 *test_np.py:{line_of('a = np.zeros(3)')} in test_overflow"])
    assert "outside any test" not in out  # the session fixture and the cached array are retained
    assert "SystemError" not in out and "Exception ignored" not in out


def test_the_ini_key_implies_memguard(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmemguard_numpy = true\n")
    pytester.makepyfile(test_ini='''
import memguard
import numpy as np
import memguard.numpy


def test_on_the_heap():
    assert memguard.numpy.installed() is memguard.process_heap()
    a = np.ones(3)
    assert memguard.process_heap().block(a.ctypes.data).size == 24


def test_plain_leak():
    memguard.malloc(10)
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*FAILED test_ini.py::test_plain_leak - leaked 10 bytes in 1 block*"])


def test_the_gc_walk_runs_only_when_a_test_leaves_candidates(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(COUNT_WALKS)
    pytester.makepyfile(test_walks='''
import numpy as np

KEPT = []


def test_a():
    assert np.ones(10).sum() == 10


def test_b():
    np.sort(np.arange(100)[::-1])
''')
    clean = pytester.runpytest_subprocess("--memguard-numpy", "-p", "no:cacheprovider", "-s")
    clean.assert_outcomes(passed=2)
    clean.stdout.fnmatch_lines(["WALKS=0"])
    pytester.makepyfile(test_walks2='''
import numpy as np
from test_walks import KEPT


def test_keeps():
    KEPT.append(np.ones(3))
''')
    kept = pytester.runpytest_subprocess("--memguard-numpy", "-p", "no:cacheprovider", "-s")
    kept.assert_outcomes(passed=3)
    kept.stdout.fnmatch_lines(["WALKS=2"])  # after test_keeps, and at the end of the session


def test_refused_without_the_trampolines(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(trampoline.ENV_VAR, "1")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--memguard-numpy", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--memguard-numpy: memguard.numpy needs memguard's exception-preserving*"])
