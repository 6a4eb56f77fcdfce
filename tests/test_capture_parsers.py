"""The small parsers capture relies on: Authorization, JWT claims, user objects, metadata."""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moesif_users_middleware._capture.pipeline import user_id_from_object
from moesif_users_middleware._capture.session_token import (
    bearer_token,
    jwt_claim,
    token_from_authorization,
)
from moesif_users_middleware._json import check_json
from moesif_users_middleware.models import ValidationError, check_json_value


def make_jwt(payload: Any, header: Any = None) -> str:
    def part(value: Any) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header or {'alg': 'HS256', 'typ': 'JWT'})}.{part(payload)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer   tok-1  ", "tok-1"),
        ("BEARER\ttok-2", "tok-2"),
        ("Bearer", None),
        ("Bearer    ", None),
        ("", None),
        ("   ", None),
        ("Basic dXNlcjpwYXNzd29yZA==", None),
        ("basic dXNlcjpwYXNzd29yZA==", None),
        ("Basic", None),
        ('Digest username="u", response="r"', None),
        ("Negotiate YIIC", None),
        ("NTLM TlRMTVNT", None),
        ("Token drf-token-1", "drf-token-1"),
        ("ApiKey key-9", "key-9"),
        ("raw-api-key", "raw-api-key"),
    ],
)
def test_token_from_authorization(value: str, expected: str | None) -> None:
    assert token_from_authorization(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Token abc", None),
        ("Basic abc", None),
        ("abc", None),
        ("Bearer", None),
    ],
)
def test_bearer_token(value: str, expected: str | None) -> None:
    assert bearer_token(value) == expected


@pytest.mark.parametrize(
    ("payload", "claim", "expected"),
    [
        ({"sub": "user-7"}, "sub", "user-7"),
        ({"sub": 42}, "sub", "42"),
        ({"uid": "u"}, "uid", "u"),
        ({"https://example.com/user_id": "u9"}, "https://example.com/user_id", "u9"),
        ({"sub": True}, "sub", None),
        ({"sub": ""}, "sub", None),
        ({"sub": None}, "sub", None),
        ({"sub": {"id": 1}}, "sub", None),
        ({"sub": 1.5}, "sub", None),
        ({"other": "x"}, "sub", None),
        (["sub"], "sub", None),
    ],
)
def test_jwt_claim(payload: Any, claim: str, expected: str | None) -> None:
    assert jwt_claim(make_jwt(payload), claim) == expected


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b",
        "a.b.c.d",
        "x.!!!.y",
        "x." + base64.urlsafe_b64encode(b"\xff\xfe").decode() + ".y",
        "x." + base64.urlsafe_b64encode(b"{not json").decode() + ".y",
        "x." + base64.urlsafe_b64encode(b"[" * 3000).decode() + ".y",
        "x.é.y",
        "x." + "A" * 9000 + ".y",
    ],
)
def test_malformed_jwts_give_none(token: str) -> None:
    assert jwt_claim(token, "sub") is None


@given(st.text(max_size=300), st.text(max_size=20))
def test_header_parsers_never_raise(value: str, claim: str) -> None:
    for result in (token_from_authorization(value), bearer_token(value), jwt_claim(value, claim)):
        assert result is None or (isinstance(result, str) and result)


class DjangoLikeUser:
    def __init__(self, pk: Any, authenticated: bool = True) -> None:
        self.pk = pk
        self.is_authenticated = authenticated


class FlaskLoginUser:
    is_authenticated = True

    def get_id(self) -> str:
        return "flask-7"


class AnonymousFlaskUser:
    is_authenticated = False
    is_anonymous = True

    def get_id(self) -> None:
        return None


class StarletteSimpleUser:
    """Like starlette.authentication.SimpleUser: identity is not implemented."""

    def __init__(self, username: str) -> None:
        self.username = username

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def identity(self) -> str:
        raise NotImplementedError


class StarletteIdentityUser(StarletteSimpleUser):
    @property
    def identity(self) -> str:
        return "ident-3"


class OldStyleUser:
    pk = 5

    def is_authenticated(self) -> bool:
        return False


class Exploding:
    @property
    def is_authenticated(self) -> bool:
        raise RuntimeError("database down")

    @property
    def pk(self) -> int:
        raise RuntimeError("database down")


UID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (None, None),
        ("alice", "alice"),
        ("", None),
        ("  ", None),
        (7, "7"),
        (True, None),
        (UID, str(UID)),
        (DjangoLikeUser(12), "12"),
        (DjangoLikeUser(UID), str(UID)),
        (DjangoLikeUser(12, authenticated=False), None),
        (DjangoLikeUser(None), None),
        (FlaskLoginUser(), "flask-7"),
        (AnonymousFlaskUser(), None),
        (StarletteSimpleUser("bob"), "bob"),
        (StarletteIdentityUser("bob"), "ident-3"),
        (OldStyleUser(), None),
        (Exploding(), None),
        ({"user_id": "d1"}, "d1"),
        ({"id": 3}, "3"),
        ({"sub": "s1"}, "s1"),
        ({"name": "x"}, None),
        (object(), None),
        (1.5, None),
    ],
)
def test_user_id_from_object(user: Any, expected: str | None) -> None:
    assert user_id_from_object(user) == expected


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"email": "a@b.c", "n": 1, "ok": True, "none": None, "f": 1.5},
        {"sales_info": {"stage": "Customer", "lifetime_value": 24000, "tags": ["a", 1, None]}},
        {"tuple": ("a", 1), "nested": [{"a": [1, 2, {"b": 2.5}]}]},
        OrderedDict(a=1),
    ],
)
def test_plain_metadata_is_returned_as_is(metadata: dict[str, Any]) -> None:
    snapshot = json.dumps(metadata, sort_keys=True)
    checked, bound = check_json(metadata, "metadata")
    assert checked is metadata
    assert bound >= len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False))
    assert json.dumps(metadata, sort_keys=True) == snapshot


def test_mappings_that_are_not_dicts_are_copied_into_dicts() -> None:
    inner = MappingProxyType({"b": 1})
    metadata = {"a": inner, "l": [MappingProxyType({"c": 2})]}
    checked, _ = check_json(metadata, "metadata")
    assert checked == {"a": {"b": 1}, "l": [{"c": 2}]}
    assert type(checked["a"]) is dict
    assert type(checked["l"][0]) is dict
    assert metadata["a"] is inner  # the hook's data is untouched
    json.dumps(checked)
    top, _ = check_json(MappingProxyType({"x": 1}), "metadata")
    assert top == {"x": 1}
    assert type(top) is dict


@pytest.mark.parametrize(
    "metadata",
    [
        {"f": math.nan},
        {"f": [math.inf]},
        {1: "int key"},
        {"nested": {2: "x"}},
        {"s": {1, 2}},
        {"o": object()},
        {"b": b"bytes"},
    ],
)
def test_invalid_metadata_is_rejected(metadata: dict[Any, Any]) -> None:
    with pytest.raises(ValidationError):
        check_json(metadata, "metadata")


def test_deep_metadata_is_rejected() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["d"] = {}
        node = node["d"]
    with pytest.raises(ValidationError, match="deeper"):
        check_json(deep, "metadata")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_metadata_check_agrees_with_the_models_check(metadata: dict[str, Any]) -> None:
    try:
        check_json_value(metadata, "metadata")
        valid = True
    except ValidationError:
        valid = False
    try:
        checked, bound = check_json(metadata, "metadata")
    except ValidationError:
        assert not valid
        return
    assert valid
    serialized = json.dumps(checked, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    assert bound >= len(serialized)
