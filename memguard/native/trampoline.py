"""The exception-preserving trampolines: memguard's one optional C extension.

C code may call an allocator with a Python exception pending (NumPy frees temporaries on
its error paths, SQLite calls ``xRoundup`` on its).  A ctypes callback cannot cope: it
runs Python code with the exception set, and the exception is lost to a ``SystemError``
(the check happens after the callback returns, so no Python code can save it).  The
extension ``memguard._trampoline`` holds, for each C shape of allocator callback, a
table of small C functions ("trampolines"): each takes the GIL, sets the pending
exception aside, calls the ctypes callback bound to its slot, puts the exception back
and releases the GIL.  :func:`wrap` binds a ctypes callback to a free slot and returns
the trampoline as an instance of the callback's own prototype.

The extension is built when a C compiler is present at install time.  Without it (or
with the environment variable ``MEMGUARD_NO_TRAMPOLINE=1``, read once, when memguard
first asks), :func:`wrap` returns ``None`` and callbacks are plain ctypes callbacks;
integrations that would be unsafe without the trampolines call :func:`require`, which
raises :class:`~memguard.errors.TrampolineUnavailableError` saying why.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import os
import threading
from dataclasses import dataclass
from typing import Any

from memguard.errors import TrampolineUnavailableError

__all__ = ["ENV_VAR", "Binding", "available", "unavailable_reason", "require", "shape_of", "wrap", "release"]

#: Set to anything but ``""`` or ``"0"`` to run as if the extension were not built.
ENV_VAR = "MEMGUARD_NO_TRAMPOLINE"


@dataclass(frozen=True)
class Binding:
    """One trampoline slot bound to a ctypes callback.

    :ivar shape: the C shape (``"p_z"`` is ``void *(size_t)``; see :func:`shape_of`).
    :ivar slot: the slot in that shape's table.
    :ivar address: the trampoline's C address.
    """

    shape: str
    slot: int
    address: int


class _State:
    """The extension (or why there is none) and the free slots of each shape."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded = False
        self.module: Any = None
        self.reason = ""
        self.free: dict[str, list[int]] = {}

    def load(self) -> Any:
        """The extension module, or ``None`` (``reason`` says why); decided once."""
        if self.loaded:
            return self.module
        with self.lock:
            if not self.loaded:
                flag = os.environ.get(ENV_VAR, "")
                if flag not in ("", "0"):
                    self.reason = f"disabled by the environment ({ENV_VAR}={flag})"
                else:
                    try:
                        module = importlib.import_module("memguard._trampoline")
                    except ImportError as exc:
                        self.reason = (
                            "the C extension memguard._trampoline was not built (memguard was installed "
                            f"without a C compiler; reinstall it with one): {exc}"
                        )
                    else:
                        self.module = module
                        self.free = {shape: list(range(module.SLOTS - 1, -1, -1)) for shape in module.SHAPES}
                self.loaded = True
        return self.module


_state = _State()


def available() -> bool:
    """Whether the trampolines are there (the extension was built and not disabled)."""
    return _state.load() is not None


def unavailable_reason() -> str | None:
    """Why the trampolines are missing, or ``None`` when they are there."""
    return None if _state.load() is not None else _state.reason


def require(integration: str) -> None:
    """Raise :class:`TrampolineUnavailableError` unless the trampolines are there.

    :param integration: what needs them (``"memguard.numpy"``), named in the message.
    """
    if _state.load() is None:
        raise TrampolineUnavailableError(
            f"{integration} needs memguard's exception-preserving trampolines, and this install has none: "
            f"{_state.reason}.  Without them, a C library that calls the allocator while a Python "
            "exception is pending loses the exception (a SystemError), so it is not installed.",
            integration=integration,
            reason=_state.reason,
        )


def _code(ctype: Any) -> str | None:
    """The one-letter ABI class of a ctypes parameter or return type (``None`` if unsupported)."""
    if ctype is None:
        return "v"
    if ctype in (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_wchar_p) or isinstance(ctype, type) and issubclass(
        ctype, ctypes._Pointer  # type: ignore[attr-defined]
    ):
        return "p"
    if ctype in (ctypes.c_int, ctypes.c_uint):
        return "i"
    if ctype in (ctypes.c_size_t, ctypes.c_ssize_t):
        return "z"
    return None


def shape_of(prototype: Any) -> str | None:
    """The trampoline shape of a ``CFUNCTYPE`` class: ``"p_pz"`` for ``void *(void *, size_t)``.

    ``p`` is a pointer, ``z`` a ``size_t``, ``i`` an ``int`` or ``unsigned int``, ``v``
    ``void`` (returns only).  ``None`` for a prototype with another type.
    """
    ret = _code(getattr(prototype, "_restype_", None))
    args = [_code(t) for t in getattr(prototype, "_argtypes_", ())]
    if ret is None or None in args or "v" in args:
        return None
    return f"{ret}_{''.join(args)}"  # type: ignore[arg-type]


def wrap(prototype: Any, callback: Any) -> tuple[Any, Binding] | None:
    """The trampoline calling ``callback`` (an instance of ``prototype``), as a ``prototype``.

    Returns the function pointer and its :class:`Binding` (give it to :func:`release`
    once no C code can call it any more), or ``None``: no extension, a shape without
    trampolines, or every slot of the shape taken (after one garbage collection, which
    releases the slots of collected allocators).  The caller keeps ``callback`` alive.
    """
    module = _state.load()
    shape = shape_of(prototype)
    if module is None or shape is None or shape not in _state.free:
        return None
    free = _state.free[shape]
    with _state.lock:
        slot = free.pop() if free else None
    if slot is None:
        gc.collect()
        with _state.lock:
            slot = free.pop() if free else None
        if slot is None:
            return None
    inner = ctypes.cast(callback, ctypes.c_void_p).value or 0
    address = module.bind(shape, slot, inner)
    return prototype(address), Binding(shape, slot, address)


def release(bindings: list[Binding]) -> None:
    """Unbind slots (a trampoline with nothing bound returns NULL) and free them for reuse."""
    module = _state.module
    if module is None:
        return
    for b in bindings:
        module.bind(b.shape, b.slot, 0)
        with _state.lock:
            _state.free[b.shape].append(b.slot)
