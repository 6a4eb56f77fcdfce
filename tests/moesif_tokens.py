"""Credentials for the side-by-side tests: unsigned JWTs and Basic headers."""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["basic", "bearer_jwt"]


def _segment(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bearer_jwt(**claims: Any) -> str:
    """``Bearer <header>.<payload>.<signature>`` (the signature is not checked by anyone)."""
    return f"Bearer {_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(claims)}.c2lnbmF0dXJl"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
