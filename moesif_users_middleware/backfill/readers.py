"""Streaming record readers (users or companies): JSON (one object or an array), JSON
Lines and CSV.

Every reader holds at most one record (plus a read buffer) in memory, whatever the file
size, and yields ``(line, value, raw)`` items in input order:

- ``line`` is the 1-based line where the record starts;
- ``value`` is the parsed record (normally a dict to validate), or an :class:`Unparsed`
  when the record itself could not be read (a JSON Lines line that is not JSON, a CSV row
  with too many cells or a typed cell that does not convert);
- ``raw`` is what the rejects file shows for the record (the parsed value, the line's
  text, or a CSV row as ``{column: cell}``).

A file that is not JSON, JSON Lines or CSV at all (binary, not UTF-8, a CSV header
without the kind's id column, JSON that breaks mid-array) raises
:class:`MalformedInputError` with the line at fault; a bad *record* never does.

CSV rules: columns are named after the kind's fields in the reference (users:
``user_id``, ``company_id``, ``session_token``, ``modified_time``, ``ip_address``,
``user_agent_string``; companies: ``company_id``, ``company_domain``, ``session_token``,
``modified_time``, ``ip_address``); ``campaign.<field>`` and ``metadata.<key>[.<key>...]``
become nested keys; a ``metadata`` or ``campaign`` column holds a JSON object. Empty cells
are absent. Cells are strings,
unless the column name ends in a type: ``metadata.age:int``, ``:float``, ``:number``
(int when it looks like one, else float), ``:bool`` (true/false/yes/no/1/0) or ``:json``.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any, Final

from .._json import is_valid_text
from ..models import CAMPAIGN_FIELDS
from .kinds import DEFAULT_KIND, SendKind

__all__ = [
    "FORMATS",
    "Item",
    "MalformedInputError",
    "RecordReader",
    "Skipped",
    "Unparsed",
    "detect_format",
    "open_reader",
]

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
_CHUNK_CHARS = 1024 * 1024
_MAX_RECORD_CHARS = 64 * 1024 * 1024
_BOM = codecs.BOM_UTF8
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class MalformedInputError(ValueError):
    """The input is not JSON, JSON Lines or CSV (or breaks in a way records cannot)."""


class Unparsed:
    """A record that could not be read; ``field`` is the CSV column at fault, if any."""

    __slots__ = ("field", "message")

    def __init__(self, message: str, field: str | None = None) -> None:
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"Unparsed({self.message!r}, field={self.field!r})"


class _SkippedType:
    """The type of :data:`Skipped`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Skipped"


Skipped: Final = _SkippedType()
"""An item value meaning "counted, but nothing to send" (e.g. a hook left the user out)."""

Item = tuple[Any, Any, Any]


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


class RecordReader:
    """Base reader: ``iter(reader)`` yields :data:`Item` tuples; ``skip`` drops records."""

    format: str = ""

    def __init__(self, stream: IO[bytes], name: str, size: int | None) -> None:
        self._stream = stream
        self.name = name
        self.size = size  # bytes, for regular files (progress estimates)

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
        return None

    def raw_record(self, raw: Any) -> Any:
        """The JSON form of ``raw`` for the rejects file."""
        return raw

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonLinesReader(RecordReader):
    """One JSON value per line; blank lines are not records."""

    format = "jsonl"

    def __init__(self, stream: IO[bytes], name: str, size: int | None, path: str | None) -> None:
        super().__init__(stream, name, size)
        self._total = _count_lines(path) if path is not None else None

    def estimated_total(self, done: int) -> int | None:
        return None if self._total is None else max(self._total, done)

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


