"""The sender's sizing and timing options: the validated :class:`SenderOptions`.

Every adapter accepts these keyword arguments (upper-case keys in Django settings) and
forwards them to :func:`moesif_users_middleware.sender.get_sender`. Their names,
defaults, checks and meaning are rows of the option table (:mod:`._options`, rendered in
the README); in short:

- ``batch_size`` (100): records per POST at most;
- ``max_batch_bytes`` (1 MiB): serialized JSON per POST at most (before gzip);
- ``max_queue_size`` (10,000) and ``max_queue_bytes`` (16 MiB): distinct users pending
  and their serialized size (estimated); new users beyond either are dropped (and
  counted), pending ones still merge;
- ``flush_interval`` (2 s): time between sends (each wait jittered +-20 %);
- ``min_update_interval`` (60 s): an update identical to the last one delivered for
  that user within this time is skipped, and so is a capture identical to the user's
  last one; 0 disables;
- ``timeout`` (10 s): per HTTP request, start to last byte (connect capped at 5 s);
- ``shutdown_timeout`` (3 s): longest the exit flush may hold the process;
- ``gzip`` (True): gzip request bodies larger than 1 KiB;
- ``spool_dir`` (off; ``MOESIF_USERS_SPOOL_DIR``) and ``max_spool_bytes`` (100 MiB):
  the durable spool (:mod:`.spool`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._options import (
    SENDER_OPTIONS,
    check_option,
    from_environment,
    option,
    unknown_options_error,
)
from ..errors import UnknownOptionError

__all__ = ["SENDER_OPTIONS", "SenderOptions", "UnknownOptionError", "validate_sender_options"]


def _default(name: str) -> Any:
    return option(name).default


@dataclass(frozen=True)
class SenderOptions:
    """Validated sender options (defaults from the option table)."""

    batch_size: int = _default("batch_size")
    max_batch_bytes: int = _default("max_batch_bytes")
    max_queue_size: int = _default("max_queue_size")
    max_queue_bytes: int = _default("max_queue_bytes")
    flush_interval: float = _default("flush_interval")
    min_update_interval: float = _default("min_update_interval")
    timeout: float = _default("timeout")
    shutdown_timeout: float = _default("shutdown_timeout")
    gzip: bool = _default("gzip")
    spool_dir: str | None = _default("spool_dir")
    max_spool_bytes: int = _default("max_spool_bytes")


def validate_sender_options(
    options: Mapping[str, Any], label: Callable[[str], str] = str
) -> SenderOptions:
    """Check names, types and ranges; ``ConfigurationError`` names the offending option.

    An option not given is read from its environment variable, if it has one and it is set
    (``MOESIF_USERS_SPOOL_DIR``).

    ``label`` spells an option's name as the user wrote it (Django settings keys, ...).
    """
    unknown = sorted(name for name in options if name not in SENDER_OPTIONS)
    if unknown:
        error = unknown_options_error(unknown, SENDER_OPTIONS, noun="sender option")
        raise UnknownOptionError(str(error))
    values = {name: check_option(name, options[name], label(name)) for name in options}
    return SenderOptions(**values, **from_environment(values))
