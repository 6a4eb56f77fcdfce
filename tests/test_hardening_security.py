"""Security: the application id stays secret, IPs cannot be spoofed, nothing private is sent.

- The application id never appears in logs (ours, httpx's, httpcore's), reprs,
  exception messages, the collector's HTML or JSON, or its SQLite files.
- A forwarding header from an untrusted peer never sets the recorded IP.
- A Basic credential is never stored or sent; hooks' metadata is sent exactly as given,
  and nothing else from the request (bodies, cookies, other headers) ever is.
- The collector binds 127.0.0.1 by default, warns when bound elsewhere, and its HTML
  escapes everything it renders.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import ipaddress
import logging
import pickle
import re
import uuid
from collections.abc import Callable, Iterator
from html import escape
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")  # hardening_apps builds Flask and Starlette apps
pytest.importorskip("starlette")

from faults import FaultServer, Reply, Reset
from hardening_apps import KINDS, PUBLIC_PEER, Site, make_site, request_header
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import APP_ID_HEADER, CollectorHandle, ServerThread

from moesif_users_middleware import collector as collector_module
from moesif_users_middleware._capture.config import ConfigurationError, build_config
from moesif_users_middleware._delivery.retry import RetryPolicy
from moesif_users_middleware.cli import build_parser
from moesif_users_middleware.collector.html import ListView, render_page, render_user
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender
from moesif_users_middleware.starlette import MoesifUsersMiddleware as AsgiMiddleware
from moesif_users_middleware.transport import ApiError, AsyncUsersClient, UsersClient
from moesif_users_middleware.wsgi import MoesifUsersMiddleware as WsgiMiddleware

FAST_RETRY = RetryPolicy(
    backoff_base=0.01,
    backoff_cap=0.05,
    batch_deadline=0.3,
    retry_after_cap=0.1,
    cycle_backoff_base=0.01,
    cycle_backoff_cap=0.05,
)
ALLOWED_FIELDS = {
    "user_id",
    "modified_time",
    "company_id",
    "session_token",
    "ip_address",
    "user_agent_string",
    "campaign",
    "metadata",
}


@pytest.fixture(autouse=True)
def _no_leftover_senders() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


def user_from_header(request: Any, response: Any) -> str | None:
    value = request_header(request, "X-User")
    return str(value) if value else None


# --- the application id stays secret -----------------------------------------------------


def _wsgi_hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def _asgi_hello(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that is never called: only the middleware's construction matters."""


async def _async_identify(request: Any, response: Any) -> str:
    return "u"


def configuration_errors(secret: str, url: str) -> list[BaseException]:
    """Every way of getting configuration wrong while holding the real application id."""
    attempts: list[Callable[[], object]] = [
        lambda: get_sender(secret, "ftp://example.com"),
        lambda: get_sender(secret, url, batch_size=0),
        lambda: get_sender(secret, url, flush_interval=float("nan")),
        lambda: get_sender(secret, url, no_such_option=1),
        lambda: build_config({"application_id": secret, "identify_user": "no.such.module.fn"}),
        lambda: build_config({"application_id": secret, "identify_user": 42}),
        lambda: build_config({"application_id": secret, "trusted_proxies": ["not-an-ip"]}),
        lambda: build_config({"application_id": secret, "enabled": "yes"}),
        lambda: build_config({"application_id": secret, "bogus": 1}),
        lambda: WsgiMiddleware(
            _wsgi_hello, application_id=secret, identify_user=_async_identify, strict=True
        ),
    ]
    errors: list[BaseException] = []
    for attempt in attempts:
        with pytest.raises((ConfigurationError, TypeError)) as caught:
            attempt()
        errors.append(caught.value)
    return errors


def exception_texts(exc: BaseException) -> list[str]:
    """Everything an exception could show: message, repr, args, pickle, its chain."""
    texts = [str(exc), repr(exc), repr(exc.args), repr(pickle.dumps(exc))]
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None:
            texts += [str(linked), repr(linked)]
    return texts


