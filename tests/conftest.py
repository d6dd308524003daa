"""Shared fixtures."""

from __future__ import annotations

from typing import Iterator

import pytest

import memguard


@pytest.fixture
def heap() -> Iterator[memguard.GuardedHeap]:
    """A heap that records findings instead of raising (tests inspect ``heap.reports``)."""
    h = memguard.GuardedHeap(on_error="report")
    yield h
    if not h.closed:
        h.close(check=False)
