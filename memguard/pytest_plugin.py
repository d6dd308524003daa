"""pytest plugin for memguard (being written: see issue 5)."""

from __future__ import annotations
