"""Cheap Python stack capture: raw frames on the hot path, source lines only when shown.

A stack is captured as a tuple of ``(code, lasti)`` pairs, interned in a
:class:`StackTable` so that every allocation from the same site shares one entry
and one small integer id.  Turning code offsets into line numbers happens only when
a stack is rendered.  No ``traceback`` or ``inspect`` is used.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, Callable, Sequence

from memguard._location import PACKAGE_DIR, framework_dirs, is_framework_file

__all__ = ["Frame", "Stack", "StackTable", "format_stack", "current_stack", "hide_framework_frames", "is_user_frame"]

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


def _capturer(
    depth: int, known: Callable[[tuple[int, ...]], int | None], users: set[int], intern: Callable[[FrameType], int]
) -> Callable[[FrameType | None], int]:
    """The capture function of a table: look a user frame's stack up, ``intern`` it on a miss.

    It reads ``(id(code), f_lasti)`` of up to ``depth`` frames and keeps none of them: a
    cache that held a frame would keep its locals alive after the function returned, and
    one keyed by a frame's address would be fooled by a new frame at a dead one's address.
    Generated unrolled for the depth (a loop costs a third more per frame).  A top frame
    whose code is not in ``users`` (memguard's own, or not seen yet) goes to ``intern``.
    """
    lines = [
        "def capture(f, id=id, known=known, intern=intern, users=users):",
        "    if f is None: return 0",
        "    top = f",
        "    c0 = id(f.f_code)",
        "    if c0 not in users: return intern(f)",
    ]
    names: list[str] = []
    for i in range(depth):
        code = "c0" if i == 0 else "id(f.f_code)"
        lines.append(f"    c{i} = {code}; l{i} = f.f_lasti; f = f.f_back")
        names += (f"c{i}", f"l{i}")
        if i < depth - 1:
            lines.append(f"    if f is None: return known(({', '.join(names)},)) or intern(top)")
    lines.append(f"    return known(({', '.join(names)},)) or intern(top)" if depth else "    return 0")
    namespace: dict[str, Any] = {"known": known, "intern": intern, "users": users}
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from integers only
    capture: Callable[[FrameType | None], int] = namespace["capture"]
    return capture


class StackTable:
    """Interns captured stacks; id 0 is the empty stack.

    A capture walks up to ``depth`` frames and reads each one's code and instruction
    offset; the flat tuple of those is looked up without a lock, and only a stack never
    seen before is interned under it.  No frame is kept: a stack table never keeps a
    caller's locals alive.  Frames inside the memguard package are skipped, so stacks
    start at the user's code.
    """

    __slots__ = ("depth", "_ids", "_raw", "_resolved", "_lock", "_users", "_user_codes", "capture")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._ids: dict[tuple[int, ...], int] = {(): 0}
        self._raw: list[tuple[Any, ...]] = [()]
        self._resolved: dict[int, Stack] = {0: ()}
        # Re-entrant: the collector may run a finalizer that allocates while it is held.
        self._lock = threading.RLock()
        #: ids of the code objects outside memguard that a capture started at (the codes
        #: are kept in ``_user_codes``, so no id in the set can be reused)
        self._users: set[int] = set()
        self._user_codes: list[CodeType] = []
        #: ``capture(frame) -> id``: intern the stack that starts at ``frame`` (memguard's
        #: own frames at the top skipped, so a call through a wrapper or a C callback is
        #: attributed to the user's frame).  A stack is keyed by the flat tuple
        #: ``(id(code), f_lasti, ...)`` of its frames (hashing code objects themselves
        #: costs microseconds); the interned stacks keep their code objects alive, so an
        #: id in a key cannot be reused.  Looking an existing stack up takes no lock.
        self.capture = _capturer(depth, self._ids.get, self._users, self._intern)

    @property
    def lock(self) -> threading.RLock:
        """The lock that guards interning (held across ``fork()`` by the heap's at-fork handlers)."""
        return self._lock

    def _intern(self, frame: FrameType) -> int:
        """The id of the stack from ``frame`` (memguard's frames skipped), interned if new."""
        f: FrameType | None = frame
        while f is not None and f.f_code.co_filename.startswith(PACKAGE_DIR):
            f = f.f_back
        if f is None:
            return 0
        code = f.f_code
        if id(code) not in self._users:
            with self._lock:
                if id(code) not in self._users:
                    self._user_codes.append(code)
                    self._users.add(id(code))
        elif f is not frame:  # called through memguard (a wrapper, a C callback): the fast lookup
            return self.capture(f)
        # memguard's frames below the top (a C callback between a frame at C's file:line
        # and the Python code that called into C) are left out too; the stack is also
        # filed under the raw frames the fast lookup reads.
        frames: list[Any] = []
        raw: list[Any] = []
        own = False
        while f is not None and len(frames) < 2 * self.depth:
            code = f.f_code
            if len(raw) < 2 * self.depth:
                raw += (code, f.f_lasti)
            if code.co_filename.startswith(PACKAGE_DIR):
                own = True
            else:
                frames += (code, f.f_lasti)
            f = f.f_back
        key = tuple(id(x) if i % 2 == 0 else x for i, x in enumerate(frames))
        raw_key = tuple(id(x) if i % 2 == 0 else x for i, x in enumerate(raw)) if own else key
        sid = self._ids.get(key)
        if sid is None or raw_key not in self._ids:
            with self._lock:
                sid = self._ids.get(key)
                if sid is None:
                    sid = len(self._raw)
                    self._raw.append(tuple(frames))
                    self._ids[key] = sid
                if raw_key is not key and raw_key not in self._ids:
                    self._user_codes.extend(raw[::2])  # the ids in the raw key stay taken
                    self._ids[raw_key] = sid
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

    def __len__(self) -> int:
        return len(self._raw)


def format_stack(stack: Sequence[Frame], indent: str = "    ") -> str:
    """Render a stack the way AddressSanitizer prints one: ``#0 file:line in func``."""
    if not stack:
        return f"{indent}<no Python frames>"
    return "\n".join(f"{indent}#{i} {frame}" for i, frame in enumerate(stack))


def hide_framework_frames(stack: Stack) -> Stack:
    """``stack`` without the frames of pytest, pluggy, ``runpy`` and ``importlib``.

    Applied when a report is made, never to the captured stacks.  A stack made of
    framework frames only is kept whole (an allocation by the framework itself).
    """
    dirs = framework_dirs()
    kept = tuple(f for f in stack if not is_framework_file(f.filename, dirs))
    return kept if kept else stack
