"""The exception-preserving trampolines (memguard._trampoline) and what needs them.

C code may call an allocator while a Python exception is pending; the trampolines keep
that exception.  Without the extension everything else works and the integrations that
need it refuse to install; both paths are tested (the absence is simulated with a fresh
loader state, or with MEMGUARD_NO_TRAMPOLINE=1 in a subprocess).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import memguard
from memguard import clibs, native
from memguard.errors import LibraryNotFoundError, TrampolineUnavailableError
from memguard.heap.c_allocator import CAllocator
from memguard.native import trampoline

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def built() -> None:
    if not trampoline.available():
        pytest.skip(f"no trampolines: {trampoline.unavailable_reason()}")


@pytest.fixture
def absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process as if memguard._trampoline had not been built."""
    state = trampoline._State()
    monkeypatch.setenv(trampoline.ENV_VAR, "1")
    state.load()
    monkeypatch.setattr(trampoline, "_state", state)


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Not under coverage: coverage keeps its data in SQLite, which must be configured first.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=environ,
                          cwd=ROOT)


def test_shapes_of_the_prototypes() -> None:
    assert trampoline.shape_of(native.MALLOC_FN) == "p_z"
    assert trampoline.shape_of(native.FREE_FN) == "v_p"
    assert trampoline.shape_of(native.BZALLOC_FN) == "p_pii"
    assert trampoline.shape_of(native.ZALLOC_FN) == "p_pii"  # unsigned int passes as int
    assert trampoline.shape_of(native.CTX_SIZED_FREE_FN) == "v_ppz"
    assert trampoline.shape_of(native.STRDUP_FN) == "p_p"
    assert trampoline.shape_of(native.REALLOC_FILE_LINE_FN) == "p_pzpi"
    assert trampoline.shape_of(ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p)) is None
    assert trampoline.shape_of(ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_int))) == "v_p"


def test_every_prototype_memguard_declares_has_a_trampoline(built: None) -> None:
    from memguard._trampoline import SHAPES  # type: ignore[import-not-found]

    for name in native.prototypes.__all__:
        assert trampoline.shape_of(getattr(native, name)) in SHAPES, name


def test_wrap_binds_a_slot_and_release_frees_it(built: None) -> None:
    calls: list[int] = []

    @native.MALLOC_FN
    def inner(n: int) -> int:
        calls.append(n)
        return n * 2

    fn, binding = trampoline.wrap(native.MALLOC_FN, inner)  # type: ignore[misc]
    assert isinstance(fn, native.MALLOC_FN) and binding.shape == "p_z"
    assert ctypes.cast(fn, ctypes.c_void_p).value == binding.address != ctypes.cast(inner, ctypes.c_void_p).value
    assert fn(21) == 42 and calls == [21]
    trampoline.release([binding])
    assert fn(5) is None and calls == [21]  # an unbound trampoline returns NULL, calls nothing
    again, b2 = trampoline.wrap(native.MALLOC_FN, inner)  # type: ignore[misc]
    assert b2.slot == binding.slot  # reused
    trampoline.release([b2])


def test_callbacks_of_an_allocator_go_through_trampolines(built: None) -> None:
    with memguard.GuardedHeap() as heap:
        alloc = heap.c_allocator()
        for kind, proto in (("malloc", native.MALLOC_FN), ("ctx_sized_free", native.CTX_SIZED_FREE_FN)):
            cb = alloc.function(kind, proto, require_trampoline="test")
            assert alloc.trampolined(kind, proto)
            assert ctypes.cast(cb, ctypes.c_void_p).value != ctypes.cast(alloc._inner[(kind, proto)], ctypes.c_void_p).value
        p = alloc.malloc(10)
        assert heap.block(p).size == 10
        alloc.free(p)


def test_slots_come_back_when_an_allocator_is_garbage(built: None) -> None:
    import gc

    free = trampoline._state.free["p_z"]
    gc.collect()
    before = len(free)
    heap = memguard.GuardedHeap()
    CAllocator(heap)
    assert len(free) == before - 1 or len(free) == before  # collected at once (no cycle) or not yet
    heap.close()
    del heap
    gc.collect()
    assert len(free) == before


def test_when_slots_run_out_callbacks_are_plain_and_requirers_refuse(built: None) -> None:
    heap = memguard.GuardedHeap()
    allocators = []
    try:
        for _ in range(trampoline._state.free["p_z"].__len__() + 1):
            allocators.append(CAllocator(heap))
        last = allocators[-1]
        assert not last.trampolined("malloc", native.MALLOC_FN)
        assert last.malloc(8)  # a plain ctypes callback still works
        with pytest.raises(TrampolineUnavailableError, match="none is free") as info:
            last.function("malloc", native.MALLOC_FN, require_trampoline="the test")
        assert info.value.integration == "the test"
    finally:
        heap.close(check=False)
        allocators.clear()


