"""The pytest plugin costs nothing when memguard is not asked for.

pytest imports ``memguard.pytest_plugin`` (entry point ``pytest11``) in every run of anyone
with memguard installed.  Until a run asks for memguard (an option, an ini key,
``$MEMGUARD_OPTIONS``, a fixture, a marker), no heap, report, options or psutil module may
be imported.  Checked on what is imported, in fresh interpreters, never on timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memguard import pytest_plugin

#: The memguard modules pytest may import before memguard is asked for.
CHEAP = {"memguard", "memguard._lazy", "memguard._version", "memguard.pytest_plugin"}
#: Modules that must wait until memguard is asked for (each named, for a readable failure).
HEAVY = (
    "psutil",
    "memguard.heap", "memguard.heap.guarded", "memguard.native", "memguard.options", "memguard.process",
    "memguard.reporting", "memguard.reporting.verdicts", "memguard.reporting.suppressions",
    "memguard.report", "memguard.leaks", "memguard.stacks", "memguard.errors", "memguard.plugin_manager",
    "memguard.pytest_session",
)

#: A conftest that writes the memguard modules (and psutil) imported by the end of the run.
RECORDER = """
import json, sys
import pytest

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    loaded = sorted(m for m in sys.modules if m == "psutil" or m.split(".")[0] == "memguard")
    with open("modules.json", "w") as fh:
        json.dump(loaded, fh)
"""

#: Tests that pass, fail and raise without asking for memguard.
UNRELATED = """
import pytest

def test_passes(tmp_path):
    assert tmp_path.exists()

def test_fails():
    assert 1 == 2

def test_raises():
    raise ValueError("not memguard's")

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MEMGUARD_OPTIONS", "PYTEST_ADDOPTS")}


def _pytest_modules(directory: Path, test_body: str, *args: str) -> tuple[list[str], str]:
    """Run pytest in a fresh interpreter; the memguard modules it imported, and its output."""
    (directory / "conftest.py").write_text(RECORDER)
    (directory / "test_it.py").write_text(textwrap.dedent(test_body))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *args, "test_it.py"],
        cwd=directory, capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return json.loads((directory / "modules.json").read_text()), proc.stdout


def test_importing_the_entry_point_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import json, sys, memguard.pytest_plugin\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'psutil' or m.split('.')[0] == 'memguard')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert not loaded & set(HEAVY)
    assert loaded <= CHEAP, sorted(loaded - CHEAP)


def test_a_run_that_does_not_ask_for_memguard_imports_nothing_heavy(tmp_path: Path) -> None:
    loaded, out = _pytest_modules(tmp_path, UNRELATED)
    assert "memguard.pytest_plugin" in loaded  # the plugin was active...
    assert "memguard: off (fixtures and markers opt tests in), leaks=fail, options=defaults" in out
    assert not set(loaded) & set(HEAVY)  # ...and cost nothing
    assert set(loaded) <= CHEAP, sorted(set(loaded) - CHEAP)


@pytest.mark.parametrize(
    ("body", "args"),
    [
        ("def test_a(guarded_heap):\n    guarded_heap.free(guarded_heap.malloc(8))\n", ()),
        ("import pytest\n\n@pytest.mark.memguard\ndef test_a():\n    pass\n", ()),
        ("def test_a():\n    pass\n", ("--memguard",)),
    ],
    ids=["fixture", "marker", "option"],
)
def test_asking_for_memguard_loads_it(tmp_path: Path, body: str, args: tuple[str, ...]) -> None:
    loaded, out = _pytest_modules(tmp_path, body, *args)
    assert "memguard.pytest_session" in loaded and "memguard.heap.guarded" in loaded
    assert "1 passed" in out


def test_the_header_of_an_unconfigured_run_is_what_resolving_its_settings_gives(pytester: pytest.Pytester,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMGUARD_OPTIONS", raising=False)
    from memguard.pytest_session import resolve_settings

    config = pytester.parseconfigure()
    assert resolve_settings(config, environ={}) == pytest_plugin._DEFAULTS  # noqa: SLF001
    assert not pytest_plugin._asked(config)  # noqa: SLF001
