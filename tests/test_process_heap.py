"""memguard.install/uninstall and the module-level malloc/free."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest

import memguard
from memguard import process


@pytest.fixture(autouse=True)
def isolated_process_heap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no process heap; one installed by someone else is put back after."""
    monkeypatch.delenv("MEMGUARD_OPTIONS", raising=False)
    for name in ("_heap", "_options", "_suppressions"):
        monkeypatch.setattr(process, name, None)
    yield
    memguard.uninstall()  # closes the heaps this test made; monkeypatch then restores the saved state


def test_install_is_idempotent_and_uses_options() -> None:
    heap = memguard.install(redzone=32, leak_check=0)
    assert memguard.install() is heap and memguard.install(redzone=32, leak_check=False) is heap
    assert memguard.process_heap() is heap and heap.redzone == 32 and heap.name == "process"
    assert heap.on_error == "report"
    assert process.process_options().leak_check is False  # type: ignore[union-attr]


def test_install_with_other_options_is_an_error() -> None:
    memguard.install(redzone=32)
    with pytest.raises(memguard.MemguardError, match=r"already installed with other options: redzone=64 \(installed: 32\)"):
        memguard.install(redzone=64)


def test_install_is_thread_safe() -> None:
    heaps: list[memguard.GuardedHeap] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        heaps.append(memguard.install())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(heaps) == 8 and len({id(h) for h in heaps}) == 1


def test_module_level_functions_install_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMGUARD_OPTIONS", "redzone=48:stack_depth=3")
    assert memguard.process_heap() is None
    p = memguard.malloc(10)
    heap = memguard.process_heap()
    assert heap is not None and heap.redzone == 48 and heap.stack_depth == 3
    assert heap.block(p).alloc_stack[0].name == "test_module_level_functions_install_from_environment"
    q = memguard.realloc(p, 20)
    r = memguard.calloc(2, 8)
    s = memguard.memalign(64, 8)
    assert s % 64 == 0 and bytes(heap.view(r)) == bytes(16)
    for addr in (q, r, s):
        memguard.free(addr)
    assert heap.stats().live_blocks == 0


def test_bad_environment_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMGUARD_OPTIONS", "redzone=7")
    with pytest.raises(memguard.OptionsError, match="MEMGUARD_OPTIONS: bad value '7' for option 'redzone'"):
        memguard.malloc(1)
    assert memguard.process_heap() is None


def test_bad_suppressions_or_log_dir_fail_at_install(tmp_path: Path) -> None:
    bad = tmp_path / "s.txt"
    bad.write_text("leak\n")
    with pytest.raises(memguard.SuppressionsError, match=r"s\.txt:1:"):
        memguard.install(suppressions=str(bad))
    with pytest.raises(memguard.OptionsError, match="log_path"):
        memguard.install(log_path=str(tmp_path / "missing" / "mg"))
    assert memguard.process_heap() is None


def test_uninstall_closes_and_next_call_reinstalls() -> None:
    heap = memguard.install()
    memguard.uninstall()
    assert heap.closed and memguard.process_heap() is None
    memguard.uninstall()  # no-op
    memguard.free(memguard.malloc(4))
    assert memguard.process_heap() is not heap


def test_at_exit_handler_dumps_installed_heap(capsys: pytest.CaptureFixture[str]) -> None:
    heap = memguard.install()
    heap.malloc(12)
    process.report_at_exit()
    assert "Direct leak of 12 byte(s) in 1 object(s)" in capsys.readouterr().err
    memguard.uninstall()
    process.report_at_exit()  # nothing installed: nothing printed, no crash
    assert capsys.readouterr().err == ""