def test_without_the_extension_everything_else_works(absent: None) -> None:
    assert not trampoline.available()
    assert "MEMGUARD_NO_TRAMPOLINE=1" in (trampoline.unavailable_reason() or "")
    assert trampoline.wrap(native.MALLOC_FN, native.MALLOC_FN(lambda n: 0)) is None
    trampoline.release([trampoline.Binding("p_z", 0, 0)])  # nothing to release
    with memguard.GuardedHeap() as heap:
        alloc = CAllocator(heap)
        assert not alloc.trampolined("malloc", native.MALLOC_FN)
        p = alloc.malloc(16)
        assert heap.block(p).size == 16
        alloc.free(p)
        with pytest.raises(TrampolineUnavailableError, match="needs memguard's exception-preserving") as info:
            alloc.function("malloc", native.MALLOC_FN, require_trampoline="memguard.numpy")
        assert info.value.integration == "memguard.numpy" and "MEMGUARD_NO_TRAMPOLINE" in info.value.reason
        with pytest.raises(TrampolineUnavailableError, match="sqlite_mem_methods"):
            clibs.sqlite_mem_methods(heap)
        with pytest.raises(TrampolineUnavailableError, match="sqlite_configure"):
            clibs.sqlite_configure(heap)


def test_a_missing_extension_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_extension(name: str, *args: object, **kwargs: object) -> object:
        if name == "memguard._trampoline":
            raise ImportError("No module named 'memguard._trampoline'")
        return real(name, *args, **kwargs)

    monkeypatch.delenv(trampoline.ENV_VAR, raising=False)
    monkeypatch.delitem(sys.modules, "memguard._trampoline", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_extension)
    monkeypatch.setattr(trampoline.importlib, "import_module", lambda name: no_extension(name))
    state = trampoline._State()
    assert state.load() is None and "was not built" in state.reason and "C compiler" in state.reason


# ------------------------------------------------------------------ SQLite's error path
SQLITE_USER_FUNCTION = r"""
import json, sys
import memguard
from memguard import clibs

heap = memguard.GuardedHeap(on_error="report") if GUARDED else None
if GUARDED:
    clibs.sqlite_configure(heap)  # before Python's sqlite3 initialises SQLite
import sqlite3
unraisable = []
sys.unraisablehook = lambda u: unraisable.append(f"{type(u.exc_value).__name__}: {u.exc_value}")
sqlite3.enable_callback_tracebacks(True)

class Boom(Exception):
    pass

def f(x):
    raise Boom(f"boom {x}")

con = sqlite3.connect(":memory:")
con.create_function("f", 1, f)
con.execute("create table t(x)")
con.executemany("insert into t values (?)", [(i,) for i in range(50)])
try:
    con.execute("select f(x) from t").fetchall()
    caught = None
except Exception as exc:
    caught = f"{type(exc).__name__}: {exc}"
con.close()
print(json.dumps({"caught": caught, "unraisable": unraisable,
                  "reports": [r.kind for r in heap.check()] if heap else [],
                  "allocs": heap.stats().total_allocs if heap else 0}))
"""


def _sqlite_outcome(guarded: bool, **env: str) -> tuple[dict[str, object], str]:
    proc = _run(f"GUARDED = {guarded}\n" + SQLITE_USER_FUNCTION, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_a_raising_sqlite_user_function_reaches_the_caller_unchanged(built: None) -> None:
    try:
        native.sqlite3()
    except LibraryNotFoundError as exc:
        pytest.skip(str(exc))
    plain, plain_err = _sqlite_outcome(False)
    guarded, stderr = _sqlite_outcome(True)
    assert guarded["caught"] == plain["caught"] == "OperationalError: user-defined function raised exception"
    # The user's exception, intact: to sys.unraisablehook (Python >= 3.11) or printed (3.10).
    assert guarded["unraisable"] == plain["unraisable"]
    assert guarded["unraisable"] == ["Boom: boom 0"] or ("Boom: boom 0" in stderr and "Boom: boom 0" in plain_err)
    assert "Exception ignored" not in stderr and "SystemError" not in stderr
    assert guarded["reports"] == [] and guarded["allocs"] > 50  # SQLite really was on the heap


def test_sqlite_refuses_to_install_without_the_extension_in_a_subprocess() -> None:
    proc = _run(
        "import memguard, sqlite3\nfrom memguard import clibs\n"
        "try:\n    clibs.sqlite_configure(memguard.GuardedHeap())\n"
        "except memguard.TrampolineUnavailableError as e:\n    print('refused:', e.integration, e.reason)\n"
        "con = sqlite3.connect(':memory:'); print(con.execute('select 1').fetchone())\n",
        MEMGUARD_NO_TRAMPOLINE="1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused: memguard.clibs.sqlite_configure disabled by the environment" in proc.stdout
    assert "(1,)" in proc.stdout  # SQLite untouched, still usable
