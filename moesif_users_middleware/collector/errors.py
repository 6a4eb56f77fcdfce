"""The collector's client-error exception and its JSON rendering."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

__all__ = ["ClientError", "json_response"]

_MAX_TEXT = 300  # error fields echo client input; keep them short


class ClientError(Exception):
    """A request the client got wrong: answered with ``status`` and a JSON body."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> Response:
        """The JSON error response: ``{"error": ..., "message": ..., **extra}``."""
        body: dict[str, Any] = {"error": self.error, "message": _clip(self.message)}
        for key, value in self.extra.items():
            body[key] = _clip(value) if isinstance(value, str) else value
        return json_response(body, self.status, self.headers)


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Compact JSON; falls back to ASCII escapes when a string cannot be UTF-8 encoded."""
    try:
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        body = json.dumps(content, separators=(",", ":")).encode("ascii")
    return Response(body, status_code, headers, media_type="application/json")


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"
