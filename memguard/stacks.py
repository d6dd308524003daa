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

__all__ = [
    "Frame", "Stack", "StackTable", "format_stack", "current_stack", "frame_record", "hide_framework_frames",
    "is_user_frame",
]

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


def frame_record(frame: FrameType) -> Frame:
    """The :class:`Frame` of a running frame: its file, current line and function."""
    code = frame.f_code
    return Frame(code.co_filename, _lineno(code, frame.f_lasti), getattr(code, "co_qualname", code.co_name))


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

    It reads the code and ``f_lasti`` of up to ``depth`` frames and keeps none of the
    frames: a cache that held a frame would keep its locals alive after the function
    returned, and one keyed by a frame's address would be fooled by a new frame at a dead
    one's address.  Generated unrolled for the depth (a loop costs a third more per frame).
    A top frame whose code is not in ``users`` (memguard's own, or not seen yet) goes to
    ``intern``.

    A full-depth stack is first looked up in a table keyed by its top frame's code and
    offset, whose entry holds the callers' code objects and offsets of the last stack seen
    there: they are compared by identity (``is``) and value, so only the top code's
    ``id()`` is taken and no long tuple is hashed.  On a mismatch the stack is looked up
    by ``(id(code), f_lasti, ...)`` in ``known`` and the entry replaced.  The entries hold
    code objects only (the interned stacks hold them too), one per call site.
    """
    head = [
        "def capture(f, id=id, known=known, intern=intern, users=users, sites=sites, site=sites.get):",
        "    if f is None: return 0",
        "    top = f",
        "    i0 = id(f.f_code)",
        "    if i0 not in users: return intern(f)",
    ]
    namespace: dict[str, Any] = {"known": known, "intern": intern, "users": users, "sites": {}}
    if depth <= 1:
        head.append("    return known((i0, f.f_lasti)) or intern(top)" if depth else "    return 0")
        exec("\n".join(head), namespace)  # noqa: S102 - generated from integers only
        return namespace["capture"]  # type: ignore[no-any-return]
    lines = head + ["    l0 = f.f_lasti; f = f.f_back"]
    ids = ["i0", "l0"]
    for i in range(1, depth):
        lines.append(f"    if f is None: return known(({', '.join(ids)},)) or intern(top)")
        lines.append(f"    c{i} = f.f_code; l{i} = f.f_lasti" + ("; f = f.f_back" if i < depth - 1 else ""))
        ids += (f"id(c{i})", f"l{i}")
    callers = ", ".join(f"c{i}, l{i}" for i in range(1, depth))
    seen = ", ".join(f"x{i}, y{i}" for i in range(1, depth))
    same = " and ".join(f"x{i} is c{i} and y{i} == l{i}" for i in range(1, depth))
    lines += [
        "    key = i0 + (l0 << 48)",  # (a collision only costs a miss: the entry is verified)
        "    entry = site(key)",
        "    if entry is not None:",
        f"        {seen}, sid = entry",
        f"        if {same}: return sid",
        f"    sid = known(({', '.join(ids)},)) or intern(top)",
        f"    sites[key] = ({callers}, sid)",
        "    return sid",
    ]
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

    With ``through=N``, a capture walks N frames more, so that a stack captured through
    one of memguard's wrappers registered with :meth:`pass_through` (the entry points of
    a heap with a debugging option, :mod:`memguard.heap.debugpaths`) is found by the
    same cheap lookup.  Those frames, like every frame of memguard's own, are left out of
    the stack as shown, which is cut to ``depth``.
    """

    __slots__ = (
        "depth", "_ids", "_shown", "_raw", "_resolved", "_lock", "_users", "_user_codes", "capture", "_walk", "_through",
    )

    def __init__(self, depth: int, through: int = 0) -> None:
        self.depth = depth
        #: frames a capture walks
        self._walk = depth + through
        #: ids of memguard's wrapper codes whose frames are captured and never shown
        self._through: set[int] = set()
        self._ids: dict[tuple[int, ...], int] = {(): 0}
        #: the key of each stack as shown (wrapper frames left out, cut to ``depth``) -> its
        #: id: captures that differ only in frames never shown share one id
        self._shown: dict[tuple[int, ...], int] = {(): 0}
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
        self.capture = _capturer(self._walk, self._ids.get, self._users, self._intern)

    @property
    def lock(self) -> threading.RLock:
        """The lock that guards interning (held across ``fork()`` by the heap's at-fork handlers)."""
        return self._lock

    def _intern(self, frame: FrameType) -> int:
        """The id of the stack from ``frame`` (memguard's frames skipped), interned if new."""
        f: FrameType | None = frame
        through = self._through
        while f is not None and f.f_code.co_filename.startswith(PACKAGE_DIR) and id(f.f_code) not in through:
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
        # The stack is filed under the frames the fast lookup reads (``_walk`` of them, a
        # wrapper's and memguard's own included) and shown without memguard's frames (a
        # wrapper's, or a C callback's between a frame at C's file:line and the Python code
        # that called into C), cut to ``depth``: captures that differ only in frames never
        # shown share one id.
        frames: list[Any] = []
        shown: list[Any] = []
        walk, depth = 2 * self._walk, 2 * self.depth
        while f is not None and (len(frames) < walk or len(shown) < depth):
            code = f.f_code
            if len(frames) < walk:
                frames += (code, f.f_lasti)
            if len(shown) < depth and not code.co_filename.startswith(PACKAGE_DIR):
                shown += (code, f.f_lasti)
            f = f.f_back
        key = tuple(id(x) if i % 2 == 0 else x for i, x in enumerate(frames))
        sid = self._ids.get(key)
        if sid is None:
            shown_key = tuple(id(x) if i % 2 == 0 else x for i, x in enumerate(shown))
            with self._lock:
                sid = self._ids.get(key)
                if sid is None:
                    sid = self._shown.get(shown_key)
                    if sid is None:
                        sid = len(self._raw)
                        self._raw.append(tuple(shown))
                        self._shown[shown_key] = sid
                    if key != shown_key:
                        self._user_codes.extend(frames[::2])  # the ids in the key stay taken
                    self._ids[key] = sid
        return sid

    def pass_through(self, code: CodeType) -> None:
        """Capture stacks that start at a frame of ``code`` (a wrapper of memguard's, see the
        class documentation) with the cheap lookup; its frames are never shown."""
        with self._lock:
            self._user_codes.append(code)
            self._through.add(id(code))
            self._users.add(id(code))

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
            stack = _resolve(self._raw[sid] if 0 <= sid < len(self._raw) else ())
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
