"""User and Campaign validation: every bad input names its field."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
from samples import REFERENCE_USER

from moesif_users_middleware import Campaign, User, ValidationError
from moesif_users_middleware.models import normalize_campaign, normalize_user
from moesif_users_middleware.transport import normalize_users


class Unserializable:
    pass


BAD_USERS: list[tuple[str, Any, str]] = [
    ("missing user_id", {}, "user_id"),
    ("None user_id", {"user_id": None}, "user_id"),
    ("int user_id", {"user_id": 12345}, "user_id"),
    ("empty user_id", {"user_id": ""}, "user_id"),
    ("blank user_id", {"user_id": "   "}, "user_id"),
    ("huge user_id", {"user_id": "x" * 5000}, "user_id"),
    ("int company_id", {"user_id": "u", "company_id": 7}, "company_id"),
    ("list session_token", {"user_id": "u", "session_token": ["a"]}, "session_token"),
    ("bytes ip_address", {"user_id": "u", "ip_address": b"1.2.3.4"}, "ip_address"),
    ("octet over 255", {"user_id": "u", "ip_address": "999.1.1.1"}, "ip_address"),
    ("not an address", {"user_id": "u", "ip_address": "not-an-ip"}, "ip_address"),
    ("empty ip_address", {"user_id": "u", "ip_address": ""}, "ip_address"),
    ("leading zero", {"user_id": "u", "ip_address": "01.2.3.4"}, "ip_address"),
    ("padded ip_address", {"user_id": "u", "ip_address": " 1.2.3.4"}, "ip_address"),
    ("ip with port", {"user_id": "u", "ip_address": "1.2.3.4:80"}, "ip_address"),
    ("three octets", {"user_id": "u", "ip_address": "1.2.3"}, "ip_address"),
    ("bad ipv6", {"user_id": "u", "ip_address": "2001:db8::g"}, "ip_address"),
    ("ipv6 zone id", {"user_id": "u", "ip_address": "fe80::1%eth0"}, "ip_address"),
    ("cidr", {"user_id": "u", "ip_address": "10.0.0.0/8"}, "ip_address"),
    ("int user agent", {"user_id": "u", "user_agent_string": 5}, "user_agent_string"),
    ("list metadata", {"user_id": "u", "metadata": [1, 2]}, "metadata"),
    ("str metadata", {"user_id": "u", "metadata": "{}"}, "metadata"),
    ("object in metadata", {"user_id": "u", "metadata": {"a": Unserializable()}}, "metadata.a"),
    ("nested set", {"user_id": "u", "metadata": {"a": {"b": {1, 2}}}}, "metadata.a.b"),
    ("NaN in metadata", {"user_id": "u", "metadata": {"score": float("nan")}}, "metadata.score"),
    ("inf in list", {"user_id": "u", "metadata": {"l": [1, float("inf")]}}, "metadata.l[1]"),
    ("non-str key", {"user_id": "u", "metadata": {1: "a"}}, "metadata"),
    ("list campaign", {"user_id": "u", "campaign": ["google"]}, "campaign"),
    ("unknown campaign key", {"user_id": "u", "campaign": {"utm_foo": "x"}}, "campaign.utm_foo"),
    ("int campaign value", {"user_id": "u", "campaign": {"utm_source": 1}}, "campaign.utm_source"),
    ("bad timestamp", {"user_id": "u", "modified_time": "yesterday"}, "modified_time"),
    ("int timestamp", {"user_id": "u", "modified_time": 1700000000}, "modified_time"),
    ("unknown field", {"user_id": "u", "email": "a@b.c"}, "email"),
]


@pytest.mark.parametrize(
    ("data", "field"), [(d, f) for _, d, f in BAD_USERS], ids=[i for i, _, _ in BAD_USERS]
)
def test_invalid_user_names_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_user(data)
    assert info.value.field == field
    assert str(info.value).startswith(field)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("data", "field"), [(d, f) for _, d, f in BAD_USERS], ids=[i for i, _, _ in BAD_USERS]
)
def test_user_from_dict_rejects_the_same_inputs(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        User.from_dict(data)
    assert info.value.field == field


@pytest.mark.parametrize(
    "address", ["203.0.113.7", "0.0.0.0", "::1", "2001:DB8::1", "::ffff:192.0.2.1", "fe80::1"]
)
def test_ip_address_accepts_ipv4_and_ipv6_as_written(address: str) -> None:
    assert normalize_user({"user_id": "u", "ip_address": address})["ip_address"] == address
    assert User("u", ip_address=address).to_dict()["ip_address"] == address


def test_invalid_ip_address_in_a_batch_names_the_index() -> None:
    users = [{"user_id": "a", "ip_address": "10.0.0.1"}] * 3 + [
        {"user_id": "b", "ip_address": "999.1.1.1"}
    ]
    with pytest.raises(ValidationError) as info:
        normalize_users(users)
    assert info.value.field == "users[3].ip_address"
    assert "999.1.1.1" in info.value.message
    with pytest.raises(ValidationError) as info:
        User("u", ip_address="not-an-ip")
    assert info.value.field == "ip_address"


def test_non_object_user() -> None:
    with pytest.raises(ValidationError) as info:
        normalize_user(["12345"])
    assert info.value.field == "user"


def test_reference_user_round_trips_exactly() -> None:
    user = User.from_dict(REFERENCE_USER)
    assert user.to_dict() == REFERENCE_USER
    assert normalize_user(REFERENCE_USER) == REFERENCE_USER
    assert normalize_user(user) == REFERENCE_USER
    assert isinstance(user.campaign, Campaign)
    assert user.campaign.utm_source == "google"


def test_to_dict_omits_unset_fields_and_nones() -> None:
    assert User("42").to_dict() == {"user_id": "42"}
    assert normalize_user({"user_id": "42", "company_id": None, "metadata": None}) == {
        "user_id": "42"
    }


def test_empty_campaign_is_omitted() -> None:
    assert User("42", campaign=Campaign()).to_dict() == {"user_id": "42"}
    assert normalize_user({"user_id": "42", "campaign": {"utm_source": None}}) == {"user_id": "42"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc), "2024-05-01T12:30:00.000Z"),
        (datetime(2024, 5, 1, 12, 30), "2024-05-01T12:30:00.000Z"),
        (
            datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))),
            "2024-05-01T12:30:00.000Z",
        ),
        ("2024-05-01T12:30:00Z", "2024-05-01T12:30:00.000Z"),
        ("2024-05-01T12:30:00.123456+00:00", "2024-05-01T12:30:00.123Z"),
        ("2024-05-01", "2024-05-01T00:00:00.000Z"),
    ],
)
def test_modified_time_accepts_datetime_and_iso_strings(value: Any, expected: str) -> None:
    assert User("u", modified_time=value).to_dict()["modified_time"] == expected


def test_campaign_validation() -> None:
    assert Campaign.from_dict({"gclid": "abc"}).to_dict() == {"gclid": "abc"}
    with pytest.raises(ValidationError) as info:
        Campaign(utm_source=3)  # type: ignore[arg-type]
    assert info.value.field == "campaign.utm_source"
    with pytest.raises(ValidationError) as info:
        Campaign.from_dict({"source": "x"})
    assert info.value.field == "campaign.source"


CAMPAIGNS: list[dict[Any, Any]] = [
    {},
    {"utm_source": "google"},
    {"utm_source": "google", "utm_medium": "cpc", "gclid": "abc", "referrer": ""},
    {"utm_source": None},
    {"utm_source": "a", "utm_term": None},
    {"utm_source": "caf\u00e9 \u2603"},
    {"utm_source": "bad \ud800"},
    {"utm_source": 3},
    {"utm_source": "a", "source": "x"},
    {1: "x"},
    {"utm_source": b"bytes"},
]


@pytest.mark.parametrize("value", CAMPAIGNS, ids=repr)
def test_campaign_fast_path_agrees_with_the_general_path(value: dict[Any, Any]) -> None:
    """A plain dict takes normalize_campaign's fast path; a read-only view of it cannot."""

    def outcome(candidate: Any) -> Any:
        try:
            return normalize_campaign(candidate)
        except ValidationError as error:
            return ("error", error.field)

    fast = outcome(value)
    assert fast == outcome(MappingProxyType(value))
    if isinstance(fast, dict):
        assert fast is not value  # a copy: the caller's dict stays theirs


def test_user_is_immutable_and_input_untouched() -> None:
    data = {"user_id": "u", "metadata": {"a": {"b": 1}}}
    user = User.from_dict(data)
    out = user.to_dict()
    out["metadata"] = {}
    assert user.to_dict()["metadata"] == {"a": {"b": 1}}
    assert data == {"user_id": "u", "metadata": {"a": {"b": 1}}}
    with pytest.raises(AttributeError):
        user.user_id = "v"  # type: ignore[misc]


def test_repr_shows_no_metadata_or_token() -> None:
    text = repr(User("u", session_token="secret-token", metadata={"email": "a@b.c"}))
    assert "secret-token" not in text
    assert "a@b.c" not in text


def test_deep_metadata_is_rejected_not_recursion_error() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(ValidationError):
        normalize_user({"user_id": "u", "metadata": deep})
