"""The option table: one row per option (name, default, validator, where it applies, doc).

Everything about options is derived from :data:`OPTIONS`: the names every adapter
accepts (:data:`CAPTURE_OPTIONS`), the sender's (:data:`SENDER_OPTIONS`, which
``get_sender`` also takes), the adapter-only ones (:func:`adapter_options`), the
defaults of :class:`~moesif_users_middleware._delivery.options.SenderOptions`, the values
``config.build_config`` checks, the Django system checks, Flask's ``MOESIF_USERS_*``
keys, and the README's option table (:func:`markdown_table`; a test keeps the README
equal to it).

Where an option applies (``where``):

- ``capture``: every adapter (keyword arguments; upper-case keys in Django settings;
  ``MOESIF_USERS_<NAME>`` in Flask's ``app.config``);
- ``sender``: ``get_sender`` and every adapter (which hands it to its sender);
- ``django``, ``flask``, ``wsgi``: that adapter only.

A row's ``check`` takes ``(value, label)`` and returns the value to use or raises
:class:`ConfigurationError` with a message starting with ``label`` (how the user spells
the option: ``batch_size``, ``settings.MOESIF_USERS['BATCH_SIZE']``). Rows without one
(the application id, the URL, hooks, client-IP settings, ``request_class``) are
checked by the code that uses them, against the resolver or importer that will use them.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, MissingApplicationIdError

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

Check = Callable[[Any, str], Any]

MIN_BATCH_BYTES = 256
MIN_SPOOL_BYTES = 64 * 1024
MAX_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class Option:
    """One option: its name, default, where it applies, its check and its doc line."""

    name: str
    default: Any
    shown: str  # the default as the README shows it
    doc: str
    where: str = "capture"
    check: Check | None = None
    hook: bool = False  # documented in the README's table of hooks instead
    env: str | None = None  # the environment variable read when the option is not given

    @property
    def label(self) -> str:
        """The README's first column: the name, and the adapters for adapter-only options."""
        adapters = {"django": "Django", "flask": "Flask", "wsgi": "plain WSGI"}
        names = [adapters[part] for part in self.where.split(",") if part in adapters]
        return f"`{self.name}`" + (f" ({', '.join(names)})" if names else "")


# -- the checks ------------------------------------------------------------------------------


def _kind(value: object) -> str:
    return type(value).__name__


def boolean(value: Any, label: str) -> bool:
    """``True`` or ``False`` exactly."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{label} must be True or False, not {value!r}")
    return value


def integer(low: int) -> Check:
    """An ``int`` (not a ``bool``) of at least ``low``."""

    def check(value: Any, label: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"{label} must be an integer, not {_kind(value)}")
        if value < low:
            raise ConfigurationError(f"{label} must be at least {low}, got {value}")
        return value

    return check


def seconds(allow_zero: bool) -> Check:
    """A finite number of seconds, more than zero (or zero too), at most a day."""

    def check(value: Any, label: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"{label} must be a number of seconds, not {_kind(value)}")
        number = float(value)
        if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
            bound = "zero or more" if allow_zero else "more than zero"
            raise ConfigurationError(f"{label} must be {bound} seconds, got {value!r}")
        if number > MAX_SECONDS:
            raise ConfigurationError(
                f"{label} must be at most {MAX_SECONDS:g} seconds, got {value!r}"
            )
        return number

    return check


def claim_name(value: Any, label: str) -> str | None:
    """``None`` or a non-empty string (stripped)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{label} must be a non-empty string")
    return value.strip()


def positive_length(value: Any, label: str) -> int:
    """A positive ``int`` (exactly: no ``bool``, no subclass)."""
    if type(value) is not int or value < 1:
        raise ConfigurationError(f"{label} must be a positive integer")
    return value


def directory(value: Any, label: str) -> str | None:
    """``None`` (off) or a directory path (``str`` or path-like), made absolute."""
    if value is None:
        return None
    try:
        path = os.fspath(value)
    except TypeError:
        raise ConfigurationError(f"{label} must be a directory path, not {_kind(value)}") from None
    if not isinstance(path, str) or not path.strip():
        raise ConfigurationError(f"{label} must be a non-empty directory path")
    return os.path.abspath(path)


# -- the table -------------------------------------------------------------------------------

_HOOK_DOC = "hook, see Hooks"
_MIB = 1024 * 1024

