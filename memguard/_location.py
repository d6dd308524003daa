"""Where memguard's own code and the frameworks' code live: the definitions stack filtering uses.

Frames whose file lies under :data:`PACKAGE_DIR` are memguard's and are never shown in
a stack.  The directory is taken from a code object of this module (not ``__file__``),
so it matches ``co_filename`` exactly, whichever way the package was imported.

Frames of the machinery that runs the user's code (pytest, pluggy, ``runpy``,
``importlib``, a ``pytest`` console script) are :func:`is_framework_file`: reports hide
them when they render a stack, unless asked for full stacks.
"""

from __future__ import annotations

import os
import sys

__all__ = ["FRAMEWORK_MODULES", "PACKAGE_DIR", "framework_dirs", "is_framework_file", "is_own_file"]


def _anchor() -> None:
    """A code object whose ``co_filename`` lies in the package's top directory."""


#: memguard's package directory, with a trailing separator.
PACKAGE_DIR: str = os.path.dirname(_anchor.__code__.co_filename) + os.sep


def is_own_file(filename: str) -> bool:
    """Whether ``filename`` is a file of the memguard package (any sub-package)."""
    return filename.startswith(PACKAGE_DIR)


#: The packages whose frames are the running machinery's, not the user's.
FRAMEWORK_MODULES: tuple[str, ...] = ("_pytest", "pytest", "pluggy", "importlib")
#: Frozen and script files of that machinery (matched by name).
_FRAMEWORK_NAMES = ("<frozen runpy>", "<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")
_FRAMEWORK_BASENAMES = ("runpy.py", "pytest", "py.test")


def framework_dirs() -> tuple[str, ...]:
    """The directories of the framework packages imported so far (one not imported has no frames)."""
    dirs = []
    for name in FRAMEWORK_MODULES:
        filename = getattr(sys.modules.get(name), "__file__", None)
        if filename and os.path.basename(filename) == "__init__.py":
            dirs.append(os.path.dirname(filename) + os.sep)
    return tuple(dirs)


def is_framework_file(filename: str, dirs: tuple[str, ...] | None = None) -> bool:
    """Whether ``filename`` belongs to pytest, pluggy, ``runpy`` or ``importlib``.

    :param dirs: the result of an earlier :func:`framework_dirs` (looked up when ``None``).
    """
    if filename in _FRAMEWORK_NAMES or os.path.basename(filename) in _FRAMEWORK_BASENAMES:
        return True
    return filename.startswith(framework_dirs() if dirs is None else dirs)
