"""The in-memory Moesif API the recorder routes senders to: an httpx transport.

It answers every batch (and single-record) POST of a known record kind with 201, keeps
each request's records as one :class:`RecordedBatch`, and merges them per id with the
API's merge rules (:func:`moesif_users_middleware._merge.merge_update`: metadata merged
recursively, campaign key by key, a newer scalar replaces an older one) plus the API's
append-only session tokens (kept as ``session_tokens``, as the collector shows them).
Record kinds come from the delivery engine's table, so a new kind is recorded as soon
as the sender knows its batch endpoint.
"""

from __future__ import annotations

import copy
import gzip
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .._delivery.kinds import KINDS, RecordKind
from .._merge import merge_update
from .._transport.base import APPLICATION_ID_HEADER

__all__ = ["RecordedBatch", "RecordingTransport", "merge_record"]

# "/v1/users/batch" -> (users, True), "/v1/users" -> (users, False), and so on per kind.
_ROUTES: dict[str, tuple[RecordKind, bool]] = {
    path: (kind, batch)
    for kind in KINDS.values()
    for path, batch in ((kind.batch_path, True), (kind.batch_path.removesuffix("/batch"), False))
}


@dataclass(frozen=True)
class RecordedBatch:
    """One request a sender made: its kind (``"users"``), path and records as sent."""

    kind: str
    path: str
    records: list[dict[str, Any]]
    application_id: str

    def __repr__(self) -> str:  # the application id stays out of reprs, as everywhere
        return f"RecordedBatch(kind={self.kind!r}, path={self.path!r}, records={self.records!r})"


def merge_record(profile: Mapping[str, Any] | None, record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` merged into the stored ``profile`` the way the API merges (a new dict)."""
    update = dict(record)
    token = update.pop("session_token", None)
    tokens: list[str] = list(profile.get("session_tokens", ())) if profile else []
    merged = merge_update(profile or {}, update)
    if token is not None and token not in tokens:
        tokens.append(token)
    merged["session_tokens"] = tokens
    return merged


class RecordingTransport(httpx.BaseTransport):
    """Answers the senders' POSTs from memory; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: list[RecordedBatch] = []
        self._profiles: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in KINDS}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        route = _ROUTES.get(path)
        if route is None or request.method != "POST":
            return httpx.Response(404, json={"error": "not found", "message": path})
        kind, batch = route
        try:
            records = _records(request, kind, batch)
        except (ValueError, OSError) as exc:  # not what a sender sends: answered as the API would
            return httpx.Response(400, json={"error": "invalid body", "message": str(exc)})
        application_id = request.headers.get(APPLICATION_ID_HEADER, "")
        with self._lock:
            self._batches.append(RecordedBatch(kind.name, path, records, application_id))
            profiles = self._profiles[kind.name]
            for record in records:
                key = record[kind.id_field]
                profiles[key] = merge_record(profiles.get(key), record)
        return httpx.Response(201, json={"records": len(records)})

    def profiles(self, kind: str) -> dict[str, dict[str, Any]]:
        """A copy of the merged profiles of ``kind`` by id."""
        with self._lock:
            return copy.deepcopy(self._profiles[kind])

    def batches(self) -> list[RecordedBatch]:
        """A copy of every request recorded, oldest first."""
        with self._lock:
            return copy.deepcopy(self._batches)

    def clear(self) -> None:
        """Forget everything recorded."""
        with self._lock:
            self._batches.clear()
            for profiles in self._profiles.values():
                profiles.clear()


def _records(request: httpx.Request, kind: RecordKind, batch: bool) -> list[dict[str, Any]]:
    body = request.read()
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    payload = json.loads(body)
    records = payload if batch else [payload]
    if not isinstance(records, list) or not all(
        isinstance(record, dict) and isinstance(record.get(kind.id_field), str)
        for record in records
    ):
        raise ValueError(f"expected {kind.noun} objects with a {kind.id_field}")
    return records
