"""The README's first command and the heap benchmark keep working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_finds_overflow_use_after_free_and_leak() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    text = out.stdout
    assert "ERROR: memguard: heap-buffer-overflow" in text
    assert "0 bytes to the right of 8-byte region" in text
    assert "quickstart.py:14 in fill_name" in text
    assert "ERROR: memguard: heap-use-after-free" in text
    assert "freed here:" in text
    assert "Direct leak of 72 byte(s) in 3 object(s) allocated from:" in text
    assert "SUMMARY: memguard: 72 byte(s) leaked in 3 allocation(s)." in text


def test_heap_benchmark_quick_run_reports_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_heap.py"), "--quick", "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    data = json.loads(out.stdout)
    assert data["pair_64"]["ratio"] > 1.0
    assert data["memset_16_4096"]["ratio"] > 1.0
    assert data["helper_pair_64"]["ratio"] > 1.0
    assert data["check_quarantine"]["check_speed_vs_memcmp"] > 0
    assert data["rss_1m_blocks"]["slot_bytes"] == 80


def test_guard_benchmark_quick_run_reports_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_guard.py"), "--quick", "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    data = json.loads(out.stdout)
    assert set(data["us_per_pair"]) == {"heap pair", "guard_sample=1000", 'guard="all"', "raw ctypes"}
    assert data["all_over_raw"] > 1.0 and data["sample_1000_over_heap"] > 0
    assert data["all_virtual_bytes_per_block"] >= 4096
    assert set(data["pytest_seconds"]) == {"plain", "--memguard", "--memguard guard_sample=100"}


def test_backends_benchmark_quick_run_measures_every_backend_present() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_backends.py"), "--quick", "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    data = json.loads(out.stdout)
    assert set(data) == {"libc", "mimalloc", "jemalloc"}
    assert data["libc"]["pair_ratio"] > 1.0 and data["libc"]["memset_ratio"] > 1.0
    for name, figures in data.items():  # a backend missing here is said, not skipped silently
        assert isinstance(figures, str) or (figures["backend"] == name and figures["raw_pair_ns"] > 0), name


def test_bufpool_benchmark_quick_run_reports_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_bufpool.py"), "--quick", "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    data = json.loads(out.stdout)
    assert set(data["pairs"]) == {"heap pair", "bufpool pair", "bufpool pair, budget plugin"}
    assert data["pairs"]["heap pair"]["ratio"] == 1.0 and data["pairs"]["bufpool pair"]["us"] > 0
    c = data["contended"]
    assert c["threads"] == 8 and c["allocations"] > 0 and c["findings"] == 0
    assert c["peak_bytes"] <= c["max_memory"] and c["longest_wait_ms"] >= 0


def test_numpy_benchmark_quick_run_reports_every_figure() -> None:
    pytest.importorskip("numpy")
    from memguard.native import trampoline

    if not trampoline.available():
        pytest.skip(f"memguard.numpy needs the trampolines: {trampoline.unavailable_reason()}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_CORE"))}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_numpy.py"), "--quick", "--json", "--no-suite"],
        capture_output=True, text=True, timeout=300, check=True, env=env,
    )
    data = json.loads(out.stdout)  # (NumPy's own tests under memguard: tests/test_numpy_suite.py)
    assert data["empty_10"]["guarded_us"] > data["empty_10"]["plain_us"] > 0
    assert data["empty_1000000"]["ratio"] > 1.0 and "suite" not in data
