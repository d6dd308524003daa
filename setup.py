"""Builds memguard's one optional C extension; pyproject.toml holds everything else.

``memguard._trampoline`` holds only the exception-preserving trampolines of the C-callable
allocators.  It is optional: without a compiler the build goes on without it, and
memguard works (integrations that need it say so when asked to install).
"""

import sys

from setuptools import Extension, setup

# Thousands of one-line functions: their debug information would be most of the file.
ARGS = [] if sys.platform == "win32" else ["-g0", "-O2"]

setup(ext_modules=[Extension("memguard._trampoline", ["memguard/_trampoline.c"], optional=True,
                             extra_compile_args=ARGS)])
