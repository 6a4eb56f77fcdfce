"""The JSON Lines reader: one JSON value per line; blank lines are not records.

A line that is not JSON (or not UTF-8) is one rejected record, not a failed file; but
when none of the first lines is JSON the file is not JSON Lines (:func:`check_json_lines`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

from .items import Item, MalformedInputError, Unparsed
from .record_reader import RecordReader, count_lines

__all__ = ["JsonLinesReader", "check_json_lines"]


class JsonLinesReader(RecordReader):
    """One JSON value per line; blank lines are not records."""

    format = "jsonl"

    def __init__(self, stream: IO[bytes], name: str, size: int | None, path: str | None) -> None:
        super().__init__(stream, name, size)
        self._total = count_lines(path) if path is not None else None

    def records(self, skip: int = 0, cursor: Any = None) -> Iterator[Item]:
        lines = enumerate(self._stream, 1)
        if skip > 0:
            for _, line in lines:  # skipping needs no parsing
                if not line.isspace():
                    skip -= 1
                    if not skip:
                        break
        return self._parse(lines)

    def _parse(self, lines: Iterator[tuple[int, bytes]]) -> Iterator[Item]:
        decode = json.JSONDecoder().decode  # on str: json.loads(bytes) sniffs encodings
        for number, line in lines:
            if line.isspace():
                continue
            try:
                value = decode(line.decode())
            except UnicodeDecodeError as exc:
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                yield number, Unparsed(f"not UTF-8 text: {exc.reason} at byte {exc.start}"), text
                continue
            except ValueError as exc:  # JSONDecodeError
                text = line.decode().rstrip("\r\n")
                yield number, Unparsed(f"not valid JSON: {exc}"), text
                continue
            except RecursionError:
                yield number, Unparsed("JSON nested too deeply"), None
                continue
            yield number, value, value


def check_json_lines(head: bytes, name: str) -> None:
    """Fail at once when none of the first lines is JSON: the file is not JSON Lines."""
    lines = head.split(b"\n")
    if len(lines) > 1:
        lines.pop()  # possibly cut short
    seen = 0
    for line in lines:
        if not line.strip():
            continue
        seen += 1
        try:
            json.loads(line)
        except (ValueError, RecursionError):
            continue
        return
    if seen:
        raise MalformedInputError(
            f"{name} is not JSON Lines: none of its first {seen} lines is JSON "
            "(pass --format if the extension is misleading)"
        )
