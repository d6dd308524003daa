"""The heap's mutual exclusion: one token in a list.

``list.pop()`` and ``list.append()`` are atomic in CPython (under the GIL, and under
the per-object locks of free-threaded builds), so a list holding one token is a mutex
whose uncontended acquire and release are two plain C calls: about a third of the cost
of ``threading.Lock.acquire()``/``release()``, which parse keyword arguments on every
call.  The heap's fast paths take and give the token directly; everything else enters
the mutex with ``with``, which is re-entrant per thread and waits for the token.

A fast path holds the token only across code that runs no Python code of anyone else
and allocates no object the garbage collector tracks, so no finalizer, hook or callback
can run while it is held: re-entering the heap from such code (a ``__del__`` that
frees a block, a plugin) always finds the token free or held by another thread.  The
fast paths do not record an owner, so code that holds the token through a fast path
must never block on the mutex; a signal handler that calls the heap could do so, as
calling ``malloc`` from a C signal handler would.
"""

from __future__ import annotations

import time
from threading import get_ident
from typing import Callable

__all__ = ["Mutex"]


class Mutex:
    """A re-entrant mutex built on one token; see the module documentation.

    :ivar take: remove the token; raises :class:`IndexError` when another holder has it.
    :ivar give: put the token back (call with any one argument).
    """

    __slots__ = ("take", "give", "_owner", "_depth", "_waiting")

    def __init__(self) -> None:
        token: list[bool] = [True]
        self.take: Callable[[], bool] = token.pop
        self.give: Callable[[bool], None] = token.append
        self._owner: int | None = None
        self._depth = 0
        #: One entry per thread waiting in ``__enter__`` (a hint for ``__exit__``).
        self._waiting: list[None] = []

    def __enter__(self) -> Mutex:
        me = get_ident()
        if self._owner == me:
            self._depth += 1
            return self
        take = self.take
        try:
            take()
        except IndexError:
            self._wait()
        self._owner = me
        self._depth = 1
        return self

    def _wait(self) -> None:
        """Take the token from another holder: yield the GIL until it is given back."""
        take = self.take
        self._waiting.append(None)
        try:
            tries = 0
            while True:
                # sleep(0) lets the holder run and finish; after many tries (a long
                # hold, such as a check() of a big heap) back off to save the CPU.
                time.sleep(0 if tries < 1000 else 1e-4)
                try:
                    take()
                    return
                except IndexError:
                    tries += 1
        finally:
            self._waiting.pop()

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if not self._depth:
            self._owner = None
            self.give(True)
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
        self._depth = 0
        self._waiting.clear()

    def held(self) -> bool:
        """Whether the calling thread holds the mutex through ``with``."""
        return self._owner == get_ident()
