"""Every hand-inlined fast path agrees with the general path it short-cuts.

The request path inlines the common case of a few checks (a plain string id, a short
token, plain dicts in a merge). Each table below feeds the same inputs to the inlined
path and to the general one and asserts the same result, so the two cannot drift apart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any
from uuid import UUID

import pytest

from moesif_users_middleware._capture.pipeline import FAILED, UNSET, Capture
from moesif_users_middleware._capture.request_view import EnvironView
from moesif_users_middleware._capture.session_token import (
    MAX_TOKEN_LENGTH,
    token_from_authorization,
)
from moesif_users_middleware._merge import deep_merge, merge_update
from moesif_users_middleware.models import MAX_ID_LENGTH
from moesif_users_middleware.sender import _reset_senders_for_tests

Make = Callable[..., Capture]

IDS: list[Any] = [
    "42",
    "user@example.com",
    "",
    " ",
    "\t\n",
    " padded ",
    "a" * MAX_ID_LENGTH,
    "a" * (MAX_ID_LENGTH + 1),
    "é-accent",
    "日本",
    "\ud800",
    "ok\x00nul",
    42,
    0,
    -7,
    True,
    None,
    3.5,
    UUID(int=7),
    b"bytes",
    ["list"],
]


@pytest.fixture(autouse=True)
def _no_leftover_senders() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


def view() -> EnvironView:
    environ = {"REMOTE_ADDR": "203.0.113.9", "QUERY_STRING": "", "HTTP_USER_AGENT": "t/1"}
    return EnvironView(environ, None, None, auth_user=lambda: None)


def deferred(capture: Capture) -> list[tuple[Any, ...]]:
    """Captures handed to the sender, kept unfinished (the test reads them)."""
    items: list[tuple[Any, ...]] = []
    capture.sender.defer = items.append  # type: ignore[method-assign]
    return items


@pytest.mark.parametrize("result", IDS, ids=repr)
def test_identify_user_inline_check_agrees_with_to_id(make: Make, result: Any) -> None:
    capture = make(identify_user=lambda request, response: result)
    items = deferred(capture)
    capture.capture(view())
    general = capture._user_id(view(), result)
    assert (items[0][2] if items else None) == general


@pytest.mark.parametrize("result", IDS, ids=repr)
def test_company_inline_check_agrees_with_to_id(make: Make, result: Any) -> None:
    capture = make(
        identify_user=lambda request, response: "u", identify_company=lambda r, s: result
    )
    items = deferred(capture)
    capture.capture(view())
    (item,) = items
    finished = capture.finish(item)
    assert finished is not None
    (_, record), *_ = finished.records
    general = capture._to_id("identify_company", result)
    expected = general if isinstance(general, str) else None
    assert record.get("company_id") == expected


TOKENS = [
    "Bearer abc",
    "Bearer " + "t" * MAX_TOKEN_LENGTH,
    "Bearer " + "t" * (MAX_TOKEN_LENGTH + 1),
    "Bearer   spaced  ",
    "Basic dXNlcjpwYXNz",
    "abc",
    "",
]


@pytest.mark.parametrize("authorization", TOKENS, ids=lambda t: t[:20])
def test_default_token_inline_length_check_agrees_with_checked_token(
    make: Make, authorization: str
) -> None:
    capture = make()
    headers = {"authorization": authorization}
    inline = capture._default_token(headers.get)
    token = token_from_authorization(authorization) if authorization else None
    general = capture._checked_token("session token header", token) if token else None
    assert inline == general
    assert capture._to_token(UNSET) is None  # an unset hook never yields a token


class Plain(OrderedDict[str, Any]):
    """A mapping that is a dict subclass: the fast path must treat it as a mapping."""


MERGES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"a": 1}, {"b": 2}),
    ({"a": {"x": 1}}, {"a": {"y": 2}}),
    ({"a": {"x": 1}}, {"a": 5}),
    ({"a": 5}, {"a": {"x": 1}}),
    ({"a": [1, 2]}, {"a": [3]}),
    ({"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"c": 3}, "e": None}}),
    ({"a": None}, {"a": {"x": True}}),
    ({"a": "s"}, {"a": 1.5}),
]


def reference_deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``deep_merge`` without its fast path: every type test through ``isinstance``."""
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = reference_deep_merge(current, value)
        else:
            merged[key] = value
    return merged


@pytest.mark.parametrize(("base", "update"), MERGES)
def test_deep_merge_fast_path_agrees_with_isinstance(
    base: dict[str, Any], update: dict[str, Any]
) -> None:
    assert deep_merge(base, update) == reference_deep_merge(base, update)
    proxied = {k: MappingProxyType(v) if type(v) is dict else v for k, v in update.items()}
    assert deep_merge(base, proxied) == reference_deep_merge(base, proxied)
    subclassed = {k: Plain(v) if type(v) is dict else v for k, v in base.items()}
    assert deep_merge(subclassed, update) == reference_deep_merge(subclassed, update)
    older = {"user_id": "u", "metadata": base}
    assert merge_update(older, {"user_id": "u", "metadata": update})["metadata"] == (
        reference_deep_merge(base, update)
    )


def environ_of(headers: dict[str, str], query: str = "") -> dict[str, Any]:
    return {"REMOTE_ADDR": "10.0.0.1", "QUERY_STRING": query, **headers}


# Requests whose records (without metadata) a capture may reuse; each is captured twice
# with different metadata, the second time after other users' captures.
REUSED: list[tuple[str, dict[str, Any], Any]] = [
    ("plain", environ_of({"HTTP_USER_AGENT": "t/1", "HTTP_AUTHORIZATION": "Bearer tok"}), "c1"),
    ("proxied", environ_of({"HTTP_X_FORWARDED_FOR": "198.51.100.7, 10.0.0.2"}), "c2"),
    ("campaign", environ_of({"HTTP_REFERER": "https://ref.example/x"}, "utm_source=n"), None),
    ("api key", environ_of({"HTTP_X_API_KEY": "k-1", "HTTP_USER_AGENT": "u" * 5000}), 7),
    ("bad token", environ_of({"HTTP_AUTHORIZATION": "Bearer " + "t" * 9000}), "c3"),
    ("no company", environ_of({}), FAILED),
]


@pytest.mark.parametrize(("name", "environ", "company"), REUSED, ids=[r[0] for r in REUSED])
def test_records_reused_across_captures_equal_fresh_ones(
    make: Make, name: str, environ: dict[str, Any], company: Any
) -> None:
    """Capture._bases reuses a key's records without metadata; a fresh Capture builds them."""

    def hooks() -> dict[str, Any]:
        return {
            "identify_user": lambda request, response: request["user"],
            "identify_company": lambda request, response: company,
            "get_metadata": lambda request, response: {"n": request["n"]},
            "get_company_domain": lambda request, response: "acme.example",
            "get_company_metadata": lambda request, response: {"n": request["n"]},
        }

    def finish(capture: Capture, user: str, n: int) -> Any:
        items = deferred(capture)
        capture.capture(EnvironView(environ, {"user": user, "n": n}, None, auth_user=None))
        finished = capture.finish(items[0])
        assert finished is not None
        return [(kind.name, record) for kind, record in finished.records], finished.repeatable

    reusing = make(**hooks())
    finish(reusing, "u1", 1)
    finish(reusing, "u2", 1)
    again = finish(reusing, "u1", 2)
    assert again == finish(make(**hooks()), "u1", 2)
    assert again[0][0][1]["metadata"] == {"n": 2}
    reported = name in ("api key", "bad token")  # a problem is reported every time: not kept
    assert len(reusing._base_cache) == (0 if reported else 2)
