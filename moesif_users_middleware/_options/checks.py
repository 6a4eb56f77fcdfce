"""The checks of the option table's rows: each takes ``(value, label)`` and returns the
value to use or raises :class:`ConfigurationError` with a message starting with
``label``."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError

__all__ = [
    "MAX_SECONDS",
    "MIN_BATCH_BYTES",
    "MIN_SPOOL_BYTES",
    "Check",
    "boolean",
    "claim_name",
    "directory",
    "integer",
    "positive_length",
    "seconds",
]

Check = Callable[[Any, str], Any]

MIN_BATCH_BYTES = 256
MIN_SPOOL_BYTES = 64 * 1024
MAX_SECONDS = 24 * 3600.0


def _kind(value: object) -> str:
    return type(value).__name__


def boolean(value: Any, label: str) -> bool:
    """``True`` or ``False`` exactly."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{label} must be True or False, not {value!r}")
    return value


def integer(low: int) -> Check:
    """An ``int`` (not a ``bool``) of at least ``low``."""

    def check(value: Any, label: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"{label} must be an integer, not {_kind(value)}")
        if value < low:
            raise ConfigurationError(f"{label} must be at least {low}, got {value}")
        return value

    return check


def seconds(allow_zero: bool) -> Check:
    """A finite number of seconds, more than zero (or zero too), at most a day."""

    def check(value: Any, label: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"{label} must be a number of seconds, not {_kind(value)}")
        number = float(value)
        if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
            bound = "zero or more" if allow_zero else "more than zero"
            raise ConfigurationError(f"{label} must be {bound} seconds, got {value!r}")
        if number > MAX_SECONDS:
            raise ConfigurationError(
                f"{label} must be at most {MAX_SECONDS:g} seconds, got {value!r}"
            )
        return number

    return check


def claim_name(value: Any, label: str) -> str | None:
    """``None`` or a non-empty string (stripped)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{label} must be a non-empty string")
    return value.strip()


def positive_length(value: Any, label: str) -> int:
    """A positive ``int`` (exactly: no ``bool``, no subclass)."""
    if type(value) is not int or value < 1:
        raise ConfigurationError(f"{label} must be a positive integer")
    return value


def directory(value: Any, label: str) -> str | None:
    """``None`` (off) or a directory path (``str`` or path-like), made absolute."""
    if value is None:
        return None
    try:
        path = os.fspath(value)
    except TypeError:
        raise ConfigurationError(f"{label} must be a directory path, not {_kind(value)}") from None
    if not isinstance(path, str) or not path.strip():
        raise ConfigurationError(f"{label} must be a non-empty directory path")
    return os.path.abspath(path)
