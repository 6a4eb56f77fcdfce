"""The JSON reader: one object, an array of objects, or several values in a row.

A top-level array is streamed: ``JSONDecoder.raw_decode`` over a sliding window of the
text (``_CHUNK_CHARS`` at a time), so memory holds one record plus a chunk. JSON that
breaks (mid-array, or not UTF-8) fails the file with :class:`.items.MalformedInputError`
naming the line; a value that is not an object is still an item (the runner rejects it).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import IO, Any

from .items import Item, MalformedInputError
from .record_reader import RecordReader

__all__ = ["JsonReader"]

_CHUNK_CHARS = 1024 * 1024
_MAX_RECORD_CHARS = 64 * 1024 * 1024
_match_whitespace = re.compile(r"[ \t\n\r]*").match


class JsonReader(RecordReader):
    """A JSON document: one object, an array of objects, or several values in a row."""

    format = "json"

    def __init__(self, stream: IO[bytes], name: str, size: int | None) -> None:
        super().__init__(stream, name, size)
        self._text = io.TextIOWrapper(stream, encoding="utf-8", errors="strict")
        self._window = _Window(self._text, name)

    def estimated_total(self, done: int) -> int | None:
        consumed = self._window.consumed
        if not self.size or not consumed or not done:
            return None
        return max(done, round(done * self.size / consumed))

    def close(self) -> None:
        self._text.close()

    def _items(self) -> Iterator[Item]:
        window = self._window
        if not window.skip_whitespace():
            return
        while True:
            char = window.buf[window.pos]
            if char == "[":
                window.pos += 1
                yield from _array(window)
            elif char == "{":
                start = window.line
                item = window.value()
                yield start, item, item
            else:
                raise window.fail(f"expected a JSON object or array, found {char!r}")
            if not window.skip_whitespace():
                return


def _array(window: _Window) -> Iterator[Item]:
    """The values of an array whose ``[`` was just consumed, up to its ``]``."""
    value, skip_whitespace, fail = window.value, window.skip_whitespace, window.fail
    if not skip_whitespace():
        raise fail("the array is not closed")
    if window.buf[window.pos] == "]":
        window.pos += 1
        return
    while True:
        start = window.line
        item = value()
        yield start, item, item
        if not skip_whitespace():
            raise fail("the array is not closed")
        char = window.buf[window.pos]
        if char == ",":
            window.pos += 1
            if not skip_whitespace():
                raise fail("the array is not closed")
            if window.buf[window.pos] == "]":
                raise fail("trailing comma in the array")
        elif char == "]":
            window.pos += 1
            return
        else:
            raise fail(f"expected ',' or ']' in the array, found {char!r}")


class _Window:
    """The text read and not consumed yet (``buf[pos:]``), and the line number at ``pos``."""

    __slots__ = ("buf", "consumed", "decode", "eof", "line", "name", "pos", "text")

    def __init__(self, text: IO[str], name: str) -> None:
        self.text = text
        self.name = name
        self.decode = json.JSONDecoder().raw_decode
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False
        self.consumed = 0  # characters consumed, for the size estimate

    def fill(self) -> bool:
        """Read the next chunk into the window; ``False`` at the end of input."""
        if self.eof:
            return False
        try:
            chunk = self.text.read(_CHUNK_CHARS)
        except UnicodeDecodeError as exc:
            raise MalformedInputError(f"{self.name} is not UTF-8 text: {exc}") from None
        if not chunk:
            self.eof = True
            return False
        self.consumed += self.pos
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def skip_whitespace(self) -> bool:
        """Advance past whitespace; ``False`` at the end of input."""
        while True:
            buf, pos = self.buf, self.pos
            end = _match_whitespace(buf, pos).end()  # type: ignore[union-attr]
            self.line += buf.count("\n", pos, end)
            self.pos = end
            if end < len(buf):
                return True
            if not self.fill():
                return False

    def fail(self, what: str) -> MalformedInputError:
        return MalformedInputError(f"{self.name} line {self.line}: {what}")

    def value(self) -> Any:
        """The value at ``pos``, read on into the next chunks while it may continue."""
        while True:
            buf, pos = self.buf, self.pos
            try:
                item, end = self.decode(buf, pos)
            except json.JSONDecodeError as exc:
                if len(buf) - pos > _MAX_RECORD_CHARS:
                    raise self.fail(
                        f"a record longer than {_MAX_RECORD_CHARS} characters"
                    ) from None
                cut_short = exc.pos >= len(buf) - 8 or exc.msg.startswith("Unterminated")
                if cut_short and self.fill():
                    continue  # the value may just continue in the next chunk
                error_line = self.line + buf.count("\n", pos, exc.pos)
                raise MalformedInputError(
                    f"{self.name} line {error_line}: not valid JSON: {exc.msg}"
                ) from None
            except RecursionError:
                raise self.fail("JSON nested too deeply") from None
            if end >= len(buf) - 32 and buf[pos] not in '{["' and self.fill():
                continue  # a bare number may go on in the next chunk: decode it again
            self.line += buf.count("\n", pos, end)
            self.pos = end
            return item
