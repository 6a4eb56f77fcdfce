"""The CSV reader: a header row, then one record per row (column rules: :mod:`.csv_columns`).

The delimiter is the one the header line uses most (``,``, tab, ``;`` or ``|``). A row
with more cells than the header, or bytes that are not UTF-8, is one rejected record; a
header that is not UTF-8 or names an unknown column fails the file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import IO, Any

from .._json import is_valid_text
from .csv_columns import build_record, column_plan
from .items import Item, MalformedInputError, Unparsed
from .kinds import DEFAULT_KIND, SendKind
from .record_reader import RecordReader, count_lines

__all__ = ["CsvReader"]


class CsvReader(RecordReader):
    """A CSV file with a header row; see :mod:`.csv_columns` for the column rules."""

    format = "csv"

    def __init__(
        self,
        stream: IO[bytes],
        name: str,
        size: int | None,
        path: str | None,
        kind: SendKind = DEFAULT_KIND,
    ) -> None:
        super().__init__(stream, name, size)
        # Undecodable bytes become lone surrogates, so one bad row is rejected, not the file.
        self._text = io.TextIOWrapper(
            stream, encoding="utf-8", errors="surrogateescape", newline=""
        )
        header_line = self._text.readline()
        if not is_valid_text(header_line):
            raise MalformedInputError(f"{self.name}: the header line is not UTF-8 text")
        delimiter = _delimiter(header_line)
        header = next(csv.reader([header_line], delimiter=delimiter), [])
        self._columns = header
        self._plan = column_plan(header, name, kind)
        self._delimiter = delimiter
        lines = count_lines(path) if path is not None else None
        self._total = None if lines is None else max(0, lines - 1)

    def close(self) -> None:
        self._text.close()

    def raw_record(self, raw: Any) -> Any:
        cells: list[str] = raw
        record: dict[str, Any] = dict(zip(self._columns, cells, strict=False))
        if len(cells) > len(self._columns):
            record["(extra cells)"] = cells[len(self._columns) :]
        return record

    def _items(self) -> Iterator[Item]:
        reader = csv.reader(self._text, delimiter=self._delimiter)
        plan = self._plan
        width = len(self._columns)
        while True:
            start = reader.line_num + 2  # +1 for the header line read apart, +1 for 1-based
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise MalformedInputError(f"{self.name} line {start}: {exc}") from None
            if not row or (len(row) == 1 and not row[0]):
                continue  # a blank line
            if not is_valid_text("".join(row)):
                yield start, Unparsed("the row is not UTF-8 text"), [_printable(c) for c in row]
                continue
            if len(row) > width:
                yield start, Unparsed(f"the row has {len(row)} cells, the header {width}"), row
                continue
            yield start, build_record(row, plan), row


def _printable(cell: str) -> str:
    return cell.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _delimiter(header_line: str) -> str:
    counts = {sep: header_line.count(sep) for sep in (",", "\t", ";", "|")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","
