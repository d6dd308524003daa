"""Checks of the integer arguments every public call takes (sizes, counts, offsets, classes)."""

from __future__ import annotations

import operator

__all__ = ["int_arg"]


def int_arg(value: object, what: str) -> int:
    """``value`` as an int >= 0: anything with ``__index__`` but a bool, a float or text.

    Raises :class:`TypeError` naming ``what`` for a value of the wrong type (a bool is an
    int to Python, never a size: ``malloc(True)`` is a mistake) and :class:`ValueError`
    for a negative one.
    """
    if type(value) is not int:
        if isinstance(value, (bool, float, complex, str, bytes)) or not hasattr(value, "__index__"):
            raise TypeError(f"{what} must be an int, got {type(value).__name__}")
        value = operator.index(value)  # type: ignore[arg-type]
    if value < 0:  # type: ignore[operator]
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value  # type: ignore[return-value]
