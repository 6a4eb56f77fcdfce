"""The option table: one row per option (name, default, validator, where it applies, doc).

Where an option applies (``where``):

- ``capture``: every adapter (keyword arguments; upper-case keys in Django settings;
  ``MOESIF_USERS_<NAME>`` in Flask's ``app.config``);
- ``sender``: ``get_sender`` and every adapter (which hands it to its sender);
- ``django``, ``flask``, ``wsgi``: that adapter only.

A row's ``check`` (:mod:`.checks`) takes ``(value, label)`` and returns the value to use
or raises :class:`ConfigurationError` with a message starting with ``label`` (how the
user spells the option: ``batch_size``, ``settings.MOESIF_USERS['BATCH_SIZE']``). Rows
without one (the application id, the URL, hooks, client-IP settings, ``request_class``)
are checked by the code that uses them, against the resolver or importer that will use
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .checks import (
    MIN_BATCH_BYTES,
    MIN_SPOOL_BYTES,
    Check,
    boolean,
    claim_name,
    directory,
    integer,
    positive_length,
    seconds,
)

__all__ = ["OPTIONS", "Option"]


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
