"""ScopeView.snapshot's one-pass fast path gives what the general path (the header index) gives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moesif_users_middleware._capture.request_view import ScopeView, SnapshotSpec, SnapshotView

SPEC = SnapshotSpec(
    ("user-agent", "forwarded", "x-forwarded-for", "x-real-ip", "authorization", "referer")
)


def snapshots(headers: Any, **extra: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(fast path, general path) snapshots of the same scope."""
    scope = {"type": "http", "headers": headers, "client": ("10.0.0.7", 5), "query_string": b"a=1"}
    scope.update(extra)
    fast = ScopeView(scope, None, None).snapshot(SPEC)
    general_view = ScopeView(scope, None, None)
    general_view.header("host")  # builds the index: snapshot then takes the general path
    general = general_view.snapshot(SPEC)
    return fast, general


CASES: list[tuple[str, Any]] = [
    ("no headers", []),
    ("usual", [(b"host", b"h"), (b"user-agent", b"ua/1"), (b"authorization", b"Bearer t")]),
    ("only unwanted", [(b"host", b"h"), (b"accept", b"*/*"), (b"cookie", b"a=1")]),
    ("repeated wanted", [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-for", b"5.6.7.8")]),
    ("repeated unwanted", [(b"accept", b"a"), (b"accept", b"b"), (b"referer", b"r")]),
    ("upper-case wanted", [(b"User-Agent", b"ua"), (b"referer", b"r")]),
    ("upper-case unwanted", [(b"X-Trace", b"1"), (b"user-agent", b"ua")]),
    ("no cased letters", [(b"123", b"x"), (b"user-agent", b"ua")]),
    ("bytearray value", [(b"user-agent", bytearray(b"ua"))]),
    ("str value", [(b"user-agent", "ua")]),
    ("str name", [("user-agent", b"ua"), (b"referer", b"r")]),
    ("bytearray name", [(bytearray(b"user-agent"), b"ua")]),
    ("three items", [(b"user-agent", b"ua", b"extra"), (b"referer", b"r")]),
    ("not a pair", [b"user-agent", (b"referer", b"r")]),
    ("int entry", [5, (b"referer", b"r")]),
    ("non-UTF-8", [(b"user-agent", b"caf\xe9")]),
    ("tuple of headers", ((b"user-agent", b"ua"), (b"referer", b"r"))),
    ("not iterable", 42),
    ("absent", None),
]


@pytest.mark.parametrize(("name", "headers"), CASES, ids=[name for name, _ in CASES])
def test_fast_snapshot_equals_general(name: str, headers: Any) -> None:
    fast, general = snapshots(headers)
    assert type(fast) is type(general)
    read_fast, read_general = SnapshotView(SPEC, fast), SnapshotView(SPEC, general)
    for header in SPEC.names:
        assert read_fast.header(header) == read_general.header(header), header
    assert read_fast.peer == read_general.peer
    assert read_fast.query_string == read_general.query_string
    assert fast == general


@pytest.mark.parametrize("client", [None, (), ("",), (5, 1), ["10.0.0.9", 1], "10.0.0.9"])
def test_fast_snapshot_peer_equals_general(client: Any) -> None:
    fast, general = snapshots([(b"user-agent", b"ua")], client=client)
    assert fast == general


names = st.sampled_from(
    [b"user-agent", b"referer", b"x-forwarded-for", b"User-Agent", b"host", b"cookie", b"x-1"]
)
values = st.one_of(st.binary(max_size=8), st.just("text"))


@given(st.lists(st.tuples(names, values), max_size=8))
def test_fast_snapshot_reads_like_general(headers: list[tuple[bytes, Any]]) -> None:
    fast, general = snapshots(headers)
    read_fast, read_general = SnapshotView(SPEC, fast), SnapshotView(SPEC, general)
    for header in SPEC.names:
        assert read_fast.header(header) == read_general.header(header)
