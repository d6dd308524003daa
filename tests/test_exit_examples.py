"""examples/leaky.py, overflow.py and suppressed.py, run the way the README shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = shutil.which("memguard", path=os.path.dirname(sys.executable))


@pytest.fixture(params=["console-script", "python-m"])
def launcher(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "console-script":
        if not SCRIPT:
            pytest.skip("the memguard console script is not installed (pip install -e .)")
        return [SCRIPT]
    return [sys.executable, "-m", "memguard"]


def run(launcher: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEMGUARD_OPTIONS"}
    return subprocess.run([*launcher, "run", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)


def test_leaky(launcher: list[str]) -> None:
    r = run(launcher, "examples/leaky.py")
    assert r.returncode == 23 and r.stdout == "processed 3 records True\n"
    err = r.stderr
    first = err.index("Direct leak of 64 byte(s) in 1 object(s) allocated from:")
    second = err.index("Direct leak of 17 byte(s) in 3 object(s) allocated from:")
    assert first < second  # largest first
    assert "examples/leaky.py:22 in read_record" in err and "examples/leaky.py:30 in main" in err
    assert err.rstrip().endswith("SUMMARY: memguard: 81 byte(s) leaked in 4 allocation(s).")


def test_overflow(launcher: list[str]) -> None:
    r = run(launcher, "examples/overflow.py")
    assert r.returncode == 23 and r.stdout == ""
    err = r.stderr
    assert "ERROR: memguard: heap-buffer-overflow on address" in err
    assert "1 byte(s) corrupted 0 byte(s) past the end of a 5-byte block" in err
    assert "allocated (allocation #1) here:\n    #0 examples/overflow.py:18 in <module>\n" in err
    assert "detected by thread MainThread" in err and "    #0 examples/overflow.py:20 in <module>\n" in err
    assert "found:    00\n" in err and "[00]" in err
    assert err.index("heap-buffer-overflow") < err.index("Direct leak of 32 byte(s) in 1 object(s)")
    assert "    #0 examples/overflow.py:21 in <module>\n" in err
    assert err.rstrip().endswith("SUMMARY: memguard: 32 byte(s) leaked in 1 allocation(s).")


def test_suppressed(launcher: list[str]) -> None:
    r = run(launcher, "--option", "suppressions=examples/suppressions.txt", "examples/suppressed.py")
    assert r.returncode == 0 and r.stdout == "done\n"
    assert "Direct leak" not in r.stderr
    assert "Suppressions used:" in r.stderr and "      2        128 leak:vendor_cache" in r.stderr
    unsuppressed = run(launcher, "examples/suppressed.py")
    assert unsuppressed.returncode == 23 and "Direct leak of 128 byte(s) in 2 object(s)" in unsuppressed.stderr
