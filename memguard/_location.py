"""Where memguard's own code lives: the one definition that stack filtering uses.

Frames whose file lies under :data:`PACKAGE_DIR` are memguard's and are never shown in
a stack.  The directory is taken from a code object of this module (not ``__file__``),
so it matches ``co_filename`` exactly, whichever way the package was imported.
"""

from __future__ import annotations

import os

__all__ = ["PACKAGE_DIR", "is_own_file"]


def _anchor() -> None:
    """A code object whose ``co_filename`` lies in the package's top directory."""


#: memguard's package directory, with a trailing separator.
PACKAGE_DIR: str = os.path.dirname(_anchor.__code__.co_filename) + os.sep


def is_own_file(filename: str) -> bool:
    """Whether ``filename`` is a file of the memguard package (any sub-package)."""
    return filename.startswith(PACKAGE_DIR)
