"""Opening the input of ``moesif-users send``: JSON (one object or an array), JSON Lines or
CSV, of users or companies, as a streaming record reader.

:func:`open_reader` opens a path (or ``-``, stdin), reads the first 64 KiB to check it is
text and, unless ``--format`` says, to tell the format (:func:`detect_format`: the
extension, else the first bytes), then hands the whole stream, those bytes included, to
the format's reader: :mod:`.json_reader`, :mod:`.jsonl_reader`, :mod:`.csv_reader` (their
base: :mod:`.record_reader`). What a reader yields, and how a bad record differs from a
bad file: :mod:`.items`.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import sys
from typing import IO, Any, Final

from .csv_reader import CsvReader
from .items import MalformedInputError
from .json_reader import JsonReader
from .jsonl_reader import JsonLinesReader, check_json_lines
from .kinds import DEFAULT_KIND, SendKind
from .record_reader import RecordReader

__all__ = ["FORMATS", "detect_format", "open_reader"]

FORMATS: Final = ("json", "jsonl", "csv")
_EXTENSIONS: Final = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
}
_HEAD_BYTES = 64 * 1024
_BOM = codecs.BOM_UTF8


def detect_format(path: str, head: bytes) -> str | None:
    """``json``/``jsonl``/``csv`` from the extension, else from the first bytes."""
    extension = os.path.splitext(path)[1].lower() if path != "-" else ""
    if extension in _EXTENSIONS:
        return _EXTENSIONS[extension]
    text = head.decode("utf-8", "ignore").lstrip()
    if not text:
        return None
    if text[0] == "[":
        return "json"
    if text[0] == "{":
        first_line = text.split("\n", 1)[0]
        try:
            json.loads(first_line)
        except ValueError:
            return "json"  # an object over several lines
        return "jsonl"
    return "csv"


def open_reader(
    path: str, format: str | None = None, kind: SendKind = DEFAULT_KIND
) -> RecordReader:
    """Open ``path`` (``-`` for stdin) as a record reader, detecting the format if needed.

    ``kind`` gives the CSV columns (JSON records are checked later, by the runner).

    Raises :class:`MalformedInputError` for input that is not one of the formats and
    ``OSError`` when the file cannot be opened.
    """
    if path == "-":
        raw: IO[bytes] = sys.stdin.buffer
        name, size, regular = "<stdin>", None, None
    else:
        raw = open(path, "rb")  # noqa: SIM115 - owned by the reader, closed with it
        name = path
        try:
            info = os.fstat(raw.fileno())
        except OSError:
            raw.close()
            raise
        regular = path if os.path.isfile(path) else None
        size = info.st_size if regular else None
    try:
        head = _read_head(raw).removeprefix(_BOM)
        _check_text(head, name)
        chosen = format or detect_format(path, head)
        stream = io.BufferedReader(_HeadThenRest(head, raw), buffer_size=1 << 20)
        if chosen is None or not head.strip():  # empty input: no records
            return JsonLinesReader(stream, name, size, None)
        if chosen == "jsonl":
            check_json_lines(head, name)
            return JsonLinesReader(stream, name, size, regular)
        if chosen == "json":
            return JsonReader(stream, name, size)
        if chosen == "csv":
            return CsvReader(stream, name, size, regular, kind)
        raise ValueError(f"unknown format {chosen!r}; expected one of {', '.join(FORMATS)}")
    except BaseException:
        raw.close()
        raise


def _read_head(raw: IO[bytes]) -> bytes:
    """Up to 64 KiB (more until the end of a line), for sniffing and sanity checks."""
    parts: list[bytes] = []
    size = 0
    while size < _HEAD_BYTES:
        chunk = raw.read(_HEAD_BYTES - size)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
    rest = raw.readline() if hasattr(raw, "readline") else b""
    return b"".join(parts) + rest


def _check_text(head: bytes, name: str) -> None:
    # Text formats never hold NUL bytes; images, archives, gzip and UTF-16 files do.
    if b"\x00" in head:
        raise MalformedInputError(f"{name} is binary, not JSON, JSON Lines or CSV text")


class _HeadThenRest(io.RawIOBase):
    """A binary stream replaying ``head`` (already read for sniffing), then the rest."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._rest.close()
        super().close()