class JsonReader(RecordReader):
    """A JSON document: one object, an array of objects, or several values in a row.

    A top-level array is streamed: ``JSONDecoder.raw_decode`` over a sliding buffer.
    """

    format = "json"

    def __init__(self, stream: IO[bytes], name: str, size: int | None) -> None:
        super().__init__(stream, name, size)
        self._text = io.TextIOWrapper(stream, encoding="utf-8", errors="strict")
        self._consumed = 0  # characters consumed, for the size estimate

    def estimated_total(self, done: int) -> int | None:
        if not self.size or not self._consumed or not done:
            return None
        return max(done, round(done * self.size / self._consumed))

    def close(self) -> None:
        self._text.close()

    def _items(self) -> Iterator[Item]:
        decode = json.JSONDecoder().raw_decode
        match_ws = _WHITESPACE.match
        buf = ""
        pos = 0
        line = 1  # line number at ``pos``
        eof = False

        def fill() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            try:
                chunk = self._text.read(_CHUNK_CHARS)
            except UnicodeDecodeError as exc:
                raise MalformedInputError(f"{self.name} is not UTF-8 text: {exc}") from None
            if not chunk:
                eof = True
                return False
            self._consumed += pos
            buf = buf[pos:] + chunk
            pos = 0
            return True

        def skip_ws() -> bool:
            """Advance past whitespace; False at the end of input."""
            nonlocal pos, line
            while True:
                end = match_ws(buf, pos).end()  # type: ignore[union-attr]
                line += buf.count("\n", pos, end)
                pos = end
                if pos < len(buf):
                    return True
                if not fill():
                    return False

        def fail(what: str) -> MalformedInputError:
            return MalformedInputError(f"{self.name} line {line}: {what}")

        def value() -> Any:
            nonlocal pos, line
            while True:
                try:
                    item, end = decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if len(buf) - pos > _MAX_RECORD_CHARS:
                        raise fail(f"a record longer than {_MAX_RECORD_CHARS} characters") from None
                    cut_short = exc.pos >= len(buf) - 8 or exc.msg.startswith("Unterminated")
                    if cut_short and fill():
                        continue  # the value may just continue in the next chunk
                    error_line = line + buf.count("\n", pos, exc.pos)
                    raise MalformedInputError(
                        f"{self.name} line {error_line}: not valid JSON: {exc.msg}"
                    ) from None
                except RecursionError:
                    raise fail("JSON nested too deeply") from None
                if end >= len(buf) - 32 and buf[pos] not in '{["' and fill():
                    continue  # a bare number may go on in the next chunk: decode it again
                line += buf.count("\n", pos, end)
                pos = end
                return item

        if not skip_ws():
            return
        while True:
            if buf[pos] == "[":
                pos += 1
                if not skip_ws():
                    raise fail("the array is not closed")
                if buf[pos] == "]":
                    pos += 1
                else:
                    while True:
                        start = line
                        item = value()
                        yield start, item, item
                        if not skip_ws():
                            raise fail("the array is not closed")
                        if buf[pos] == ",":
                            pos += 1
                            if not skip_ws():
                                raise fail("the array is not closed")
                            if buf[pos] == "]":
                                raise fail("trailing comma in the array")
                        elif buf[pos] == "]":
                            pos += 1
                            break
                        else:
                            raise fail(f"expected ',' or ']' in the array, found {buf[pos]!r}")
            elif buf[pos] == "{":
                start = line
                item = value()
                yield start, item, item
            else:
                raise fail(f"expected a JSON object or array, found {buf[pos]!r}")
            if not skip_ws():
                return


class CsvReader(RecordReader):
    """A CSV file with a header row; see the module docstring for the column rules."""

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
        self._plan = _column_plan(header, name, kind)
        self._delimiter = delimiter
        lines = _count_lines(path) if path is not None else None
        self._total = None if lines is None else max(0, lines - 1)

    def estimated_total(self, done: int) -> int | None:
        return None if self._total is None else max(self._total, done)

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
            yield start, _build(row, plan), row


# A column: (index, path of keys, converter or None for strings).
_Column = tuple[int, tuple[str, ...], "Callable[[str], Any] | None"]


