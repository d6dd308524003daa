"""Test files the pytester tests of the pytest plugin run."""

from __future__ import annotations

#: One test that leaks three 24-byte blocks through a helper, one clean test.
LEAKY = """
import memguard

def helper(n):
    return memguard.malloc(n)

def test_leaks():
    for _ in range(3):
        helper(24)

def test_clean():
    memguard.free(memguard.malloc(16))
"""
