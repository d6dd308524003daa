"""Shared fixtures."""

from __future__ import annotations

from typing import Iterator

import pytest

import memguard


@pytest.fixture
def heap(request: pytest.FixtureRequest) -> Iterator[memguard.GuardedHeap]:
    """A heap that records findings instead of raising (tests inspect ``heap.reports``).

    A test module that sets ``HEAP_ON_ERROR = "raise"`` gets a heap that raises.
    """
    h = memguard.GuardedHeap(on_error=getattr(request.module, "HEAP_ON_ERROR", "report"))
    yield h
    if not h.closed:
        h.close(check=False)
