"""The one JSON and text checker: is this value plain, finite JSON, and how large can it be?

Used by the models (``normalize_user``), the capture (hook metadata), the collector and
the backfill (both through ``normalize_user``). Two paths give the same verdict:

- :func:`plain_bound`, the fast path, for a ``dict`` (or ``list``) of plain data: exact ``type()``
  checks for ``dict``/``list``/``str``/``int``/``float``/``bool``/``None`` and an ASCII
  shortcut for text. It builds no field names and never raises: it returns an upper
  bound of the size as compact JSON, or ``None`` for anything it does not vouch for
  (invalid, or valid but not plain: tuples, other mappings, subclasses).
- :func:`check_json`, the general path, for any value: it returns the value (with
  mappings that are not dicts copied into dicts, since ``json`` cannot serialize them)
  and the same bound, or raises :class:`ValidationError` naming the dotted field at
  fault (``metadata.a.b``, ``metadata.tags[3]``).

Rules: keys are strings; text encodes to UTF-8 (no lone surrogate); integers have at
most 4000 digits; floats are finite; containers nest at most :data:`MAX_DEPTH` deep
(the value checked is at depth 0). Types are read with ``type()``, never ``isinstance``:
the capture runs these checks in the sender's thread, where a lazy proxy (whose
``__class__`` evaluates it, like Django's ``SimpleLazyObject``) must stay unevaluated.

The bound counts characters of compact JSON (``ensure_ascii=False``) as if every
character of text needed a 6-character ``\\u00XX`` escape, so only values near a size
limit need to be serialized to be measured. ``tests/test_json.py`` feeds one table of
inputs to both paths and checks that they agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ValidationError

__all__ = [
    "MAX_DEPTH",
    "MAX_JSON_INT",
    "check_json",
    "check_text",
    "is_valid_text",
    "plain_bound",
]

# Python refuses to print ints of more than 4300 digits (and JSON peers choke well before).
MAX_JSON_INT = 10**4000
MAX_DEPTH = 32
_BIG_INT = 10**24  # smaller integers serialize in under 26 characters


def is_valid_text(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (no lone surrogates); O(1) for ASCII text."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(text: str, field: str) -> str:
    """Return ``text``, or raise ``ValidationError`` when it is not valid Unicode."""
    if not is_valid_text(text):
        raise ValidationError(field, "not valid Unicode text (lone surrogate)")
    return text


# -- the fast path ---------------------------------------------------------------------------


def plain_bound(value: dict[Any, Any] | list[Any], depth: int = 0) -> int | None:
    """The size bound of a ``dict`` (or ``list``) of plain JSON data, else ``None``; never raises.

    ``value`` must be exactly a ``dict`` or a ``list`` (the caller checks ``type()``).
    The common cases (text, small ints, bools, ``None``) are tested first, and only the
    length of text is added up, so a flat dict costs one ``type()`` and a comparison or
    two per value. The bound equals what :func:`check_json` computes for the same value:
    36 characters an item (a key's quotes and colon, a comma, a number or a string's
    quotes), 6 a character of text, and the bound of a nested container less 32.
    """
    if depth >= MAX_DEPTH:
        return None
    if type(value) is dict:
        try:
            keys = "".join(value)  # raises unless every key is a str
        except TypeError:
            return None
        if not keys.isascii() and not is_valid_text(keys):
            return None
        chars = len(keys)
        items: Iterable[Any] = value.values()
    else:
        chars = 0
        items = value
    extra = 2
    for item in items:
        kind = type(item)
        if kind is str:
            if not item.isascii() and not is_valid_text(item):
                return None
            chars += len(item)
        elif kind is bool or item is None or (kind is int and -_BIG_INT < item < _BIG_INT):
            continue
        elif kind is dict or kind is list:
            size = plain_bound(item, depth + 1)
            if size is None:
                return None
            extra += size - 32
        elif kind is float:
            if item - item != 0.0:  # NaN or infinity
                return None
        elif kind is int and -MAX_JSON_INT < item < MAX_JSON_INT:
            extra += item.bit_length() // 3
        else:
            return None
    return extra + 6 * chars + 36 * len(value)


# -- the general path ------------------------------------------------------------------------


def check_json(value: Any, field: str, depth: int = 0) -> tuple[Any, int]:
    """Check any JSON value; return it (mappings that are not dicts copied) and its bound.

    Raises :class:`ValidationError` naming the dotted field at fault. The input is never
    mutated: a container is copied only when something inside it had to be converted.
    """
    kind = type(value)
    if issubclass(kind, str):
        return check_text(value, field), 6 * len(value) + 32
    if kind is bool or value is None:
        return value, 32
    if issubclass(kind, int):
        if -_BIG_INT < value < _BIG_INT:
            return value, 32
        if not -MAX_JSON_INT < value < MAX_JSON_INT:
            raise ValidationError(field, "integer too large for JSON (over 4000 digits)")
        return value, 32 + value.bit_length() // 3
    if issubclass(kind, float):
        if not math.isfinite(value):
            raise ValidationError(field, "NaN and infinity are not valid JSON")
        return value, 32
    if issubclass(kind, Mapping):
        return _check_object(value, field, depth)
    if issubclass(kind, (list, tuple)):
        return _check_array(value, field, depth)
    raise ValidationError(field, f"{kind.__name__} is not JSON-serializable")


def _check_object(value: Mapping[Any, Any], field: str, depth: int) -> tuple[Any, int]:
    if depth >= MAX_DEPTH:
        raise ValidationError(field, f"nested deeper than {MAX_DEPTH} levels")
    copy: dict[str, Any] | None = None if issubclass(type(value), dict) else {}
    bound = 2
    for key, item in value.items():
        if not issubclass(type(key), str):
            raise ValidationError(field, f"keys must be strings, not {type(key).__name__}")
        check_text(key, field)
        kind = type(item)
        if (kind is int and -_BIG_INT < item < _BIG_INT) or kind is bool or item is None:
            size = 32
            checked = item
        else:
            checked, size = check_json(item, f"{field}.{key}", depth + 1)
            if checked is not item and copy is None:
                copy = dict(value)
        bound += 6 * len(key) + size + 4  # the key's quotes and colon, a comma
        if copy is not None:
            copy[key] = checked
    return (value if copy is None else copy), bound


def _check_array(value: list[Any] | tuple[Any, ...], field: str, depth: int) -> tuple[Any, int]:
    if depth >= MAX_DEPTH:
        raise ValidationError(field, f"nested deeper than {MAX_DEPTH} levels")
    copy: list[Any] | None = None
    bound = 2
    for index, element in enumerate(value):
        checked, size = check_json(element, f"{field}[{index}]", depth + 1)
        bound += size + 4  # a comma (and slack: plain_bound counts every item alike)
        if checked is not element and copy is None:
            copy = list(value[:index])
        if copy is not None:
            copy.append(checked)
    return (value if copy is None else copy), bound
