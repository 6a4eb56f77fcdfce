"""Request bodies: compact JSON, gzipped when larger than 1 KiB."""

from __future__ import annotations

import json
import zlib
from typing import Any

__all__ = ["GZIP_LEVEL", "GZIP_MIN_BYTES", "compress", "encode_body"]

GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 3  # chosen by benchmarks/bench_gzip.py (BENCHMARKS.md)
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_body(payload: Any, *, gzip: bool = True) -> tuple[bytes, str | None]:
    """Compact JSON bytes, gzipped when larger than 1 KiB; returns ``(body, content_encoding)``."""
    body = _ENCODER.encode(payload).encode("utf-8")
    return compress(body) if gzip else (body, None)


def compress(body: bytes) -> tuple[bytes, str | None]:
    """Gzip ``body`` (level ``GZIP_LEVEL``) when it is larger than ``GZIP_MIN_BYTES``."""
    if len(body) <= GZIP_MIN_BYTES:
        return body, None
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return packer.compress(body) + packer.flush(), "gzip"
