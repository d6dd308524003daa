"""NumPy's own tests under ``pytest --memguard-numpy``: zero findings, the same outcomes as a plain run.

A few hundred of them, chosen to cover array creation and methods, error paths and
threads.  Both runs are subprocesses (NumPy's handler and the process heap are
per-process), outside coverage (its tracer would slow NumPy's tests down several times).
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

from memguard.native import trampoline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(np.__file__).parent / "_core" / "tests"
#: Creation and methods (test_multiarray's classes, test_shape_base), error paths, threads.
SELECTION = [
    "test_multiarray.py::TestCreation",
    "test_multiarray.py::TestMethods",
    "test_multiarray.py::TestResize",
    "test_shape_base.py",
    "test_indexerrors.py",
    "test_multithreading.py",
]
#: The slowest few (seconds each under memguard), covered by the benchmark instead.
DESELECT = [
    "test_multiarray.py::TestMethods::test_partition",
    "test_multiarray.py::TestMethods::test_partition_fuzz",
    "test_multiarray.py::TestMethods::test_sort_degraded",
]


def _outcomes(xml: Path) -> dict[str, str]:
    outcomes = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = kinds[0] if kinds else "passed"
    return outcomes


def _start(tmp_path: Path, name: str, *options: str) -> tuple[subprocess.Popen[str], Path]:
    xml = tmp_path / f"{name}.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "MEMGUARD", "COV_CORE"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    deselect = [arg for d in DESELECT for arg in ("--deselect", str(TESTS / d))]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *deselect,
         f"--junitxml={xml}", *options, *(str(TESTS / s) for s in SELECTION)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    return proc, xml


def _finish(proc: subprocess.Popen[str], xml: Path) -> tuple[dict[str, str], str]:
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    # 0 or 1 (a test of NumPy's failing alike in both runs is compared below); not a crash.
    assert proc.returncode in (0, 1), out[-3000:] + err[-3000:]
    return _outcomes(xml), out


def test_numpys_own_tests_under_memguard_numpy(tmp_path: Path) -> None:
    if not trampoline.available():
        pytest.skip(f"--memguard-numpy needs the trampolines: {trampoline.unavailable_reason()}")
    if not (TESTS / "test_multiarray.py").exists():
        pytest.skip(f"this NumPy ships without its tests ({TESTS})")
    runs = [_start(tmp_path, "plain"), _start(tmp_path, "guarded", "--memguard-numpy")]
    (plain, _), (guarded, out) = [_finish(*run) for run in runs]
    assert len(plain) >= 300
    assert guarded == plain, {k: (plain.get(k), guarded.get(k)) for k in plain.keys() | guarded.keys()
                              if plain.get(k) != guarded.get(k)}
    assert "failed by memguard: 0" in out and "findings: none" in out, out[-3000:]
    assert "SystemError" not in out and "outside any test" not in out
