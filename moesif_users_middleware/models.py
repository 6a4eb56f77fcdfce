"""User, Company and Campaign: the Users and Companies APIs' records, validated once, as plain data.

The wire form (``to_dict()``) is exactly the reference's snake_case JSON. Internally the
sender and the collector work on such dicts; :func:`normalize_user` (and
:func:`normalize_company`) turns any accepted input (a ``User`` or a ``dict``) into that
form and raises :class:`ValidationError` naming the field at fault.

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
    "COMPANY_FIELDS",
    "USER_FIELDS",
    "Campaign",
    "Company",
    "User",
    "ValidationError",
    "check_ip_address",
    "check_json_value",
    "normalize_campaign",
    "normalize_company",
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
COMPANY_FIELDS: tuple[str, ...] = (
    "company_id",
    "company_domain",
    "session_token",
    "modified_time",
    "ip_address",
    "campaign",
    "metadata",
)
_CAMPAIGN_FIELD_SET = frozenset(CAMPAIGN_FIELDS)
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
    if type(value) is dict and value.keys() <= _CAMPAIGN_FIELD_SET:
        # The common case in three C-level steps: known fields, all text, valid Unicode.
        # Anything else (a None value, a number, a lone surrogate) takes the general path,
        # which names the problem; tests/test_models.py checks the two paths agree.
        try:
            text = "".join(value.values())
        except TypeError:
            text = None
        if text is not None and (text.isascii() or is_valid_text(text)):
            return dict(value) or None
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


@dataclass(frozen=True)
class _RecordSpec:
    """What tells one record kind's wire dict from another's: its fields and id."""

    noun: str  # "user", in messages
    model: type  # User or Company
    id_field: str
    fields: tuple[str, ...]
    strings: frozenset[str]  # plain text fields besides the id (ip_address is checked as such)


def normalize_user(value: object, field: str = "user") -> dict[str, Any]:
    """Validate a ``User`` or dict and return the wire dict (a new dict; input untouched).

    ``field`` prefixes nothing for top-level fields; it names the argument in the error
    for non-object input.
    """
    return _normalize(value, field, _USER_SPEC)


def normalize_company(value: object, field: str = "company") -> dict[str, Any]:
    """Validate a ``Company`` or dict and return the wire dict (a new dict; input untouched)."""
    return _normalize(value, field, _COMPANY_SPEC)


def _normalize(value: object, field: str, spec: _RecordSpec) -> dict[str, Any]:
    if type(value) is not dict:
        if isinstance(value, spec.model):
            return _wire_copy(value)  # type: ignore[arg-type]
        if not isinstance(value, Mapping):
            raise ValidationError(
                field, f"must be a {spec.model.__name__} or an object, not {_kind(value)}"
            )
    id_field = spec.id_field
    record_id = value.get(id_field)
    if type(record_id) is not str:
        if record_id is None:
            raise ValidationError(id_field, "is required")
        raise ValidationError(id_field, f"must be a string, not {_kind(record_id)}")
    if not record_id or record_id.isspace():
        raise ValidationError(id_field, "must not be empty")
    if len(record_id) > MAX_ID_LENGTH:
        raise ValidationError(id_field, f"longer than {MAX_ID_LENGTH} characters")
    # ASCII text is valid as it is: check_text only for the rest (saves a call per field).
    out: dict[str, Any] = {
        id_field: record_id if record_id.isascii() else check_text(record_id, id_field)
    }
    strings = spec.strings
    for key, item in value.items():
        if key == id_field or item is None:
            continue
        if key in strings:
            if type(item) is not str:
                raise ValidationError(key, f"must be a string, not {_kind(item)}")
            if key == "ip_address":
                out[key] = check_ip_address(item)
            else:
                out[key] = item if item.isascii() else check_text(item, key)
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
        elif key not in spec.fields:
            raise ValidationError(
                str(key),
                f"unknown {spec.noun} field (expected one of {', '.join(spec.fields)})",
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
        return _wire_copy(self)

    def __repr__(self) -> str:
        return f"User(user_id={self.user_id!r}, company_id={self.company_id!r})"


@dataclass(frozen=True)
class Company:
    """One company update for ``POST /v1/companies``; only ``company_id`` is required.

    Users join a company through their ``company_id``. ``modified_time`` accepts a
    ``datetime`` or an ISO-8601 string; ``campaign`` a ``Campaign`` or dict. Invalid
    values raise ``ValidationError`` naming the field.
    """

    company_id: str
    company_domain: str | None = None
    session_token: str | None = None
    modified_time: datetime | str | None = None
    ip_address: str | None = None
    campaign: Campaign | Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        data = normalize_company({name: getattr(self, name) for name in COMPANY_FIELDS})
        if isinstance(self.campaign, Mapping):
            object.__setattr__(self, "campaign", Campaign(**data.get("campaign", {})))
        object.__setattr__(self, "_wire", data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Company:
        """Build from the wire dict; unknown keys raise ``ValidationError``."""
        return cls(**normalize_company(data))

    def to_dict(self) -> dict[str, Any]:
        """The reference's JSON object (unset fields omitted)."""
        return _wire_copy(self)

    def __repr__(self) -> str:
        return f"Company(company_id={self.company_id!r}, company_domain={self.company_domain!r})"


def _wire_copy(record: User | Company) -> dict[str, Any]:
    """A copy of a model's validated wire dict (the campaign copied too: callers may edit it)."""
    wire: dict[str, Any] = record.__dict__["_wire"]
    out = dict(wire)
    if "campaign" in out:
        out["campaign"] = dict(out["campaign"])
    return out


_USER_SPEC = _RecordSpec(
    "user",
    User,
    "user_id",
    USER_FIELDS,
    frozenset(("company_id", "session_token", "ip_address", "user_agent_string")),
)
_COMPANY_SPEC = _RecordSpec(
    "company",
    Company,
    "company_id",
    COMPANY_FIELDS,
    frozenset(("company_domain", "session_token", "ip_address")),
)