OPTIONS: tuple[Option, ...] = (
    Option(
        "application_id",
        None,
        "`MOESIF_APPLICATION_ID`",
        "your Moesif collector application id",
    ),
    Option(
        "base_url",
        None,
        "`MOESIF_BASE_URL` or `https://api.moesif.net`",
        "API base URL",
    ),
    *(
        Option(name, None, "none", _HOOK_DOC, hook=True)
        for name in (
            "identify_user",
            "identify_company",
            "get_session_token",
            "get_metadata",
            "get_campaign",
            "skip",
            "get_company_domain",
            "get_company_metadata",
        )
    ),
    Option(
        "update_companies",
        True,
        "`True`",
        "when a request has a company id, also update that company (see Companies)",
        check=boolean,
    ),
    Option(
        "trusted_proxies",
        None,
        "127.0.0.0/8, ::1, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7",
        "peers whose `Forwarded` / `X-Forwarded-For` / `X-Real-IP` are believed "
        "(replaces the default)",
    ),
    Option(
        "client_ip_headers",
        (),
        "none",
        "extra headers to believe from trusted peers (e.g. `cf-connecting-ip`)",
    ),
    Option(
        "session_token_headers",
        ("x-api-key",),
        '`("x-api-key",)`',
        "headers read for the session token after `Authorization: Bearer`",
    ),
    Option(
        "jwt_user_id_claim",
        None,
        "off",
        "read the user id from this claim of a Bearer JWT (**unverified**)",
        check=claim_name,
    ),
    Option(
        "capture_campaign",
        True,
        "`True`",
        "extract the campaign from the query string and `Referer`",
        check=boolean,
    ),
    Option(
        "max_user_agent_length",
        512,
        "512",
        "longer `User-Agent` values are cut",
        check=positive_length,
    ),
    Option(
        "force_user_load",
        False,
        "`False`",
        "load the framework's user even when the request did not",
        where="django,flask",
        check=boolean,
    ),
    Option(
        "get_user_profile",
        None,
        "none",
        "`get_user_profile(user)` builds a user's whole profile: at login (`update_on_login`) "
        "and, in Django, for the `moesif_users_backfill` command (see Bulk backfill)",
        where="django,flask",
    ),
    Option(
        "update_on_login",
        False,
        "`False`",
        "queue the user's profile when they log in (Django's `user_logged_in`, Flask-Login's), "
        "with the login request's IP, user agent and campaign (see Profiles at login)",
        where="django,flask",
        check=boolean,
    ),
    Option(
        "enabled",
        True,
        "`True`",
        "`False` turns the middleware off (silently)",
        check=boolean,
    ),
    Option(
        "strict",
        False,
        "`False`",
        "raise `ConfigurationError` at construction instead of turning capture off (see below)",
        check=boolean,
    ),
    Option(
        "request_class",
        None,
        "none: hooks get the environ",
        "class or callable building the `request` hooks get from the environ",
        where="wsgi",
    ),
    Option(
        "batch_size", 100, "100", "users (or companies) per POST", where="sender", check=integer(1)
    ),
    Option(
        "max_batch_bytes",
        _MIB,
        "1 MiB",
        "serialized bytes per POST (before gzip)",
        where="sender",
        check=integer(MIN_BATCH_BYTES),
    ),
    Option(
        "max_queue_size",
        10_000,
        "10,000",
        "distinct users and companies pending; new ones beyond it are dropped and counted",
        where="sender",
        check=integer(1),
    ),
    Option(
        "max_queue_bytes",
        16 * _MIB,
        "16 MiB",
        "serialized bytes of all pending users and companies (estimated from what was "
        "sent); new ones beyond it are dropped and counted",
        where="sender",
        check=integer(MIN_BATCH_BYTES),
    ),
    Option(
        "flush_interval",
        2.0,
        "2 s",
        "how often the sender sends (jittered)",
        where="sender",
        check=seconds(allow_zero=False),
    ),
    Option(
        "min_update_interval",
        60.0,
        "60 s",
        "a capture identical to the user's last one, or an update identical to the last one "
        "delivered, within this is skipped (0: off); a skipped repeat is sent once more, with "
        "its newer `modified_time`, when the interval has passed or at exit",
        where="sender",
        check=seconds(allow_zero=True),
    ),
    Option(
        "timeout",
        10.0,
        "10 s",
        "HTTP time limit per request, from connect to the last byte of the answer",
        where="sender",
        check=seconds(allow_zero=False),
    ),
    Option(
        "shutdown_timeout",
        3.0,
        "3 s",
        "the most exit/shutdown may wait for delivery",
        where="sender",
        check=seconds(allow_zero=True),
    ),
    Option(
        "gzip", True, "`True`", "gzip request bodies above 1 KiB", where="sender", check=boolean
    ),
    Option(
        "spool_dir",
        None,
        "off (`MOESIF_USERS_SPOOL_DIR`)",
        "keep pending records on disk in this directory, so a crash or an outage loses "
        "nothing (see Durable spool)",
        where="sender",
        check=directory,
        env="MOESIF_USERS_SPOOL_DIR",
    ),
    Option(
        "max_spool_bytes",
        100 * _MIB,
        "100 MiB",
        "bytes of records the spool keeps; new records beyond it are dropped and counted "
        "(updates of spooled ones still apply)",
        where="sender",
        check=integer(MIN_SPOOL_BYTES),
    ),
)

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


# -- the application id and the API's address -------------------------------------------

DEFAULT_BASE_URL = "https://api.moesif.net"


def resolve_application_id(application_id: str | None) -> str:
    """The given id, else ``MOESIF_APPLICATION_ID``; a clear error when neither is set."""
    value = (
        application_id if application_id is not None else os.environ.get("MOESIF_APPLICATION_ID")
    )
    if not isinstance(value, str) or not value.strip():
        raise MissingApplicationIdError(
            "application_id is required: pass application_id=... or set MOESIF_APPLICATION_ID"
        )
    value = value.strip()
    # It travels as an HTTP header value: visible ASCII only (the message must not echo it).
    if not value.isascii() or not value.isprintable():
        raise ConfigurationError(
            "application_id must be printable ASCII (it is sent as an HTTP header); "
            "check MOESIF_APPLICATION_ID for stray characters"
        )
    return value


def resolve_base_url(base_url: str | None) -> str:
    """The given URL, else ``MOESIF_BASE_URL``, else ``https://api.moesif.net`` (no trailing /)."""
    value = base_url if base_url is not None else os.environ.get("MOESIF_BASE_URL")
    if value is None or not value.strip():
        return DEFAULT_BASE_URL
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, got {value!r}")
    return value


def redact(application_id: str) -> str:
    """A stand-in safe for logs and reprs: never the id itself."""
    return f"<application id, {len(application_id)} chars>"
