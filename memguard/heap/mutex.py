"""The heap's mutual exclusion: one token in a list.

``del token[0]`` and ``list.append()`` are atomic in CPython (under the GIL, and under
the per-object locks of free-threaded builds), so a list holding one token is a mutex
whose uncontended acquire and release are two plain C operations: about a third of the
cost of ``threading.Lock.acquire()``/``release()``, which parse keyword arguments on
every call.  The heap's fast paths take and give the token directly; everything else
enters the mutex with ``with``, which is re-entrant per thread and waits for the token.

**Interrupts.**  A ``KeyboardInterrupt`` (or any asynchronous exception) is raised only
where the interpreter checks for one: after a call returns, at a backward jump, at the
start of a function, and (for a tracer) at the start of a line.  So the token is taken
with ``del token[0]`` (an operation, not a call) and the taker records that it holds it
on the same line, with no call in between: an interrupt lands either before both or
after both, and a ``try`` around the critical section knows whether to give the token
back.  The token is given back with a call, and an interrupt raised after a call
returns finds it given.  The one window left is ``__exit__`` itself (a Python function,
interruptible on entry): a ``with`` holder is recorded (its thread and the frame that
entered), and a hold whose frame is no longer running anywhere is stale.  A thread that
waits for the token takes a stale hold over (:meth:`Mutex._recover`): a lost token never
hangs ``check()``, ``close()`` or the exit report.

A fast path holds the token only across code that runs no Python code of anyone else
and allocates no object the garbage collector tracks, so no finalizer, hook or callback
can run while it is held: re-entering the heap from such code (a ``__del__`` that
frees a block, a plugin) always finds the token free or held by another thread.  The
fast paths do not record an owner, so code that holds the token through a fast path
must never block on the mutex; a signal handler that calls the heap could do so, as
calling ``malloc`` from a C signal handler would.
"""

from __future__ import annotations

import sys
import threading
import time
from threading import get_ident
from types import FrameType
from typing import Callable

__all__ = ["Mutex"]

_getframe = sys._getframe


def _running(frame: FrameType) -> bool:
    """Whether ``frame`` is on the stack of some thread (it has not returned)."""
    for top in sys._current_frames().values():
        f: FrameType | None = top
        while f is not None:
            if f is frame:
                return True
            f = f.f_back
    return False


class Mutex:
    """A re-entrant mutex built on one token; see the module documentation.

    :ivar token: the list holding the token while nobody holds the mutex.  Fast paths
        take it with ``del token[0]`` (:class:`IndexError` when another holder has it),
        recording on the same line that they hold it.
    :ivar take: remove the token; raises :class:`IndexError` when another holder has it.
    :ivar give: put the token back (call with any one argument).
    """

    __slots__ = ("token", "take", "give", "_owner", "_entry", "_depth", "_waiting", "_recovery")

    def __init__(self) -> None:
        token: list[bool] = [True]
        self.token = token
        self.take: Callable[[], bool] = token.pop
        self.give: Callable[[bool], None] = token.append
        #: the thread holding the mutex through ``with`` (None: free, or held by a fast path)
        self._owner: int | None = None
        #: the frame whose ``with`` took the token (alive while the hold is real)
        self._entry: FrameType | None = None
        self._depth = 0
        #: One entry per thread waiting in ``__enter__`` (a hint for ``__exit__``).
        self._waiting: list[None] = []
        #: Serializes the takeover of a stale hold.
        self._recovery = threading.Lock()

    def __enter__(self) -> Mutex:
        me = get_ident()
        frame = _getframe(1)
        if self._owner == me and self._entered_above(frame):
            self._depth += 1
            return self
        token = self.token
        try:
            # Taking the token and recording the holder: one line, no call (see above).
            del token[0]; self._owner = me; self._entry = frame  # noqa: E702
        except IndexError:
            self._wait(me, frame)
        self._depth = 1
        return self

    def _entered_above(self, frame: FrameType | None) -> bool:
        """Whether the frame that took the token is ``frame`` or one of its callers.

        True for a real re-entry; False when this thread lost the token to an interrupt
        in ``__exit__`` and has since left the frame that took it.
        """
        entry = self._entry
        while frame is not None:
            if frame is entry:
                return True
            frame = frame.f_back
        return False

    def _wait(self, me: int, frame: FrameType) -> None:
        """Take the token from another holder: yield the GIL until it is given back.

        Every so often, look whether the holder is a ``with`` whose frame has returned
        (the token was lost to an interrupt): then take the hold over.
        """
        token = self.token
        self._waiting.append(None)
        try:
            tries = 0
            while True:
                # sleep(0) lets the holder run and finish; after many tries (a long
                # hold, such as a check() of a big heap) back off to save the CPU.
                time.sleep(0 if tries < 1000 else 1e-4)
                try:
                    del token[0]; self._owner = me; self._entry = frame  # noqa: E702
                    return
                except IndexError:
                    tries += 1
                if tries & 255 == 64 and self._recover(me, frame):
                    return
        finally:
            self._waiting.pop()

    def _recover(self, me: int, frame: FrameType) -> bool:
        """Take over a hold whose ``with`` frame is no longer running; whether it was taken.

        A fast path never loses the token (it gives it back in a ``try``), so only a
        ``with`` hold can be stale: its frame has returned (or unwound) without
        ``__exit__`` giving the token back.  Nobody else can give that token back, so
        the thread that sees it takes the hold over, one thread at a time.
        """
        entry = self._entry
        if entry is None or self.token or _running(entry):
            return False
        with self._recovery:
            if self._entry is not entry or self.token:
                return False
            self._owner = me; self._entry = frame  # noqa: E702
            return True

    def __exit__(self, *exc: object) -> None:
        depth = self._depth - 1
        if depth:
            self._depth = depth
            return
        # Forget the holder and give the token back: one line, the call last.
        self._depth = 0; self._owner = None; self._entry = None; self.give(True)  # noqa: E702
        if self._waiting:
            time.sleep(0)  # hand over: let a waiting thread take the token first

    def reset_after_fork(self) -> None:
        """In a forked child: the token back, no owner, nobody waiting.

        The child's only thread is the one that forked; any other holder or waiter was
        a parent thread, which does not exist in the child.
        """
        try:
            self.take()
        except IndexError:
            pass
        self.give(True)
        self._owner = None
        self._entry = None
        self._depth = 0
        self._waiting.clear()
        self._recovery = threading.Lock()  # its holder, if any, was a parent thread

    def held(self) -> bool:
        """Whether the calling thread holds the mutex through ``with``."""
        return self._owner == get_ident()
