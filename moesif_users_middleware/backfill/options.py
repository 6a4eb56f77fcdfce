"""How ``moesif-users send`` batches and sends: :class:`BackfillOptions` and its defaults."""

from __future__ import annotations

from dataclasses import dataclass

from .._delivery.options import SenderOptions
from .._delivery.retry import DEFAULT_RETRY, RetryPolicy

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_RETRY_TIMEOUT",
    "BackfillOptions",
]

DEFAULT_BATCH_SIZE = 1000
DEFAULT_MAX_BATCH_BYTES = SenderOptions.max_batch_bytes  # the sender's: 1 MiB
DEFAULT_RETRY_TIMEOUT = 60.0


@dataclass(frozen=True)
class BackfillOptions:
    """How to batch and send (see ``moesif-users send --help``)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    dry_run: bool = False
    max_rate: float | None = None  # records per second
    retry_timeout: float = DEFAULT_RETRY_TIMEOUT  # per batch, including waits
    gzip: bool = True
    retry: RetryPolicy = DEFAULT_RETRY  # the sender's backoff; its deadline is retry_timeout

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.max_batch_bytes < 1024:
            raise ValueError("max_batch_bytes must be at least 1024")
        if self.max_rate is not None and self.max_rate <= 0:
            raise ValueError("max_rate must be positive")
        if self.retry_timeout < 0:
            raise ValueError("retry_timeout must not be negative")
