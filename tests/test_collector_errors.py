"""The collector's error answers: JSON everywhere, the right status, never a 500 for input."""

from __future__ import annotations

import gzip
import json
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from servers import APP_ID_HEADER, CollectorHandle, ServerThread

TEN_MIB = 10 * 1024 * 1024


def post_raw(
    collector: CollectorHandle,
    app_id: str,
    body: bytes,
    *,
    path: str = "/v1/users",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return collector.client.post(
        path, content=body, headers={APP_ID_HEADER: app_id, **(headers or {})}
    )


def assert_json_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert isinstance(body["message"], str)
    return body


def assert_still_serving(collector: CollectorHandle, app_id: str) -> None:
    user_id = f"alive-{time.monotonic_ns()}"
    response = collector.client.post(
        "/v1/users", json={"user_id": user_id}, headers={APP_ID_HEADER: app_id}
    )
    assert response.status_code == 201
    assert collector.get_user(app_id, user_id) is not None


# --- 401 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/users"),
        ("POST", "/v1/users/batch"),
        ("GET", "/v1/users"),
        ("GET", "/v1/users/12345"),
        ("GET", "/v1/_stats"),
    ],
)
@pytest.mark.parametrize("header", [None, ""])
def test_v1_routes_need_an_application_id(
    collector: CollectorHandle, method: str, path: str, header: str | None
) -> None:
    headers = {} if header is None else {APP_ID_HEADER: header}
    body = b'{"user_id": "u"}' if path == "/v1/users" else b'[{"user_id": "u"}]'
    response = collector.client.request(
        method, path, content=body if method == "POST" else None, headers=headers
    )

    assert_json_error(response, 401, "unauthorized")
    assert APP_ID_HEADER in response.json()["message"]


def test_header_name_is_case_insensitive(collector: CollectorHandle, app_id: str) -> None:
    response = collector.client.post(
        "/v1/users", json={"user_id": "u"}, headers={"x-moesif-application-id": app_id}
    )

    assert response.status_code == 201
    assert collector.get_user(app_id, "u") is not None


# --- 400 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "invalid JSON"),
        (b"   \n", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b'{"user_id": "u",}', "invalid JSON"),
        (b"user_id=u", "invalid JSON"),
        (b'{"user_id": "u"} trailing', "invalid JSON"),
        (b'{"user_id": "u", "metadata": {"x": NaN}}', "invalid JSON"),
        (b'{"user_id": "u", "metadata": {"x": Infinity}}', "invalid JSON"),
        (b'{"user_id": "u", "metadata": {"x": -Infinity}}', "invalid JSON"),
        (b'{"user_id": "u", "metadata": {"x": ' + b"9" * 5000 + b"}}", "invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "invalid JSON"),
        (b'\xef\xbb\xbf{"user_id": "u"}', "invalid JSON"),  # UTF-8 BOM
        (b'{"user_id": "\xff\xfe"}', "invalid body"),  # not UTF-8
        (b'{"user_id": "\xed\xa0\x80"}', "invalid body"),  # UTF-8-encoded surrogate
        ('{"user_id": "ü"}'.encode("latin-1"), "invalid body"),
        (b'"just a string"', "invalid body"),
        (b"[]", "invalid body"),
        (b"null", "invalid body"),
        (b"12", "invalid body"),
    ],
)
def test_bad_bodies_are_400(
    collector: CollectorHandle, app_id: str, body: bytes, error: str
) -> None:
    assert_json_error(post_raw(collector, app_id, body), 400, error)
    assert collector.list_users(app_id) == []


@pytest.mark.parametrize(
    "body", [b"{}", b'{"user_id": "u"}', b"null", b"[1, 2"], ids=["object", "user", "null", "bad"]
)
def test_batch_route_wants_a_json_array(
    collector: CollectorHandle, app_id: str, body: bytes
) -> None:
    response = post_raw(collector, app_id, body, path="/v1/users/batch")

    assert response.status_code == 400
    assert response.json()["error"] in ("invalid body", "invalid JSON")