def test_the_application_id_never_appears_anywhere(
    fresh_collector: Callable[..., ServerThread],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "hardening-secret-" + uuid.uuid4().hex
    for name in ("moesif_users_middleware", "httpx", "httpcore", "uvicorn"):
        caplog.set_level(logging.DEBUG, logger=name)
    collector = fresh_collector(tmp_path / "secret.db")
    texts: list[str] = []

    with FaultServer(forward_to=collector.url) as faults:
        echo = {"message": f"unknown application id {secret}"}
        faults.script(
            Reply(401, echo),  # round 0: dropped, one error line
            Reply(500, f"<html>{secret}</html>".encode()),  # round 1: retried...
            Reply(400, echo),  # ...then rejected
            *[Reply(503, echo) for _ in range(30)],  # round 2: gives up, "unavailable"
            Reset(),
        )
        sender = get_sender(secret, faults.url, flush_interval=3600, timeout=1.0, _retry=FAST_RETRY)

        def leak(request: Any, response: Any) -> Any:
            raise LookupError(f"database refused {secret}")

        hooks = {
            "identify_user": user_from_header,
            "identify_company": leak,
            "get_session_token": lambda request, response: object(),
            "get_metadata": lambda request, response: {"x": float("nan")},
        }
        sites = [
            make_site(kind, {"application_id": secret, "base_url": faults.url, **hooks})
            for kind in KINDS
        ]
        # rounds 0 and 1 are rejected (401, 500 then 400); round 2 outlasts its deadlines
        # (503s), then a reset, then the API accepts round 2 and round 3
        for round_ in range(4):
            for site in sites:
                site.request(headers={"X-User": f"{site.kind}-{round_}"})
            sender.flush(timeout=3)
        assert sender.flush(timeout=5) is True

        # direct clients: errors from the API and from the network
        faults.script(Reply(401, echo), Reset())
        with UsersClient(secret, faults.url, timeout=1.0) as client:
            for _ in range(2):
                with pytest.raises(ApiError) as caught:
                    client.update_user({"user_id": "direct"})
                texts += exception_texts(caught.value)
                texts.append(caught.value.body)
            texts += [repr(client), str(client)]

        async def async_call() -> None:
            faults.script(Reply(401, echo))
            async with AsyncUsersClient(secret, faults.url, timeout=1.0) as client:
                with pytest.raises(ApiError) as caught:
                    await client.update_user({"user_id": "direct"})
                texts.extend(exception_texts(caught.value))
                texts.append(repr(client))

        asyncio.run(async_call())

    for error in configuration_errors(secret, collector.url):
        texts += exception_texts(error)
    # Without strict the same kind of mistake is logged (the logs are checked below).
    WsgiMiddleware(_wsgi_hello, application_id=secret, identify_user=_async_identify)
    AsgiMiddleware(_asgi_hello, application_id=secret, batchsize=5)
    AsgiMiddleware(_asgi_hello, application_id=secret + "\x00x")
    config, _ = build_config({"application_id": secret, "base_url": collector.url})
    asgi = AsgiMiddleware(_asgi_hello, application_id=secret, base_url=collector.url)
    wsgi = WsgiMiddleware(_wsgi_hello, application_id=secret, base_url=collector.url)
    texts += [repr(x) for x in (sender, sender.options, config, asgi, wsgi, asgi.capture)]
    texts += [str(x) for x in (sender, config, wsgi)]

    # the collector saw the real header, yet shows and stores only a hash of it
    http = collector_handle(collector)
    headers = {APP_ID_HEADER: secret}
    stored = {profile["user_id"] for profile in http.list_users(secret)}
    assert stored == {f"{kind}-{round_}" for kind in KINDS for round_ in (2, 3)}
    for path in ("/", "/v1/users", "/v1/_stats", "/v1/users/none", "/v1/users/wsgi-2"):
        texts.append(http.client.get(path, headers=headers).text)
    texts.append(http.client.post("/v1/users", content=b"{", headers=headers).text)
    texts.append(http.client.post("/v1/users/batch", json=[{}], headers=headers).text)
    texts.append(http.client.put("/v1/users", headers=headers).text)
    http.close()
    collector.stop()
    collector.app.state.store.close()
    files = [path.read_bytes() for path in tmp_path.glob("secret.db*")]

    logs = [caplog.text] + [
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    ]
    captured = capsys.readouterr()
    assert any("401" in line for line in logs)  # the failures really were logged
    assert any("unavailable" in line for line in logs)
    assert any("LookupError" in line for line in logs)
    assert any("did you mean 'batch_size'" in line for line in logs)
    assert any("printable ASCII" in line for line in logs)
    for text in [*logs, *texts, captured.out, captured.err]:
        assert secret not in text
    for data in files:
        assert secret.encode() not in data
    assert files


def collector_handle(server: ServerThread) -> CollectorHandle:
    return CollectorHandle(server)


@pytest.mark.parametrize("secret", ["SECRET-abc\ndef", "SECRET-abc\x00def", "SECRET-ünï"])
def test_an_unsendable_application_id_is_a_configuration_error(secret: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        get_sender(secret, "http://127.0.0.1:9")
    assert "SECRET" not in str(caught.value)


# --- spoofed forwarding headers ------------------------------------------------------------

SPOOFS = {
    "xff": {"X-Forwarded-For": "198.51.100.9"},
    "xff-chain": {"X-Forwarded-For": "198.51.100.9, 10.0.0.1, 127.0.0.1"},
    "forwarded": {"Forwarded": "for=198.51.100.9;proto=https"},
    "forwarded-quoted-v6": {"Forwarded": 'for="[2001:db8::9]:443"'},
    "x-real-ip": {"X-Real-IP": "198.51.100.9"},
    "all-at-once": {
        "X-Forwarded-For": "198.51.100.9",
        "Forwarded": "for=198.51.100.10",
        "X-Real-IP": "198.51.100.11",
        "True-Client-IP": "198.51.100.12",
        "CF-Connecting-IP": "198.51.100.13",
    },
}


@pytest.mark.parametrize("kind", KINDS)
def test_spoofed_forwarding_headers_never_set_the_recorded_ip(
    kind: str, collector: CollectorHandle, app_id: str
) -> None:
    site = make_site(
        kind,
        {"application_id": app_id, "base_url": collector.url, "identify_user": user_from_header},
    )
    for name, spoof in SPOOFS.items():
        site.request(headers={"X-User": f"spoof-{name}", **spoof}, peer=PUBLIC_PEER)
        site.request(headers={"X-User": f"v6-{name}", **spoof}, peer="2001:db8::77")
    # behind a trusted proxy, the right-most untrusted hop is the client, not the left-most
    chain = {"X-Forwarded-For": "6.6.6.6, 198.51.100.9, 10.0.0.2"}
    site.request(headers={"X-User": "proxied", **chain}, peer="10.0.0.1")
    assert get_sender(app_id, collector.url).flush(timeout=5) is True

    profiles = {p["user_id"]: p.get("ip_address") for p in collector.list_users(app_id)}
    for name in SPOOFS:
        assert profiles[f"spoof-{name}"] == PUBLIC_PEER, name
        assert profiles[f"v6-{name}"] == "2001:db8::77", name
    assert profiles["proxied"] == "198.51.100.9"


def test_an_empty_trusted_proxy_list_trusts_not_even_loopback(
    collector: CollectorHandle, app_id: str
) -> None:
    site = make_site(
        "wsgi",
        {
            "application_id": app_id,
            "base_url": collector.url,
            "identify_user": user_from_header,
            "trusted_proxies": [],
        },
    )
    site.request(headers={"X-User": "local", "X-Forwarded-For": "198.51.100.9"}, peer="127.0.0.1")
    assert get_sender(app_id, collector.url).flush(timeout=5) is True
    profile = collector.get_user(app_id, "local")
    assert profile is not None
    assert profile["ip_address"] == "127.0.0.1"


# --- nothing private leaves the app -----------------------------------------------------------

MARKERS = {
    "password": "PASSWORD-MARK-7f3a",
    "cookie": "COOKIE-MARK-91bc",
    "body": "BODY-MARK-c0de",
    "header": "HEADER-MARK-5e11",
    "query": "QUERY-MARK-aa12",
    "response": "APP-SET-COOKIE-VALUE",  # set by every hardening app in its response
}
METADATA = {"email": "ada@example.com", "plan": {"tier": "pro", "seats": [1, 2.5, None, True]}}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("kind", KINDS)
def test_only_identity_fields_and_the_hooks_metadata_are_sent(
    kind: str, collector: CollectorHandle, app_id: str
) -> None:
    with FaultServer(forward_to=collector.url) as faults:
        site: Site = make_site(
            kind,
            {
                "application_id": app_id,
                "base_url": faults.url,
                "identify_user": user_from_header,
                "get_metadata": lambda request, response: METADATA,
            },
        )
        private = {
            "Cookie": f"session={MARKERS['cookie']}; other=1",
            "X-Internal-Secret": MARKERS["header"],
            "Content-Type": "application/json",
        }
        body = f'{{"password": "{MARKERS["body"]}"}}'.encode()
        query = f"/echo?password={MARKERS['query']}&utm_source=ads"
        password = MARKERS["password"]
        requests = {
            "basic-only": {"Authorization": basic("ada", password)},
            "basic-lower": {"Authorization": basic("ada", password).lower()},
            "basic-and-key": {"Authorization": basic("ada", password), "X-Api-Key": "key-1"},
            "digest": {"Authorization": f'Digest username="ada", response="{password}"'},
            "bearer": {"Authorization": "Bearer tok-1"},
        }
        for user, extra in requests.items():
            site.request(
                query, method="POST", headers={"X-User": user, **private, **extra}, body=body
            )
        assert get_sender(app_id, faults.url).flush(timeout=5) is True

        raw = b"".join(request.body for request in faults.received)
        records = faults.accepted_records()
        assert not [r for r in faults.received if "cookie" in r.headers]
    for marker in MARKERS.values():
        assert marker.encode() not in raw
    assert base64.b64encode(f"ada:{password}".encode()) not in raw
    assert {record["user_id"] for record in records} == set(requests)
    for record in records:
        assert set(record) <= ALLOWED_FIELDS
        assert record["metadata"] == METADATA  # exactly what the hook returned
        assert record["campaign"] == {"utm_source": "ads"}
        assert record["ip_address"] == PUBLIC_PEER

    profiles = {p["user_id"]: p for p in collector.list_users(app_id)}
    tokens = {user: profile["session_tokens"] for user, profile in profiles.items()}
    assert tokens == {
        "basic-only": [],
        "basic-lower": [],
        "basic-and-key": ["key-1"],
        "digest": [],
        "bearer": ["tok-1"],
    }


# --- the collector: bound to loopback, warns otherwise, escapes its HTML ---------------------------


def test_the_collector_binds_loopback_by_default() -> None:
    assert inspect.signature(collector_module.serve).parameters["host"].default == "127.0.0.1"
    args = build_parser().parse_args(["collector"])
    assert args.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("host", "warns"),
    [
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.10", True),
        ("203.0.113.7", True),
        ("example.com", True),
        ("127.0.0.1.nip.io", True),
        ("localhost.example.com", True),
        ("::ffff:203.0.113.7", True),
        ("127.0.0.1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback, the same answer on every Python
        ("127.1.2.3", False),
        ("::1", False),
        ("[::1]", False),
        ("localhost", False),
        ("LOCALHOST", False),
    ],
)
def test_the_collector_warns_when_not_bound_to_loopback(
    host: str,
    warns: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    import uvicorn  # the tests never listen beyond loopback: uvicorn.run only records

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    caplog.set_level(logging.WARNING, logger="moesif_users_middleware.collector")

    from moesif_users_middleware.cli import main

    assert main(["collector", "--host", host, "--port", "9", "--db", str(tmp_path / "c.db")]) == 0

    assert [call["host"] for call in calls] == [host]
    warned = [r for r in caplog.records if "non-loopback" in r.getMessage()]
    assert bool(warned) is warns
    assert ("non-loopback" in capsys.readouterr().err) is warns


@settings(max_examples=200, deadline=None)
@given(host=st.text(max_size=40) | st.ip_addresses().map(str))
def test_only_loopback_hosts_count_as_loopback(host: str) -> None:
    verdict = collector_module.is_loopback_host(host)
    assert isinstance(verdict, bool)
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        assert verdict is True
        return
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        assert verdict is False  # any other name may resolve anywhere: warn
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # decided explicitly: Python 3.13 changed the answer
        assert verdict == address.is_loopback


text_values = st.text(
    alphabet=st.sampled_from(list("<>&\"'/=x ü\n")) | st.characters(), max_size=30
)


@settings(max_examples=150, deadline=None)
@given(
    values=st.fixed_dictionaries(
        {
            "partition": text_values,
            "user_id": text_values,
            "company_id": text_values,
            "ip_address": text_values,
            "user_agent_string": text_values,
            "modified_time": text_values,
            "campaign_key": text_values,
            "campaign_value": text_values,
            "meta_key": text_values,
            "meta_value": text_values,
            "prefix": text_values,
        }
    )
)
def test_the_page_escapes_every_value_it_renders(values: dict[str, str]) -> None:
    def page(v: dict[str, str]) -> str:
        profile = {
            "user_id": v["user_id"],
            "company_id": v["company_id"],
            "ip_address": v["ip_address"],
            "user_agent_string": v["user_agent_string"],
            "modified_time": v["modified_time"],
            "campaign": {v["campaign_key"]: v["campaign_value"]},
            "metadata": {v["meta_key"]: [v["meta_value"], {"k": v["meta_value"]}]},
            "session_tokens": [v["user_id"]],
        }
        view = ListView([(v["partition"], profile)], 1, 1, 1, 10, v["prefix"], v["partition"])
        history = [
            {
                "applied_time": v["modified_time"],
                "modified_time": v["modified_time"],
                "changes": {
                    v["meta_key"]: [v["meta_value"], {"k": v["meta_value"]}],
                    "session_token": v["user_id"],
                },
            }
        ]
        user = render_user(v["user_id"], [(v["partition"], profile, history)])
        # Whether metadata folds into <details> depends on its length, not on markup.
        return re.sub(r"</?(details|summary|pre)>", "", render_page(view) + user)

    html = page(values)
    blank = page({key: "x" if value else "" for key, value in values.items()})
    for char in "<>":  # markup comes from the template only
        assert html.count(char) == blank.count(char)
    assert f">{escape(values['user_id'], quote=True)}</a></td>" in html
