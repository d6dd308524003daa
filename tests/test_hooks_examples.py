"""The docs' code blocks, the example scripts and the pool benchmark run and say what they should."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("plugins.md", "refaudit.md", "pools.md", "bufpool.md")


def _blocks(doc: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / doc).read_text(), re.S)


@pytest.mark.parametrize("doc", DOCS)
def test_doc_examples_run(doc: str) -> None:
    blocks = _blocks(doc)
    assert blocks, f"{doc} has no python example"
    code = "\n\n".join(f"exec({b!r}, {{}})" for b in blocks)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_example_refcount_audit() -> None:
    out = _run("examples/refcount_audit.py").stdout
    assert re.search(r"prop@0x[0-9a-f]+ has 1/1 users at:\n    #0 .*refcount_audit.py:\d+ in subscribe", out)
    assert "refcount-underflow: refcount_t: underflow; use-after-free" in out
    assert out.count("destroyed prop@") == 2
    assert out.rstrip().endswith("2 finding(s): refcount-underflow, refcount-leak")


def test_example_object_pool() -> None:
    out = _run("examples/object_pool.py").stdout
    assert "PoolStats(object_size=48, stride=64" in out and "outstanding=1" in out
    assert re.search(r"memory-leak: Leak at 0x[0-9a-f]+ \(.*object_pool.py:\d+ in <module>\)", out)
    assert "kinds: pool-double-free, pool-bad-free, pool-buffer-overflow, memory-leak" in out


def test_benchmark_quick() -> None:
    out = _run("benchmarks/bench_pool.py", "--quick").stdout
    for case in ("heap pair ", "heap pair, idle plugins", "pool pair ", "pool pair, invariants plugin"):
        assert re.search(rf"{re.escape(case)}.*\d+\.\d+ us\s+x\s*\d+\.\d+", out), case
    assert "invariants plugin overhead" in out
