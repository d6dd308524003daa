"""Cheap Python stack capture: raw frames on the hot path, source lines only when shown.

A stack is captured as a tuple of ``(code, lasti)`` pairs, interned in a
:class:`StackTable` so that every allocation from the same site shares one entry
and one small integer id.  Turning code offsets into line numbers happens only when
a stack is rendered.  No ``traceback`` or ``inspect`` is used.
"""

from __future__ import annotations

import inspect
import sys
import threading
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, Sequence

from memguard._location import PACKAGE_DIR

__all__ = ["Frame", "Stack", "StackTable", "format_stack", "current_stack", "is_user_frame"]

_getframe = sys._getframe


@dataclass(frozen=True)
class Frame:
    """One Python frame of a captured stack.

    :ivar filename: the code's file name.
    :ivar lineno: the line executing in that frame.
    :ivar name: the function (``co_qualname`` where available).
    """

    filename: str
    lineno: int
    name: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.name}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"filename": self.filename, "lineno": self.lineno, "name": self.name}


#: A stack is a tuple of frames, most recent call first.
Stack = tuple[Frame, ...]

_line_cache: dict[tuple[CodeType, int], int] = {}


def _lineno(code: CodeType, lasti: int) -> int:
    key = (code, lasti)
    line = _line_cache.get(key)
    if line is None:
        line = code.co_firstlineno
        for start, end, lineno in code.co_lines():
            if start <= lasti < end:
                if lineno is not None:
                    line = lineno
                break
        _line_cache[key] = line
    return line


#: Code flags of frames that can be suspended and resumed under another caller.
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE



def is_user_frame(frame: FrameType) -> bool:
    """Whether ``frame`` is outside the memguard package (a frame a stack starts at)."""
    return not frame.f_code.co_filename.startswith(PACKAGE_DIR)


def _resolve(raw: Sequence[Any]) -> Stack:
    """Frames from a flat ``(code, f_lasti, code, f_lasti, ...)`` key."""
    return tuple(
        Frame(code.co_filename, _lineno(code, lasti), getattr(code, "co_qualname", code.co_name))
        for code, lasti in zip(raw[::2], raw[1::2])
    )


def current_stack(depth: int = 16, skip: int = 1) -> Stack:
    """The calling thread's Python stack, most recent first (for slow paths only)."""
    try:
        f: FrameType | None = _getframe(skip + 1)
    except ValueError:
        return ()
    raw: list[Any] = []
    while f is not None and len(raw) < 2 * depth:
        raw += (f.f_code, f.f_lasti)
        f = f.f_back
    return _resolve(raw)


class StackTable:
    """Interns captured stacks; id 0 is the empty stack.

    Capturing is cheap when called repeatedly from the same frame at the same
    instruction (a loop), and when a function is called repeatedly from the same call
    site (a helper called in a loop: a new frame each time, under the same parent frame):
    the previous id is reused without walking the stack.  Frames inside the memguard
    package are skipped, so stacks start at the user's code.
    """

    __slots__ = ("depth", "_ids", "_raw", "_resolved", "_lock", "_cache", "_parent_cache")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._ids: dict[tuple[Any, ...], int] = {(): 0}
        self._raw: list[tuple[Any, ...]] = [()]
        self._resolved: dict[int, Stack] = {0: ()}
        # Re-entrant: the collector may run a finalizer that allocates while it is held.
        self._lock = threading.RLock()
        #: ``(frame, {lasti: id})``: the last frame captured from and the ids of its call
        #: sites.  Read without a lock (one attribute load); replaced, never mutated in place
        #: by another frame.
        self._cache: tuple[FrameType | None, dict[int, int]] = (None, {})
        #: ``(parent frame, {(its f_lasti, id(code), lasti): id})``: the ids of stacks whose
        #: second frame is that parent.  While a frame runs, the frames below it cannot
        #: change, so its instruction and the top frame's code and instruction name the
        #: whole stack.  Generator and coroutine parents are never cached (they can be
        #: resumed under another caller).
        self._parent_cache: tuple[FrameType | None, dict[tuple[int, int, int], int]] = (None, {})

    @property
    def lock(self) -> threading.RLock:
        """The lock that guards interning (held across ``fork()`` by the heap's at-fork handlers)."""
        return self._lock

    def capture(self, frame: FrameType | None) -> int:
        """Intern the stack that starts at ``frame``; return its id.

        memguard's own frames at the top are skipped first, so a call through a wrapper
        or a C callback is attributed (and cached) by the user's frame.  A stack is keyed
        by the flat tuple ``(id(code), f_lasti, ...)`` of its frames (hashing code objects
        themselves costs microseconds); the interned stacks keep their code objects alive,
        so an id in a key cannot be reused.  Looking an existing stack up takes no lock.
        """
        f = frame
        while f is not None and f.f_code.co_filename.startswith(PACKAGE_DIR):
            f = f.f_back
        top = f
        cache = self._cache
        if top is None:
            return 0
        if top is cache[0]:
            sid = cache[1].get(top.f_lasti)
            if sid is not None:
                return sid
        parent = top.f_back
        if parent is not None and not parent.f_code.co_flags & _RESUMABLE:
            pcache = self._parent_cache
            site = (parent.f_lasti, id(top.f_code), top.f_lasti)
            if pcache[0] is parent:
                sid = pcache[1].get(site)
                if sid is not None:
                    return sid
        else:
            site = None
        raw: list[int] = []
        append = raw.append
        left = self.depth
        while f is not None and left:
            append(id(f.f_code))
            append(f.f_lasti)
            f = f.f_back
            left -= 1
        key = tuple(raw)
        sid = self._ids.get(key)
        if sid is None:
            with self._lock:
                sid = self._ids.get(key)
                if sid is None:
                    frames: list[Any] = []
                    f = top
                    while f is not None and len(frames) < len(raw):
                        frames += (f.f_code, f.f_lasti)
                        f = f.f_back
                    sid = len(self._raw)
                    self._raw.append(tuple(frames))
                    self._ids[key] = sid
        cache = self._cache
        if cache[0] is top and len(cache[1]) < 64:
            cache[1][top.f_lasti] = sid
        else:
            self._cache = (top, {top.f_lasti: sid})
        if site is not None:
            pcache = self._parent_cache
            if pcache[0] is parent and len(pcache[1]) < 64:
                pcache[1][site] = sid
            else:
                self._parent_cache = (parent, {site: sid})
        return sid

    def here(self, skip: int = 1) -> int:
        """Capture the caller's stack (``skip`` frames above this call)."""
        try:
            frame = _getframe(skip + 1)
        except ValueError:  # pragma: no cover - no such frame
            return 0
        return self.capture(frame)

    def get(self, sid: int) -> Stack:
        """The resolved stack for ``sid`` (the empty stack for an unknown id)."""
        stack = self._resolved.get(sid)
        if stack is None:
            raw = self._raw[sid] if 0 <= sid < len(self._raw) else ()
            stack = _resolve(raw)
            self._resolved[sid] = stack
        return stack

    def forget_frame(self) -> None:
        """Drop the cached frame references (so their locals can be collected)."""
        self._cache = (None, {})
        self._parent_cache = (None, {})

    def __len__(self) -> int:
        return len(self._raw)


def format_stack(stack: Sequence[Frame], indent: str = "    ") -> str:
    """Render a stack the way AddressSanitizer prints one: ``#0 file:line in func``."""
    if not stack:
        return f"{indent}<no Python frames>"
    return "\n".join(f"{indent}#{i} {frame}" for i, frame in enumerate(stack))
