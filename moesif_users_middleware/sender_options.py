"""The sender's sizing and timing options: names, defaults and validation.

Every adapter accepts these keyword arguments (upper-case keys in Django settings) and
forwards them to :func:`moesif_users_middleware.sender.get_sender`.

========================  ==========  ==================================================
option                    default     meaning
========================  ==========  ==================================================
``batch_size``            100         records per POST at most
``max_batch_bytes``       1 MiB       serialized JSON per POST at most (before gzip)
``max_queue_size``        10,000      distinct users pending; new users beyond it are
                                      dropped (and counted), pending ones still merge
``flush_interval``        2.0 s       time between sends (each wait jittered +-20 %)
``min_update_interval``   60.0 s      an update identical to the last one delivered for
                                      that user within this time is skipped, and so is a
                                      capture identical to the user's last one; 0 disables
``timeout``               10.0 s      per HTTP request, start to last byte (connect
                                      capped at 5 s)
``shutdown_timeout``      3.0 s       longest the exit flush may hold the process
``gzip``                  True        gzip request bodies larger than 1 KiB (level 6)
========================  ==========  ==================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import ConfigurationError, unknown_options_error

__all__ = ["SENDER_OPTIONS", "SenderOptions", "UnknownOptionError", "validate_sender_options"]

SENDER_OPTIONS: tuple[str, ...] = (
    "batch_size",
    "max_batch_bytes",
    "max_queue_size",
    "flush_interval",
    "min_update_interval",
    "timeout",
    "shutdown_timeout",
    "gzip",
)
_MIN_BATCH_BYTES = 256
_MAX_SECONDS = 24 * 3600.0


class UnknownOptionError(ConfigurationError, TypeError):
    """An option name the sender does not know (both a ``ConfigurationError`` and a ``TypeError``)."""


@dataclass(frozen=True)
class SenderOptions:
    """Validated sender options (see the module docstring for their meaning)."""

    batch_size: int = 100
    max_batch_bytes: int = 1024 * 1024
    max_queue_size: int = 10_000
    flush_interval: float = 2.0
    min_update_interval: float = 60.0
    timeout: float = 10.0
    shutdown_timeout: float = 3.0
    gzip: bool = True

    @property
    def max_queue_bytes(self) -> int:
        """Approximate bound on the serialized size of everything pending (16 batches)."""
        return 16 * self.max_batch_bytes


def validate_sender_options(options: Mapping[str, Any]) -> SenderOptions:
    """Check names, types and ranges; ``ConfigurationError`` names the offending option."""
    unknown = sorted(name for name in options if name not in SENDER_OPTIONS)
    if unknown:
        error = unknown_options_error(unknown, SENDER_OPTIONS, noun="sender option")
        raise UnknownOptionError(str(error))
    values: dict[str, Any] = {}
    for name in ("batch_size", "max_queue_size"):
        if name in options:
            values[name] = _integer(name, options[name], 1)
    if "max_batch_bytes" in options:
        values["max_batch_bytes"] = _integer(
            "max_batch_bytes", options["max_batch_bytes"], _MIN_BATCH_BYTES
        )
    for name, allow_zero in (
        ("flush_interval", False),
        ("min_update_interval", True),
        ("timeout", False),
        ("shutdown_timeout", True),
    ):
        if name in options:
            values[name] = _seconds(name, options[name], allow_zero)
    if "gzip" in options:
        if not isinstance(options["gzip"], bool):
            raise ConfigurationError(f"gzip must be True or False, not {_kind(options['gzip'])}")
        values["gzip"] = options["gzip"]
    return SenderOptions(**values)


def _integer(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer, not {_kind(value)}")
    if value < low:
        raise ConfigurationError(f"{name} must be at least {low}, got {value}")
    return value


def _seconds(name: str, value: Any, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, not {_kind(value)}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigurationError(f"{name} must be {bound} seconds, got {value!r}")
    if seconds > _MAX_SECONDS:
        raise ConfigurationError(f"{name} must be at most {_MAX_SECONDS:g} seconds, got {value!r}")
    return seconds


def _kind(value: Any) -> str:
    return type(value).__name__