@pytest.mark.parametrize(
    ("user", "field"),
    [
        ({"user_id": "u", "metadata": {"x": 1e999}}, "metadata.x"),  # float overflow -> inf
        ({"user_id": "u", "metadata": {"nested": {"deep": -1e400}}}, "metadata.nested.deep"),
        ({"user_id": "x" * 5000}, "user_id"),
        ({"user_id": "u", "ip_address": "999.1.1.1"}, "ip_address"),
    ],
)
def test_values_json_parses_but_the_api_refuses(
    collector: CollectorHandle, app_id: str, user: dict[str, Any], field: str
) -> None:
    body = json.dumps(user).replace("Infinity", "1e999").encode()
    response = post_raw(collector, app_id, body)

    assert assert_json_error(response, 400, "invalid user")["field"] == field


def test_metadata_nested_too_deep_is_400(collector: CollectorHandle, app_id: str) -> None:
    metadata: dict[str, Any] = {"leaf": 1}
    for _ in range(100):
        metadata = {"level": metadata}

    response = collector.client.post(
        "/v1/users/batch",
        json=[{"user_id": "u", "metadata": metadata}],
        headers={APP_ID_HEADER: app_id},
    )

    body = assert_json_error(response, 400, "invalid user")
    assert body["index"] == 0
    assert body["field"].startswith("metadata.level")


@pytest.mark.parametrize(
    "modified_time",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01", 12, "", "2024-13-01"],
)
def test_unrepresentable_modified_time_is_400(
    collector: CollectorHandle, app_id: str, modified_time: Any
) -> None:
    response = collector.client.post(
        "/v1/users/batch",
        json=[{"user_id": "u", "modified_time": modified_time}],
        headers={APP_ID_HEADER: app_id},
    )

    body = assert_json_error(response, 400, "invalid user")
    assert body["index"] == 0
    assert collector.list_users(app_id) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (rb'{"user_id": "u\ud800"}', "user_id"),
        (rb'{"user_id": "u", "metadata": {"k": ["ok", "\uDFFF"]}}', "metadata.k[1]"),
        (rb'{"user_id": "u", "metadata": {"\ud83d": 1}}', "metadata"),
        (rb'{"user_id": "u", "campaign": {"utm_source": "\udc00x"}}', "campaign.utm_source"),
    ],
)
def test_lone_surrogates_are_400_naming_the_field(
    collector: CollectorHandle, app_id: str, body: bytes, field: str
) -> None:
    response = post_raw(collector, app_id, body)

    assert assert_json_error(response, 400, "invalid user")["field"] == field
    assert collector.list_users(app_id) == []


def test_lone_surrogate_in_an_unknown_field_name_is_400(
    collector: CollectorHandle, app_id: str
) -> None:
    response = post_raw(
        collector, app_id, rb'[{"user_id": "u", "\ud800": 1}]', path="/v1/users/batch"
    )

    body = assert_json_error(response, 400, "invalid user")
    assert body["index"] == 0
    assert body["field"] == "\ud800"  # echoed back as a JSON escape


def test_surrogate_pairs_are_fine(collector: CollectorHandle, app_id: str) -> None:
    response = post_raw(
        collector, app_id, rb'{"user_id": "party\ud83c\udf89", "metadata": {"e": "\ud83d\ude00"}}'
    )

    assert response.status_code == 201
    stored = collector.get_user(app_id, "party🎉")
    assert stored is not None
    assert stored["metadata"] == {"e": "😀"}


def test_duplicate_keys_last_one_wins(collector: CollectorHandle, app_id: str) -> None:
    body = b'{"user_id": "first", "user_id": "u", "metadata": {"a": 1, "a": 2}}'

    assert post_raw(collector, app_id, body).status_code == 201
    assert collector.get_user(app_id, "first") is None
    stored = collector.get_user(app_id, "u")
    assert stored is not None
    assert stored["metadata"] == {"a": 2}


def test_huge_but_parseable_numbers_are_stored(collector: CollectorHandle, app_id: str) -> None:
    big = int("7" * 4000)
    body = f'{{"user_id": "u", "metadata": {{"big": {big}, "small": 1e-300}}}}'.encode()

    assert post_raw(collector, app_id, body).status_code == 201
    stored = collector.get_user(app_id, "u")
    assert stored is not None
    assert stored["metadata"] == {"big": big, "small": 1e-300}


