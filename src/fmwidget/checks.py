"""Argument checks shared by the widget and the engines: messages that name the argument and the fix."""

from __future__ import annotations

import numbers
from typing import Any

from traitlets import TraitError

__all__ = ["choice", "clip", "index", "index_arg", "show"]


def show(value: Any, limit: int = 60) -> str:
    """A short repr for messages: a hostile browser may send megabyte strings or huge ints."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        text = f"{'-' if value < 0 else ''}<{value.bit_length()}-bit int>"  # str() may refuse it
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(message: str, limit: int = 500) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def choice(name: str, value: Any, options) -> Any:
    """``value`` if it is one of ``options``, else a TraitError listing them."""
    if isinstance(value, bool) or value not in tuple(options):
        raise TraitError(f"{name}={show(value)} is not allowed; choose one of {', '.join(map(repr, options))}.")
    return value


def index(name: str, value: Any, count: int, what: str) -> int:
    """``value`` if it is an int in ``0 .. count - 1``, else a TraitError that gives the range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy ints too
        raise TraitError(f"{name} must be an int, got {type(value).__name__} {show(value)}.")
    if not 0 <= value < count:
        raise TraitError(f"{name}={show(value)} is out of range: {what} has {count}, so use 0 to {count - 1}.")
    return int(value)


def index_arg(name: str, value: Any, count: int, what: str) -> int:
    """:func:`index` for Python arguments: a TypeError or ValueError instead of a TraitError."""
    try:
        return index(name, value, count, what)
    except TraitError as err:
        raise (TypeError if "must be an int" in str(err) else ValueError)(str(err)) from None
