"""What every record source of ``moesif-users send`` yields, and how input fails.

A source (a file reader, :mod:`.readers`; the Django user source, :mod:`.django_source`)
yields :data:`Item` tuples ``(line, value, raw)`` in input order:

- ``line`` is where the record starts (the 1-based line of a file; a primary key);
- ``value`` is the parsed record (normally a dict to validate), an :class:`Unparsed`
  when the record itself could not be read (a JSON Lines line that is not JSON, a CSV row
  with too many cells or a typed cell that does not convert), or :data:`Skipped`;
- ``raw`` is what the rejects file shows for the record (the parsed value, the line's
  text, or a CSV row as ``{column: cell}``).

A bad *record* never raises; input that is not JSON, JSON Lines or CSV at all raises
:class:`MalformedInputError` with the line at fault.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["Item", "MalformedInputError", "Skipped", "Unparsed"]

Item = tuple[Any, Any, Any]


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
