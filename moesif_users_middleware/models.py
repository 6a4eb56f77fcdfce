"""User and Campaign: the Users API's records, validated once, as plain data.

The wire form (``to_dict()``) is exactly the reference's snake_case JSON. Internally the
sender and the collector work on such dicts; :func:`normalize_user` turns any accepted
input (a ``User`` or a ``dict``) into that form and raises :class:`ValidationError`
naming the field at fault.

``ip_address`` must be an IPv4 or IPv6 address (what :func:`ipaddress.ip_address`
accepts), kept exactly as written. An IPv6 zone id (``fe80::1%eth0``) is rejected, not
stripped: it names an interface of one host, not a client.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._json import MAX_DEPTH, check_json, plain_bound
from ._json import MAX_JSON_INT as MAX_JSON_INT  # the old import paths keep working
from ._json import check_text as check_text
from ._json import is_valid_text as is_valid_text
from .errors import ValidationError

__all__ = [
    "CAMPAIGN_FIELDS",
    "USER_FIELDS",
    "Campaign",
    "User",
    "ValidationError",
    "check_ip_address",
    "check_json_value",
    "normalize_campaign",
    "normalize_user",
    "parse_timestamp",
]

CAMPAIGN_FIELDS: tuple[str, ...] = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "referrer",
    "referring_domain",
    "gclid",
)
USER_FIELDS: tuple[str, ...] = (
    "user_id",
    "company_id",
    "session_token",
    "modified_time",
    "ip_address",
    "user_agent_string",
    "campaign",
    "metadata",
)
_STRING_FIELDS: tuple[str, ...] = ("company_id", "session_token", "ip_address", "user_agent_string")
_STRING_FIELD_SET = frozenset(_STRING_FIELDS)
_CAMPAIGN_FIELD_SET = frozenset(CAMPAIGN_FIELDS)
_USER_FIELD_SET = frozenset(USER_FIELDS)
MAX_ID_LENGTH = 1024
MAX_METADATA_DEPTH = MAX_DEPTH
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# A dotted quad exactly as ``ipaddress`` accepts it (no leading zeros): the common case,
# checked without the cost of building an address object.
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}", re.ASCII)


def parse_timestamp(value: object, field: str = "modified_time") -> str:
    """Return an ISO-8601 UTC string for a ``datetime`` or an ISO-8601 string."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(field, f"not an ISO-8601 timestamp: {value[:64]!r}") from None
    else:
        raise ValidationError(field, f"must be a datetime or ISO-8601 string, not {_kind(value)}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        moment = moment.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise ValidationError(field, "out of the representable range") from None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_ip_address(text: str, field: str = "ip_address") -> str:
    """Return ``text`` if it is an IPv4 or IPv6 address, else raise ``ValidationError``.

    The address is returned as written (not canonicalized). An IPv6 zone id
    (``fe80::1%eth0``) is rejected rather than stripped.
    """
    if _IPV4.fullmatch(text) is not None:
        return text
    if "%" in text:
        raise ValidationError(
            field, f"an IPv6 zone id is not part of a client address: {text[:64]!r}"
        )
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValidationError(field, f"not an IPv4 or IPv6 address: {text[:64]!r}") from None
    return text


def check_json_value(value: object, field: str, depth: int = 0) -> None:
    """Raise ``ValidationError`` unless ``value`` is plain, finite JSON (str keys only)."""
    if type(value) is not dict or plain_bound(value, depth) is None:
        check_json(value, field, depth)


def normalize_campaign(value: object, field: str = "campaign") -> dict[str, str] | None:
    """Validate a campaign (``Campaign``, dict or ``None``) into its wire dict."""
    if value is None:
        return None
    if type(value) is dict:
        fast: dict[str, str] = {}
        for key, item in value.items():
            if type(item) is str and key in _CAMPAIGN_FIELD_SET and is_valid_text(item):
                fast[key] = item
            elif item is not None or key not in _CAMPAIGN_FIELD_SET:
                break  # unusual input: the general path below names the problem
        else:
            return fast or None
    if isinstance(value, Campaign):
        return value.to_dict() or None
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"must be an object, not {_kind(value)}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if key not in _CAMPAIGN_FIELD_SET:
            raise ValidationError(
                f"{field}.{key}",
                f"unknown campaign field (expected one of {', '.join(CAMPAIGN_FIELDS)})",
            )
        if item is None:
            continue
        if not isinstance(item, str):
            raise ValidationError(f"{field}.{key}", f"must be a string, not {_kind(item)}")
        out[key] = check_text(item, f"{field}.{key}")
    return out or None


def normalize_user(value: object, field: str = "user") -> dict[str, Any]:
    """Validate a ``User`` or dict and return the wire dict (a new dict; input untouched).

    ``field`` prefixes nothing for top-level fields; it names the argument in the error
    for non-object input.
    """
    if type(value) is not dict:
        if isinstance(value, User):
            return value.to_dict()
        if not isinstance(value, Mapping):
            raise ValidationError(field, f"must be a User or an object, not {_kind(value)}")
    user_id = value.get("user_id")
    if type(user_id) is not str:
        if user_id is None:
            raise ValidationError("user_id", "is required")
        raise ValidationError("user_id", f"must be a string, not {_kind(user_id)}")
    if not user_id or user_id.isspace():
        raise ValidationError("user_id", "must not be empty")
    if len(user_id) > MAX_ID_LENGTH:
        raise ValidationError("user_id", f"longer than {MAX_ID_LENGTH} characters")
    out: dict[str, Any] = {"user_id": check_text(user_id, "user_id")}
    for key, item in value.items():
        if key == "user_id" or item is None:
            continue
        if key in _STRING_FIELD_SET:
            if type(item) is not str:
                raise ValidationError(key, f"must be a string, not {_kind(item)}")
            out[key] = check_text(item, key) if key != "ip_address" else check_ip_address(item)
        elif key == "metadata":
            if type(item) is dict and plain_bound(item) is not None:
                out["metadata"] = item
                continue
            if not issubclass(type(item), Mapping):
                raise ValidationError("metadata", f"must be an object, not {_kind(item)}")
            metadata, _ = check_json(item, "metadata")
            out["metadata"] = metadata if type(metadata) is dict else dict(metadata)
        elif key == "campaign":
            campaign = normalize_campaign(item)
            if campaign:
                out["campaign"] = campaign
        elif key == "modified_time":
            out["modified_time"] = parse_timestamp(item)
        elif key not in _USER_FIELD_SET:
            raise ValidationError(
                str(key), f"unknown user field (expected one of {', '.join(USER_FIELDS)})"
            )
    return out


def _kind(value: object) -> str:
    return type(value).__name__


@dataclass(frozen=True)
class Campaign:
    """Acquisition campaign: UTM parameters, referrer and Google click id."""

    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    referrer: str | None = None
    referring_domain: str | None = None
    gclid: str | None = None

    def __post_init__(self) -> None:
        for name in CAMPAIGN_FIELDS:
            item = getattr(self, name)
            if item is not None and not isinstance(item, str):
                raise ValidationError(f"campaign.{name}", f"must be a string, not {_kind(item)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Campaign:
        """Build from the wire dict; unknown keys raise ``ValidationError``."""
        return cls(**(normalize_campaign(data) or {}))

    def to_dict(self) -> dict[str, str]:
        """The wire dict, without unset fields."""
        return {name: item for name in CAMPAIGN_FIELDS if (item := getattr(self, name)) is not None}


@dataclass(frozen=True)
class User:
    """One user update for ``POST /v1/users``; only ``user_id`` is required.

    ``modified_time`` accepts a ``datetime`` or an ISO-8601 string; ``campaign`` a
    ``Campaign`` or dict. Invalid values raise ``ValidationError`` naming the field.
    """

    user_id: str
    company_id: str | None = None
    session_token: str | None = None
    modified_time: datetime | str | None = None
    ip_address: str | None = None
    user_agent_string: str | None = None
    campaign: Campaign | Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        data = normalize_user({name: getattr(self, name) for name in USER_FIELDS})
        if isinstance(self.campaign, Mapping):
            object.__setattr__(self, "campaign", Campaign(**data.get("campaign", {})))
        object.__setattr__(self, "_wire", data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> User:
        """Build from the wire dict; unknown keys raise ``ValidationError``."""
        return cls(**normalize_user(data))

    def to_dict(self) -> dict[str, Any]:
        """The reference's JSON object (unset fields omitted)."""
        wire: dict[str, Any] = self.__dict__["_wire"]
        out = dict(wire)
        if "campaign" in out:
            out["campaign"] = dict(out["campaign"])
        return out

    def __repr__(self) -> str:
        return f"User(user_id={self.user_id!r}, company_id={self.company_id!r})"
