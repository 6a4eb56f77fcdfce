"""From request body to validated records: size limit, gzip, strict JSON, validation.

Every problem with what the client sent becomes a :class:`ClientError` (400, 413 or
415), never anything else.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, NoReturn

from starlette.requests import ClientDisconnect, Request

from ..models import ValidationError
from .errors import ClientError
from .kinds import Kind

__all__ = ["parse_json", "parse_records", "read_body"]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, gunzipped if sent with ``Content-Encoding: gzip``.

    Both the bytes received and the bytes after gunzip are capped at ``limit``; the
    cap is enforced while streaming, so an oversized body or a gzip bomb costs at most
    ``limit`` bytes of memory.
    """
    gzipped = _is_gzip(request.headers.getlist("content-encoding"))
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 19 or int(declared) > limit):
        _too_large(limit)
    gunzip = _Gunzip(limit) if gzipped else None
    parts: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                _too_large(limit)
            if gunzip is not None:
                gunzip.feed(chunk)
            else:
                parts.append(chunk)
    except ClientDisconnect:
        raise ClientError(400, "invalid body", "client disconnected mid-body") from None
    return gunzip.finish() if gunzip is not None else b"".join(parts)


def parse_records(body: bytes, kind: Kind, *, batch: bool) -> list[dict[str, Any]]:
    """Parse and normalize one record of ``kind`` (``batch=False``) or an array of them
    into wire dicts.

    An invalid record rejects the whole payload: 400 naming the field (and, for a
    batch, the index).
    """
    text = _decode(body)
    payload = parse_json(text)
    noun = kind.noun
    if batch:
        if not isinstance(payload, list):
            raise ClientError(400, "invalid body", f"expected a JSON array of {noun} objects")
        items: list[Any] = payload
    else:
        if not isinstance(payload, dict):
            raise ClientError(400, "invalid body", f"expected a JSON object (one {noun})")
        items = [payload]
    # Validation rejects text UTF-8 (and SQLite) cannot hold, naming the field: the lone
    # surrogates an escape like \ud800 produces.
    records: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            record = kind.normalize(item, noun)
        except ValidationError as exc:
            _invalid(kind, index if batch else None, exc.field, exc.message)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            _invalid(kind, index if batch else None, noun, str(exc) or type(exc).__name__)
        records.append(record)
    return records


def parse_json(text: str) -> Any:
    """Strict JSON: no NaN/Infinity; duplicate keys keep the last value."""
    if not text.strip():
        raise ClientError(400, "invalid JSON", "empty body")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ClientError(400, "invalid JSON", "nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers with too many digits
        raise ClientError(400, "invalid JSON", str(exc)) from None


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(
            400, "invalid body", f"body is not valid UTF-8 (byte {exc.start})"
        ) from None


def _invalid(kind: Kind, index: int | None, field: str, message: str) -> NoReturn:
    extra: dict[str, Any] = {} if index is None else {"index": index}
    raise ClientError(400, f"invalid {kind.noun}", message, field=field, **extra)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _too_large(limit: int) -> NoReturn:
    raise ClientError(413, "payload too large", f"request body exceeds {limit} bytes", limit=limit)


def _is_gzip(values: list[str]) -> bool:
    codings = [coding.strip().lower() for value in values for coding in value.split(",")]
    codings = [coding for coding in codings if coding not in ("", "identity")]
    if not codings:
        return False
    if codings in (["gzip"], ["x-gzip"]):
        return True
    raise ClientError(
        415,
        "unsupported content encoding",
        "Content-Encoding must be gzip or identity",
        headers={"Accept-Encoding": "gzip, identity"},
    )


class _Gunzip:
    """Incremental gunzip (several members allowed) that never outputs more than ``limit``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._parts: list[bytes] = []
        self._inflater = zlib.decompressobj(wbits=31)
        self._members = 0
        self._partial = False  # the current member has started but not ended

    def feed(self, data: bytes) -> None:
        try:
            while data:
                # max_length bounds memory: at most one byte past the limit is inflated.
                out = self._inflater.decompress(data, self._limit - self._size + 1)
                self._size += len(out)
                if self._size > self._limit:
                    _too_large(self._limit)
                self._parts.append(out)
                if self._inflater.eof:
                    data = self._inflater.unused_data
                    self._inflater = zlib.decompressobj(wbits=31)
                    self._members += 1
                    self._partial = False
                else:
                    data = self._inflater.unconsumed_tail
                    self._partial = True
        except zlib.error as exc:
            raise ClientError(400, "invalid body", f"invalid gzip data: {exc}") from None

    def finish(self) -> bytes:
        if self._partial or self._members == 0:
            raise ClientError(400, "invalid body", "truncated or empty gzip data")
        return b"".join(self._parts)
