"""Unit tests of the pure pass/fail decisions (``memguard.reporting.verdicts``)."""

from __future__ import annotations

import pytest

from memguard import LeakGroup, Report
from memguard.stacks import Frame
from memguard.reporting import verdicts as v

PYTEST_DIR = "/site/_pytest/"
USER = Frame("/src/test_x.py", 9, "test_leaks")
HELPER = Frame("/src/test_x.py", 5, "helper")
RUNNER = Frame(PYTEST_DIR + "python.py", 159, "pytest_pyfunc_call")


def test_describe() -> None:
    assert v.describe_leaks([LeakGroup((HELPER,), 72, 3)]) == "leaked 72 bytes in 3 blocks"
    assert v.describe_leaks([LeakGroup((HELPER,), 1, 1)]) == "leaked 1 byte in 1 block"
    over = Report("heap-buffer-overflow", address=0x1000, size=16, offset=16, count=1)
    assert v.describe_report(over) == "heap-buffer-overflow: 1 byte past a 16-byte block"
    under = Report("heap-buffer-underflow", address=0x1000, size=16, offset=-2, count=2)
    assert v.describe_report(under) == "heap-buffer-underflow: 2 bytes before a 16-byte block"


def test_trim_stack_drops_runner_frames() -> None:
    assert v.cut_at_runner((HELPER, USER, RUNNER, RUNNER), [PYTEST_DIR]) == (HELPER, USER)
    assert v.cut_at_runner((RUNNER, USER), [PYTEST_DIR]) == (RUNNER, USER)  # kept whole


@pytest.mark.parametrize(("mode", "failed", "warned"), [("fail", True, False), ("warn", False, True), ("ignore", False, False)])
def test_judge_leak_modes(mode: str, failed: bool, warned: bool) -> None:
    verdict = v.judge([], [LeakGroup((HELPER, USER, RUNNER), 72, 3)], mode, [PYTEST_DIR])
    assert (verdict.failed, verdict.warned) == (failed, warned)
    if mode != "ignore":
        assert verdict.reason == "leaked 72 bytes in 3 blocks"
        assert "pytest_pyfunc_call" not in verdict.section


def test_corruption_always_fails() -> None:
    over = Report("heap-buffer-overflow", address=0x1000, size=16, offset=16, count=1)
    verdict = v.judge([over], [LeakGroup((HELPER,), 8, 1)], "ignore")
    assert verdict.failed and verdict.reason == "heap-buffer-overflow: 1 byte past a 16-byte block"


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="--memguard-leaks: expected one of fail, warn, ignore"):
        v.check_leak_mode("x", "--memguard-leaks")
    assert v.parse_size("64 KiB", "s") == 65536 and v.parse_size("1MB", "s") == 1_000_000
    with pytest.raises(ValueError, match="max_bytes"):
        v.parse_size("lots", "max_bytes")


def test_growth_steady_vs_one_off() -> None:
    steady = v.judge_growth([0, 500, 1000, 2000, 3000, 4000], max_bytes=1000, warmup=1)
    assert steady.failed and steady.growth == 3500 and "4 of 4 runs grew: steady" in steady.reason
    one_off = v.judge_growth([0, 500, 1000, 9000, 9000, 9000], max_bytes=1000, warmup=1)
    assert not one_off.failed and "not steady" in one_off.reason
    small = v.judge_growth([0, 10, 20, 30, 40], max_bytes=1000, warmup=0)
    assert not small.failed


def test_summary_aggregates_records() -> None:
    g = LeakGroup((HELPER,), 8, 1).to_dict()
    records = [
        {"nodeid": "a", "failed": True, "leaks": [g], "findings": []},
        {"nodeid": "b", "failed": True, "leaks": [g], "findings": [{"kind": "double-free"}]},
        {"nodeid": "c", "failed": False, "leaks": [], "findings": []},
    ]
    totals = v.summarize(records)
    assert totals["tests_checked"] == 3 and totals["tests_failed"] == 2
    assert totals["findings_by_kind"] == {"double-free": 1, "memory-leak": 2}
    assert totals["top_sites"] == [{"site": "/src/test_x.py:5 in helper", "bytes": 16, "blocks": 2, "tests": 2}]
