"""The bug corpus of test_heap_corpus, once per allocator backend present in this process.

Every heap the corpus makes (the ``heap`` fixture and its own ``GuardedHeap()``) gets the
backend of the run; on the Windows stand-in, nothing may break its rules.  jemalloc
cannot be opened after start-up without a tunable: test_backends runs the corpus on it in
a process started with one.
"""

from __future__ import annotations

import gc
import os
from typing import Iterator

import pytest

import memguard
from memguard import native
from memguard.errors import BackendUnavailableError
from memguard.native import jemalloc
from memguard.native.windows import windows_backend
from test_heap_corpus import *  # noqa: F401,F403
from winheap import WindowsStandIn

_get_backend = native.get_backend
#: jemalloc opens only in a process started with the tunable (test_backends starts one).
_JEMALLOC = jemalloc.TLS_TUNABLE in os.environ.get("GLIBC_TUNABLES", "") or "jemalloc" in os.environ.get("LD_PRELOAD", "")


@pytest.fixture(params=["libc", "windows-standin", "mimalloc", *(["jemalloc"] if _JEMALLOC else [])], autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[native.Backend]:
    """Every heap made without a backend gets this one."""
    standin = None
    if request.param == "windows-standin":
        standin = WindowsStandIn()
        chosen = windows_backend(standin.kernel32, standin.crt)
    else:
        try:
            chosen = _get_backend(request.param)
        except BackendUnavailableError as exc:
            pytest.skip(str(exc))
    monkeypatch.setattr(native, "get_backend", lambda b=None: chosen if b is None else _get_backend(b))
    yield chosen
    if standin is not None:
        gc.collect()
        assert standin.violations == []
        assert "HeapFree" not in standin.names()


def test_every_heap_uses_the_backend(backend: native.Backend) -> None:
    with memguard.GuardedHeap() as h:
        assert h.backend is backend
        h.free(h.malloc(10))