def test_content_type_is_not_required(collector: CollectorHandle, app_id: str) -> None:
    # The reference's curl example sends -d without a JSON content type.
    response = post_raw(
        collector,
        app_id,
        b'{"user_id": "u"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 201


# --- 404 / 405 ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/subscriptions", "/v2/users", "/v1/users2"])
def test_unknown_routes_are_json_404(collector: CollectorHandle, app_id: str, path: str) -> None:
    for method in ("GET", "POST"):
        response = collector.client.request(method, path, headers={APP_ID_HEADER: app_id})
        assert_json_error(response, 404, "not found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/users", {"GET", "POST"}),
        ("DELETE", "/v1/users", {"GET", "POST"}),
        ("POST", "/v1/users/12345", {"GET"}),
        ("PATCH", "/v1/users/12345", {"GET"}),
        ("PUT", "/", {"GET", "POST"}),  # POST / is the page's application filter form
        ("POST", "/users/12345", {"GET"}),
        ("POST", "/v1/_stats", {"GET"}),
    ],
)
def test_wrong_methods_are_json_405(
    collector: CollectorHandle, app_id: str, method: str, path: str, allowed: set[str]
) -> None:
    response = collector.client.request(method, path, headers={APP_ID_HEADER: app_id})
    assert_json_error(response, 405, "method not allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} >= allowed


# --- 413 ---------------------------------------------------------------------------------


def test_body_over_the_default_limit_is_413(collector: CollectorHandle, app_id: str) -> None:
    padding = "x" * (TEN_MIB - 100)
    at_limit = json.dumps({"user_id": "big", "metadata": {"p": padding}}).encode()
    at_limit += b" " * (TEN_MIB - len(at_limit))
    assert len(at_limit) == TEN_MIB

    assert post_raw(collector, app_id, at_limit).status_code == 201
    over = assert_json_error(post_raw(collector, app_id, at_limit + b" "), 413, "payload too large")
    assert over["limit"] == TEN_MIB
    assert_still_serving(collector, app_id)


def chunks(body: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.fixture
def small_collector(
    fresh_collector: Callable[..., ServerThread],
) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    server = fresh_collector(max_body_bytes=1000)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client, {APP_ID_HEADER: "small-limit"}


def user_body(size: int) -> bytes:
    body = json.dumps({"user_id": "u", "metadata": {"p": ""}}).encode()
    return body[:-3] + b"x" * (size - len(body)) + body[-3:]


def test_limit_is_exact_for_plain_and_chunked_bodies(
    small_collector: tuple[httpx.Client, dict[str, str]],
) -> None:
    client, headers = small_collector
    assert len(user_body(1000)) == 1000

    assert client.post("/v1/users", content=user_body(1000), headers=headers).status_code == 201
    assert client.post("/v1/users", content=user_body(1001), headers=headers).status_code == 413
    # Without Content-Length the limit is enforced while streaming.
    chunked = client.post("/v1/users", content=chunks(user_body(5000), 100), headers=headers)
    assert_json_error(chunked, 413, "payload too large")
    ok = client.post("/v1/users", content=chunks(user_body(1000), 100), headers=headers)
    assert ok.status_code == 201


def test_limit_applies_after_gunzip(small_collector: tuple[httpx.Client, dict[str, str]]) -> None:
    client, headers = small_collector
    gz = {**headers, "Content-Encoding": "gzip"}

    at_limit = gzip.compress(user_body(1000))
    over = gzip.compress(user_body(1001))
    assert len(over) < 200

    assert client.post("/v1/users", content=at_limit, headers=gz).status_code == 201
    assert_json_error(client.post("/v1/users", content=over, headers=gz), 413, "payload too large")


def test_gzip_bomb_is_413_and_the_server_keeps_serving(
    collector: CollectorHandle, app_id: str
) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    bomb = b"".join(compressor.compress(zeros) for _ in range(50)) + compressor.flush()
    assert len(bomb) < 100_000  # 50 MiB of zeros

    response = post_raw(
        collector, app_id, bomb, path="/v1/users/batch", headers={"Content-Encoding": "gzip"}
    )

    assert assert_json_error(response, 413, "payload too large")["limit"] == TEN_MIB
    assert_still_serving(collector, app_id)


# --- gzip / Content-Encoding -------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "GZIP", "x-gzip", "identity, gzip", "gzip,identity"])
def test_gzip_bodies_are_accepted(collector: CollectorHandle, app_id: str, coding: str) -> None:
    body = json.dumps([{"user_id": "g", "metadata": {"coding": coding}}]).encode()

    response = post_raw(
        collector,
        app_id,
        gzip.compress(body),
        path="/v1/users/batch",
        headers={"Content-Encoding": coding},
    )

    assert (response.status_code, response.json()) == (201, {"records": 1})
    stored = collector.get_user(app_id, "g")
    assert stored is not None
    assert stored["metadata"] == {"coding": coding}


def test_multi_member_gzip_is_accepted(collector: CollectorHandle, app_id: str) -> None:
    body = json.dumps({"user_id": "multi", "metadata": {"x": 1}}).encode()
    members = gzip.compress(body[:10]) + gzip.compress(body[10:])

    response = post_raw(collector, app_id, members, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 201
    assert collector.get_user(app_id, "multi") is not None


@pytest.mark.parametrize("coding", ["identity", ""])
def test_identity_encoding_is_plain(collector: CollectorHandle, app_id: str, coding: str) -> None:
    response = post_raw(
        collector, app_id, b'{"user_id": "plain"}', headers={"Content-Encoding": coding}
    )

    assert response.status_code == 201


@pytest.mark.parametrize("coding", ["br", "deflate", "compress", "zstd", "gzip, gzip", "gzip, br"])
def test_unknown_content_encoding_is_415(
    collector: CollectorHandle, app_id: str, coding: str
) -> None:
    response = post_raw(
        collector, app_id, gzip.compress(b'{"user_id": "u"}'), headers={"Content-Encoding": coding}
    )

    assert_json_error(response, 415, "unsupported content encoding")
    assert collector.list_users(app_id) == []


GOOD_GZIP = gzip.compress(b'{"user_id": "u"}')


@pytest.mark.parametrize(
    "body",
    [
        b'{"user_id": "u"}',  # not compressed at all
        b"",
        GOOD_GZIP[:-5],  # truncated
        GOOD_GZIP[:10],  # header only
        GOOD_GZIP[:-8] + b"\x00" * 8,  # wrong CRC and size
        GOOD_GZIP + b"garbage",  # trailing bytes that are not a gzip member
        zlib.compress(b'{"user_id": "u"}'),  # zlib, not gzip
    ],
    ids=["plain", "empty", "truncated", "header-only", "bad-crc", "trailing-garbage", "zlib"],
)
def test_invalid_gzip_is_400(collector: CollectorHandle, app_id: str, body: bytes) -> None:
    response = post_raw(collector, app_id, body, headers={"Content-Encoding": "gzip"})

    assert_json_error(response, 400, "invalid body")
    assert collector.list_users(app_id) == []


def test_gzip_of_invalid_json_is_400(collector: CollectorHandle, app_id: str) -> None:
    response = post_raw(
        collector, app_id, gzip.compress(b"\xff not json"), headers={"Content-Encoding": "gzip"}
    )

    assert_json_error(response, 400, "invalid body")


# --- disconnects and real server faults --------------------------------------------------


def test_client_disconnect_mid_body_leaves_the_server_healthy(
    collector: CollectorHandle, app_id: str
) -> None:
    host, port = collector.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/users/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            + f"{APP_ID_HEADER}: {app_id}\r\n\r\n".encode()
            + b'[{"user_id": "partial"'
        )
        time.sleep(0.05)

    assert_still_serving(collector, app_id)
    assert collector.get_user(app_id, "partial") is None


def test_a_real_server_fault_is_json_500(fresh_collector: Callable[..., ServerThread]) -> None:
    server = fresh_collector()
    server.app.state.store.close()  # the database is gone: a fault no client input causes

    response = httpx.post(
        f"{server.url}/v1/users", json={"user_id": "u"}, headers={APP_ID_HEADER: "fault"}
    )

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "internal server error"
