"""The partition key: what the collector stores in place of an application id."""

from __future__ import annotations

import hashlib

__all__ = ["PARTITION_KEY_LENGTH", "partition_key"]

PARTITION_KEY_LENGTH = 16


def partition_key(application_id: str) -> str:
    """The stored stand-in for an application id: a sha256 hex prefix."""
    digest = hashlib.sha256(application_id.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:PARTITION_KEY_LENGTH]
