"""What the file readers share: :class:`RecordReader`, and counting a file's lines.

A reader holds at most one record (plus a read buffer) in memory, whatever the file
size; ``iter(reader)`` yields :data:`.items.Item` tuples. Each format is a subclass:
:mod:`.json_reader`, :mod:`.jsonl_reader`, :mod:`.csv_reader`; :mod:`.readers` opens a
file as the right one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from .items import Item

__all__ = ["RecordReader", "count_lines"]


class RecordReader:
    """Base reader: ``iter(reader)`` yields :data:`Item` tuples; ``skip`` drops records."""

    format: str = ""

    def __init__(self, stream: IO[bytes], name: str, size: int | None) -> None:
        self._stream = stream
        self.name = name
        self.size = size  # bytes, for regular files (progress estimates)
        self._total: int | None = None  # records in the file, when counted up front

    def __iter__(self) -> Iterator[Item]:
        return self.records()

    def records(self, skip: int = 0, cursor: Any = None) -> Iterator[Item]:
        """Items after the first ``skip`` records (``cursor`` is for other sources)."""
        items = self._items()
        for _ in range(skip):
            if next(items, None) is None:
                break
        return items

    def _items(self) -> Iterator[Item]:
        raise NotImplementedError

    def estimated_total(self, done: int) -> int | None:
        """Records in the whole input, when it can be told cheaply (else ``None``)."""
        return None if self._total is None else max(self._total, done)

    def raw_record(self, raw: Any) -> Any:
        """The JSON form of ``raw`` for the rejects file."""
        return raw

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count_lines(path: str) -> int | None:
    """Lines in a regular file (fast: a byte count, blank lines included)."""
    try:
        with open(path, "rb") as file:
            lines = 0
            last = b"\n"
            while chunk := file.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
            return lines + (last != b"\n")
    except OSError:
        return None