def _build(row: list[str], plan: list[_Column]) -> Any:
    record: dict[str, Any] = {}
    for index, path, convert in plan:
        if index >= len(row):
            break
        cell = row[index]
        if not cell:
            continue
        if convert is not None:
            try:
                cell = convert(cell)
            except (ValueError, RecursionError) as exc:
                return Unparsed(str(exc), ".".join(path))
        target = record
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = cell
    return record


def _to_int(cell: str) -> int:
    try:
        return int(cell)
    except ValueError:
        raise ValueError(f"not an integer: {cell[:64]!r}") from None


def _to_float(cell: str) -> float:
    try:
        number = float(cell)
    except ValueError:
        raise ValueError(f"not a number: {cell[:64]!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {cell[:64]!r}")
    return number


def _to_number(cell: str) -> int | float:
    text = cell.strip()
    if text.lstrip("+-").isdigit():
        return int(text)
    return _to_float(text)


_TRUE: Final = frozenset(("true", "yes", "1", "y", "t"))
_FALSE: Final = frozenset(("false", "no", "0", "n", "f"))


def _to_bool(cell: str) -> bool:
    text = cell.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean (true/false, yes/no, 1/0): {cell[:64]!r}")


def _to_json(cell: str) -> Any:
    try:
        return json.loads(cell)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


def _to_object(cell: str) -> Any:
    value = _to_json(cell)
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, not {type(value).__name__}")
    return value


_CONVERTERS: Final[dict[str, Callable[[str], Any] | None]] = {
    "str": None,
    "string": None,
    "int": _to_int,
    "integer": _to_int,
    "float": _to_float,
    "number": _to_number,
    "bool": _to_bool,
    "boolean": _to_bool,
    "json": _to_json,
}


def _column_plan(header: list[str], name: str, kind: SendKind) -> list[_Column]:
    """Check the header once and precompute where each cell goes."""
    top_level = kind.columns

    def bad(message: str) -> MalformedInputError:
        return MalformedInputError(
            f"{name}: {message}. CSV columns of {kind.name} are {', '.join(top_level)}, "
            "campaign.<field>, metadata.<key> (optionally typed, e.g. metadata.age:int)"
        )

    if not header or not any(column.strip() for column in header):
        raise bad("the first line is not a CSV header")
    plan: list[_Column] = []
    seen: dict[tuple[str, ...], str] = {}
    for index, column in enumerate(header):
        label = column.strip()
        convert: Callable[[str], Any] | None = None
        base, _, type_name = label.rpartition(":")
        if base and type_name.lower() in _CONVERTERS:
            label, convert = base, _CONVERTERS[type_name.lower()]
        path = tuple(label.split("."))
        if len(path) == 1:
            if label in ("metadata", "campaign"):
                convert = _to_object
            elif label not in top_level:
                shown = column if len(column) <= 64 else column[:61] + "..."
                raise bad(f"unknown column {shown!r}")
            elif convert is not None:
                raise bad(f"column {column!r}: only metadata columns take a type")
        elif path[0] == "campaign":
            if len(path) != 2 or path[1] not in CAMPAIGN_FIELDS:
                raise bad(f"unknown campaign column {column!r} ({', '.join(CAMPAIGN_FIELDS)})")
            if convert is not None:
                raise bad(f"column {column!r}: only metadata columns take a type")
        elif path[0] != "metadata" or not all(path[1:]):
            raise bad(f"unknown column {column!r}")
        for other_path, other in seen.items():
            shorter, longer = sorted((path, other_path), key=len)
            if longer[: len(shorter)] == shorter:
                raise bad(f"columns {other!r} and {column!r} write the same key")
        seen[path] = column
        plan.append((index, path, convert))
    if (kind.id_field,) not in seen:
        raise bad(f"the header has no {kind.id_field} column")
    return plan


def _printable(cell: str) -> str:
    return cell.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _delimiter(header_line: str) -> str:
    counts = {sep: header_line.count(sep) for sep in (",", "\t", ";", "|")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _count_lines(path: str) -> int | None:
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
            _check_json_lines(head, name)
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


def _check_json_lines(head: bytes, name: str) -> None:
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
