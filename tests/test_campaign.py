"""Campaign extraction from the query string and the Referer (table-driven)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesif_users_middleware._capture.campaign import (
    CAMPAIGN_QUERY_KEYS,
    MAX_REFERRER_LENGTH,
    MAX_VALUE_LENGTH,
    extract_campaign,
)

HOST = "shop.example.com"
ALLOWED_KEYS = {*CAMPAIGN_QUERY_KEYS, "referrer", "referring_domain"}

QUERY_CASES: list[tuple[str, str, dict[str, str] | None]] = [
    # (id, query_string, expected) with no Referer
    ("empty", "", None),
    ("no-campaign", "page=2&sort=asc", None),
    ("utm-source", "utm_source=google", {"utm_source": "google"}),
    ("utm-medium", "utm_medium=cpc", {"utm_medium": "cpc"}),
    ("utm-campaign", "utm_campaign=adwords", {"utm_campaign": "adwords"}),
    ("utm-term", "utm_term=api+tooling", {"utm_term": "api tooling"}),
    ("utm-content", "utm_content=landing", {"utm_content": "landing"}),
    ("gclid", "gclid=EAIaIQobChMI", {"gclid": "EAIaIQobChMI"}),
    (
        "all-keys-mixed-with-others",
        "q=x&utm_source=google&utm_medium=cpc&utm_campaign=spring&utm_term=api"
        "&utm_content=hero&gclid=abc&page=3",
        {
            "utm_source": "google",
            "utm_medium": "cpc",
            "utm_campaign": "spring",
            "utm_term": "api",
            "utm_content": "hero",
            "gclid": "abc",
        },
    ),
    ("percent-encoding", "utm_campaign=spring%20sale%21", {"utm_campaign": "spring sale!"}),
    ("percent-utf8", "utm_term=caf%C3%A9", {"utm_term": "café"}),
    ("percent-invalid-utf8", "utm_term=caf%E9", {"utm_term": "caf\ufffd"}),
    ("percent-invalid-escape", "utm_source=100%zz", {"utm_source": "100%zz"}),
    ("percent-encoded-key", "utm_x=1&utm%5Fsource=news", {"utm_source": "news"}),
    ("first-wins", "utm_source=first&utm_source=second", {"utm_source": "first"}),
    ("blank-skipped", "utm_source=&utm_source=second", {"utm_source": "second"}),
    ("whitespace-blank-skipped", "utm_source=+%20&utm_source=real", {"utm_source": "real"}),
    ("only-blank", "utm_source=&gclid=", None),
    ("no-equals", "utm_source&gclid", None),
    ("stripped", "utm_medium=%20email%09", {"utm_medium": "email"}),
    ("value-with-equals", "utm_content=a=b", {"utm_content": "a=b"}),
    ("keys-case-sensitive", "UTM_SOURCE=google&Gclid=x", None),
    ("unknown-utm-key", "utm_id=7&utm_sourcex=y", None),
    ("semicolon-is-not-a-separator", "utm_source=a;utm_medium=b", {"utm_source": "a;utm_medium=b"}),
    ("latin1-text", "utm_source=\xe9t\xe9", {"utm_source": "\xe9t\xe9"}),
    ("garbage", "&&==&utm_=&=utm_source&%%%", None),
]


@pytest.mark.parametrize(
    ("query", "expected"), [pytest.param(q, e, id=i) for i, q, e in QUERY_CASES]
)
def test_query(query: str, expected: dict[str, str] | None) -> None:
    assert extract_campaign(query, None, HOST) == expected


def test_values_are_truncated() -> None:
    long = "x" * (MAX_VALUE_LENGTH + 50)
    result = extract_campaign(f"utm_source={long}&gclid={'g' * 300}", None, HOST)
    assert result == {"utm_source": "x" * MAX_VALUE_LENGTH, "gclid": "g" * MAX_VALUE_LENGTH}


def test_truncation_does_not_leave_trailing_space() -> None:
    value = "a" * (MAX_VALUE_LENGTH - 1) + "+b"
    assert extract_campaign(f"utm_term={value}", None, HOST) == {
        "utm_term": "a" * (MAX_VALUE_LENGTH - 1)
    }


REFERER_CASES: list[tuple[str, str | None, str | None, dict[str, str] | None]] = [
    # (id, referer, host, expected)
    (
        "cross-site",
        "https://news.example.org/story?id=1",
        HOST,
        {"referrer": "https://news.example.org/story?id=1", "referring_domain": "news.example.org"},
    ),
    ("same-site", f"https://{HOST}/cart", HOST, None),
    ("same-site-other-scheme", f"http://{HOST}/cart", HOST, None),
    ("same-site-host-with-port", f"https://{HOST}:8443/cart", f"{HOST}:8443", None),
    ("same-site-referer-port-only", f"https://{HOST}:8443/cart", HOST, None),
    ("same-site-case-insensitive", "https://Shop.Example.COM/", "SHOP.example.com:80", None),
    ("same-site-trailing-dot", f"https://{HOST}./", HOST, None),
    ("same-site-userinfo", f"https://user:pw@{HOST}/", HOST, None),
    (
        "subdomain-is-another-site",
        "https://example.com/",
        HOST,
        {"referrer": "https://example.com/", "referring_domain": "example.com"},
    ),
    (
        "port-and-case-removed",
        "HTTP://Blog.Example.NET:8080/post",
        HOST,
        {"referrer": "HTTP://Blog.Example.NET:8080/post", "referring_domain": "blog.example.net"},
    ),
    (
        "no-path",
        "https://t.co",
        HOST,
        {"referrer": "https://t.co", "referring_domain": "t.co"},
    ),
    (
        "query-right-after-host",
        "https://www.google.com?q=x",
        HOST,
        {"referrer": "https://www.google.com?q=x", "referring_domain": "www.google.com"},
    ),
    (
        "ipv6-referer",
        "http://[2001:db8::1]:8080/x",
        HOST,
        {"referrer": "http://[2001:db8::1]:8080/x", "referring_domain": "2001:db8::1"},
    ),
    ("ipv6-same-site", "http://[::1]:8000/x", "[::1]:8000", None),
    (
        "no-host-header",
        "https://news.example.org/",
        None,
        {"referrer": "https://news.example.org/", "referring_domain": "news.example.org"},
    ),
    (
        "surrounding-space",
        "  https://news.example.org/  ",
        HOST,
        {"referrer": "https://news.example.org/", "referring_domain": "news.example.org"},
    ),
    ("no-referer", None, HOST, None),
    ("empty-referer", "", HOST, None),
    ("relative-referer", "/path/only", HOST, None),
    ("scheme-relative", "//news.example.org/", HOST, None),
    ("other-scheme", "android-app://com.google.android.gm/", HOST, None),
    ("ftp-scheme", "ftp://files.example.org/", HOST, None),
    ("empty-host", "https:///path", HOST, None),
    ("space-in-host", "https://bad host/", HOST, None),
    ("unclosed-ipv6", "https://[::1/", HOST, None),
    ("bad-port", "https://news.example.org:http/", HOST, None),
    ("non-ascii-host", "https://exämple.org/", HOST, None),
    ("kelvin-sign-host", "https://\u212aaggle.com/", HOST, None),
    ("empty-label", "https://news..example.org/", HOST, None),
    ("leading-dot", "https://.example.org/", HOST, None),
    ("huge-authority", "https://" + "a@" * 4000 + "!", HOST, None),
    ("garbage", "\x00\xff not a url", HOST, None),
]


@pytest.mark.parametrize(
    ("referer", "host", "expected"),
    [pytest.param(r, h, e, id=i) for i, r, h, e in REFERER_CASES],
)
def test_referer(referer: str | None, host: str | None, expected: dict[str, str] | None) -> None:
    assert extract_campaign("", referer, host) == expected
    # Hostnames are cached: the second answer must agree.
    assert extract_campaign("", referer, host) == expected


def test_query_and_referer_together() -> None:
    result = extract_campaign("utm_source=newsletter&x=1", "https://mail.example.org/inbox", HOST)
    assert result == {
        "utm_source": "newsletter",
        "referrer": "https://mail.example.org/inbox",
        "referring_domain": "mail.example.org",
    }


def test_same_site_referer_keeps_utm() -> None:
    result = extract_campaign("utm_medium=email", f"https://{HOST}/", HOST)
    assert result == {"utm_medium": "email"}


def test_referrer_is_truncated() -> None:
    referer = "https://news.example.org/" + "p" * 2000
    result = extract_campaign("", referer, HOST)
    assert result is not None
    assert result["referrer"] == referer[:MAX_REFERRER_LENGTH]
    assert result["referring_domain"] == "news.example.org"


# -- property tests ------------------------------------------------------------

_latin1 = st.binary(max_size=80).map(lambda raw: raw.decode("latin-1"))
_pair = st.tuples(
    st.sampled_from([*CAMPAIGN_QUERY_KEYS, "utm_x", "q", "utm%5Fsource", "gclid+", ""]),
    st.one_of(st.text(max_size=20), _latin1, st.sampled_from(["", "%zz", "a+b", "%C3%A9", "%E9"])),
).map(lambda kv: f"{kv[0]}={kv[1]}")
_query = st.one_of(
    st.text(max_size=80),
    _latin1,
    st.lists(st.one_of(_pair, st.text(max_size=10)), max_size=6).map("&".join),
)
_referer = st.one_of(
    st.none(),
    st.text(max_size=80),
    _latin1,
    st.builds(
        lambda scheme, host, rest: f"{scheme}://{host}{rest}",
        st.sampled_from(["http", "https", "HTTPS", "ftp"]),
        st.one_of(st.sampled_from([HOST, "a.example.org", "[::1]", "x:1"]), st.text(max_size=15)),
        st.text(max_size=20),
    ),
)
_host = st.one_of(
    st.none(), st.sampled_from([HOST, f"{HOST}:8080", "[::1]:80"]), st.text(max_size=30)
)


@settings(max_examples=300, deadline=None)
@given(query=_query, referer=_referer, host=_host)
def test_any_input_gives_none_or_allowed_string_fields(
    query: str, referer: str | None, host: str | None
) -> None:
    result = extract_campaign(query, referer, host)
    if result is None:
        return
    assert result
    assert set(result) <= ALLOWED_KEYS
    assert all(isinstance(value, str) and value for value in result.values())
    assert all(len(result[key]) <= MAX_VALUE_LENGTH for key in CAMPAIGN_QUERY_KEYS if key in result)
    assert ("referrer" in result) == ("referring_domain" in result)


@settings(max_examples=300, deadline=None)
@given(query=_query)
def test_query_matches_parse_qsl(query: str) -> None:
    expected: dict[str, str] = {}
    if "utm_" in query or "gclid" in query:
        for key, value in parse_qsl(query, keep_blank_values=False):
            text = value.strip()[:MAX_VALUE_LENGTH].rstrip()
            if key in CAMPAIGN_QUERY_KEYS and text and key not in expected:
                expected[key] = text
    assert extract_campaign(query, None, None) == (expected or None)
