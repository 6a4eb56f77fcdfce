"""The options: one table (:mod:`.table`) and everything derived from it.

Everything about options is derived from :data:`OPTIONS`: the names every adapter
accepts (:data:`CAPTURE_OPTIONS`), the sender's (:data:`SENDER_OPTIONS`, which
``get_sender`` also takes), the adapter-only ones (:func:`adapter_options`), the
defaults of :class:`~moesif_users_middleware._delivery.options.SenderOptions`, the values
``config.build_config`` checks, the Django system checks, Flask's ``MOESIF_USERS_*``
keys, and the README's option table (:func:`markdown_table`; a test keeps the README
equal to it).

This module holds those derived names and lookups and words the error for unknown
option names; :mod:`.table` holds the rows, :mod:`.checks` their checks, and
:mod:`.endpoint` resolves the application id and the API's base URL.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import ConfigurationError

# The endpoint names stay importable from here, as they were before endpoint.py.
from .endpoint import DEFAULT_BASE_URL, redact, resolve_application_id, resolve_base_url
from .table import OPTIONS, Option

__all__ = [
    "CAPTURE_OPTIONS",
    "DEFAULT_BASE_URL",
    "HOOK_OPTIONS",
    "OPTIONS",
    "SENDER_OPTIONS",
    "Option",
    "adapter_options",
    "check_option",
    "from_environment",
    "markdown_table",
    "option",
    "redact",
    "resolve_application_id",
    "resolve_base_url",
    "unknown_options_error",
]

_BY_NAME: dict[str, Option] = {row.name: row for row in OPTIONS}

HOOK_OPTIONS: tuple[str, ...] = tuple(row.name for row in OPTIONS if row.hook)
SENDER_OPTIONS: tuple[str, ...] = tuple(row.name for row in OPTIONS if row.where == "sender")
CAPTURE_OPTIONS: tuple[str, ...] = tuple(
    row.name for row in OPTIONS if row.where in ("capture", "sender")
)
"""Every adapter's options: the capture's and the sender's."""


def adapter_options(adapter: str) -> tuple[str, ...]:
    """The options only ``adapter`` (``"django"``, ``"flask"``, ``"wsgi"``) accepts."""
    return tuple(row.name for row in OPTIONS if adapter in row.where.split(","))


def option(name: str) -> Option:
    """The row of ``name`` (``KeyError`` for an unknown name)."""
    return _BY_NAME[name]


def from_environment(given: Iterable[str]) -> dict[str, Any]:
    """The options not ``given`` whose environment variable is set, checked (the variable
    names them in errors)."""
    values: dict[str, Any] = {}
    for row in OPTIONS:
        if row.env is None or row.name in given:
            continue
        text = os.environ.get(row.env, "").strip()
        if text:
            values[row.name] = text if row.check is None else row.check(text, row.env)
    return values


def check_option(name: str, value: Any, label: str | None = None) -> Any:
    """``value`` checked by ``name``'s row (as it is when the row has no check)."""
    check = _BY_NAME[name].check
    return value if check is None else check(value, name if label is None else label)


def markdown_table() -> str:
    """The README's option table (hooks have their own table)."""
    lines = ["| option | default | meaning |", "|---|---|---|"]
    lines += [f"| {row.label} | {row.shown} | {row.doc} |" for row in OPTIONS if not row.hook]
    return "\n".join(lines) + "\n"


def unknown_options_error(
    unknown: Iterable[str],
    valid: Sequence[str],
    *,
    style: Callable[[str], str] = str,
    bare: Callable[[str], str] = str,
    noun: str = "option",
    where: str = "",
) -> ConfigurationError:
    """The error for unknown option names, suggesting the closest valid one.

    The one place every adapter (and the sender) words this. ``unknown`` are the names as
    the user wrote them, shown as such; ``bare`` turns one into an option name to match
    (Flask strips ``MOESIF_USERS_``); ``valid`` are option names and ``style`` spells one
    the way the user writes it (``str.upper`` for Django settings). Matching ignores case.
    One unknown name with a close match reads ``unknown option 'batchsize': did you mean
    'batch_size'?``; otherwise the valid names are listed.
    """
    names = [str(name) for name in unknown]
    by_lower = {name.lower(): name for name in valid}
    suggestions: list[str | None] = []
    for name in names:
        close = difflib.get_close_matches(bare(name).lower(), list(by_lower), n=1, cutoff=0.6)
        suggestions.append(style(by_lower[close[0]]) if close else None)
    if len(names) == 1:
        message = f"unknown {noun} {names[0]!r}{where}"
        if suggestions[0] is not None:
            return ConfigurationError(f"{message}: did you mean {suggestions[0]!r}?")
    else:
        shown = ", ".join(
            repr(name) if suggestion is None else f"{name!r} (did you mean {suggestion!r}?)"
            for name, suggestion in zip(names, suggestions, strict=True)
        )
        message = f"unknown {noun}s {shown}{where}"
        if None not in suggestions:
            return ConfigurationError(message)
    return ConfigurationError(
        f"{message}; valid ones are: {', '.join(style(name) for name in valid)}"
    )
