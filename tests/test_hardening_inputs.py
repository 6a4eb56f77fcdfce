"""Bad input, property-based: hostile hook results, any header bytes, adversarial bodies.

- Hooks returning anything (or raising anything) through real WSGI, Flask and Starlette
  apps: the response is exactly the app's own, the failure is counted, and whatever
  was recorded is accepted by the collector.
- Header and query bytes of any kind through ``ScopeView``/``EnvironView`` and capture,
  delivered to the collector: no exception, a valid IP or none, never a spoofed one.
- The collector: a request it rejects never changes a stored profile.
"""

from __future__ import annotations

import base64
import functools
import gzip
import ipaddress
import itertools
import json
import math
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest

pytest.importorskip("flask")  # hardening_apps builds Flask and Starlette apps
pytest.importorskip("starlette")

from hardening_apps import KINDS, PUBLIC_PEER, Answer, Site, make_site
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import APP_ID_HEADER, CollectorHandle

from moesif_users_middleware._capture.config import HOOK_OPTIONS, build_config
from moesif_users_middleware._capture.pipeline import MAX_METADATA_LENGTH, Capture, capture_stats
from moesif_users_middleware._capture.request_view import EnvironView, ScopeView
from moesif_users_middleware._capture.session_token import MAX_TOKEN_LENGTH
from moesif_users_middleware.models import ValidationError
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender

ERRORS = ("hook_errors", "invalid", "internal_errors")
SITE_KINDS = (*KINDS, "starlette-async")
_ids = itertools.count()


def error_count() -> int:
    stats = capture_stats()
    return sum(stats[name] for name in ERRORS)


# --- hostile values ----------------------------------------------------------------------


class Boom(Exception):
    """An exception whose message cannot even be rendered."""

    def __str__(self) -> str:
        raise RuntimeError("str of the exception raised")

    def __repr__(self) -> str:
        raise RuntimeError("repr of the exception raised")


def _raise(*args: object, **kwargs: object) -> NoReturn:
    raise RuntimeError("hostile dunder")


class Opaque:
    """Not a string, number or mapping, and every protocol it has raises."""

    __str__ = __repr__ = __bool__ = __len__ = __iter__ = __eq__ = __hash__ = _raise


class HostileStr(str):
    __str__ = __eq__ = __hash__ = __len__ = __iter__ = __bool__ = _raise


class HostileInt(int):
    __int__ = __index__ = __str__ = __repr__ = __eq__ = __hash__ = __bool__ = _raise


class HostileDict(dict[str, Any]):
    items = keys = values = get = __iter__ = __len__ = __eq__ = __getitem__ = _raise


class HostileMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        _raise()

    def __iter__(self) -> Iterator[str]:
        _raise()

    def __len__(self) -> int:
        _raise()

    keys = items = values = get = __eq__ = _raise


def self_referencing() -> dict[str, Any]:
    loop: dict[str, Any] = {"a": 1}
    loop["loop"] = loop
    return loop


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


@dataclass(frozen=True)
class Behaviour:
    """What a hook does: return ``make()``'s value, or raise it when it is an exception."""

    name: str
    make: Callable[[], Any]

    def __call__(self, request: Any, response: Any) -> Any:
        value = self.make()
        if isinstance(value, BaseException):
            raise value
        return value

    def __repr__(self) -> str:
        return self.name


def returns(name: str, make: Callable[[], Any]) -> Behaviour:
    return Behaviour(name, make)


async def _coroutine_of_opaque() -> Any:
    return Opaque()


# Wrong for every hook (skip included: their truth value raises, or the hook raises).
# Lone surrogates, and metadata ints over 4300 digits, are left out of these pools: they
# are not caught today (see the xfail tests below).
UNIVERSAL = [
    returns("raises ValueError", lambda: ValueError("hook failed")),
    returns("raises an exception whose str raises", Boom),
    returns("coroutine", _coroutine_of_opaque),
    returns("Opaque()", Opaque),
    returns("HostileDict()", HostileDict),
    returns("HostileMapping()", HostileMapping),
    returns("HostileInt(7)", lambda: HostileInt(7)),
]
HOSTILE: dict[str, list[Behaviour]] = {
    "skip": UNIVERSAL,
    "id": [
        *UNIVERSAL,
        returns("bytes", lambda: b"user"),
        returns("float", lambda: 1.5),
        returns("nan", lambda: math.nan),
        returns("True", lambda: True),
        returns("list", lambda: ["u"]),
        returns("dict", lambda: {"user_id": "u"}),
        returns("10**5000", lambda: 10**5000),
        returns("huge str", lambda: "u" * (MAX_TOKEN_LENGTH + 1)),
    ],
    "metadata": [
        *UNIVERSAL,
        returns("list", lambda: [1, 2]),
        returns("str", lambda: "meta"),
        returns("int", lambda: 5),
        returns("int key", lambda: {1: "a"}),
        returns("set value", lambda: {"a": {1, 2}}),
        returns("nan value", lambda: {"a": math.nan}),
        returns("inf in list", lambda: {"a": [1, -math.inf]}),
        returns("bytes value", lambda: {"a": b"x"}),
        returns("object value", lambda: {"a": object()}),
        returns("Opaque value", lambda: {"a": Opaque()}),
        returns("unhashable key (building it raises)", lambda: {HostileStr("k"): 1}),
        returns("nested 40 deep", lambda: nested(40)),
        returns("self-referencing", self_referencing),
        returns("oversize", lambda: {"k": "x" * (MAX_METADATA_LENGTH + 10)}),
    ],
    "campaign": [
        *UNIVERSAL,
        returns("str", lambda: "utm_source=x"),
        returns("unknown field", lambda: {"utm_bogus": "x"}),
        returns("int value", lambda: {"utm_source": 5}),
        returns("oversize value", lambda: {"utm_source": "x" * 5000}),
    ],
}
# Accepted as they are (or coerced): these must record and count no error.
VALID: dict[str, list[Behaviour]] = {
    "skip": [returns("None", lambda: None), returns("False", lambda: False)],
    "id": [
        returns("None", lambda: None),
        returns("str", lambda: "acme"),
        returns("int", lambda: 42),
        returns("uuid", lambda: uuid.UUID(int=7)),
        returns("HostileStr", lambda: HostileStr("coerced")),
    ],
    "metadata": [
        returns("None", lambda: None),
        returns("plain", lambda: {"email": "a@example.com", "n": [1, 2.5, None, True]}),
        returns("deep but fine", lambda: nested(20)),
        returns("big int", lambda: {"big": 10**40}),
        returns("unicode", lambda: {"ü": "😀", "": ""}),
        returns("int subclass", lambda: {"a": HostileInt(3)}),  # valid JSON: sent as 3
    ],
    "campaign": [
        returns("None", lambda: None),
        returns("utm", lambda: {"utm_source": "ads", "utm_medium": None}),
    ],
}
KIND_OF_HOOK = {
    "skip": "skip",
    "identify_company": "id",
    "get_session_token": "id",
    "get_metadata": "metadata",
    "get_campaign": "campaign",
    "get_company_domain": "id",
    "get_company_metadata": "metadata",
}


@st.composite
def hook_plans(draw: st.DrawFn) -> dict[str, tuple[Behaviour, bool]]:
    """For each hook: a behaviour and whether it is hostile."""
    plan: dict[str, tuple[Behaviour, bool]] = {}
    for hook, kind in KIND_OF_HOOK.items():
        hostile = draw(st.booleans())
        pool = HOSTILE[kind] if hostile else VALID[kind]
        plan[hook] = (draw(st.sampled_from(pool)), hostile)
    if draw(st.booleans()):  # the user id itself: sometimes broken too
        plan["identify_user"] = (draw(st.sampled_from(HOSTILE["id"])), True)
    return plan


COMPANY_HOOKS = ("get_company_domain", "get_company_metadata")


def runs(hook: str, plan: dict[str, tuple[Behaviour, bool]]) -> bool:
    """Whether ``hook`` is called: the company hooks only for a company id."""
    if hook not in COMPANY_HOOKS:
        return True
    company, hostile = plan["identify_company"]
    return not hostile and company(None, None) is not None


class HookBox:
    """Hooks that do whatever the current plan says (set per example)."""

    def __init__(self) -> None:
        self.plan: dict[str, Behaviour] = {}
        self.user = ""

    def hook(self, name: str) -> Callable[[Any, Any], Any]:
        def call(request: Any, response: Any) -> Any:
            behaviour = self.plan.get(name)
            if behaviour is None:  # identify_user when the plan leaves it valid
                return self.user
            return behaviour(request, response)

        return call

    def async_hook(self, name: str) -> Callable[[Any, Any], Any]:
        sync = self.hook(name)

        async def call(request: Any, response: Any) -> Any:
            return sync(request, response)

        return call


@dataclass
class Sites:
    box: HookBox
    app_id: str
    url: str
    sites: dict[str, Site]
    bare: dict[str, Answer]


@pytest.fixture(scope="module")
def hostile_sites(collector: CollectorHandle) -> Iterator[Sites]:
    box = HookBox()
    app_id = "hostile-" + uuid.uuid4().hex
    sites: dict[str, Site] = {}
    bare: dict[str, Answer] = {}
    for kind in SITE_KINDS:
        hooks: dict[str, Any] = {name: box.hook(name) for name in HOOK_OPTIONS}
        if kind == "starlette-async":
            hooks["identify_user"] = box.async_hook("identify_user")
        options = {"application_id": app_id, "base_url": collector.url, **hooks}
        options["flush_interval"] = 3600.0
        base_kind = kind.removesuffix("-async")
        sites[kind] = make_site(base_kind, options)
        bare[kind] = make_site(base_kind, None).request(method="POST", body=b"payload")
    yield Sites(box, app_id, collector.url, sites, bare)
    _reset_senders_for_tests()


# A coroutine left by one hook is not closed when another hook's value makes capture fail
# internally; its "never awaited" warning is expected noise here.
@pytest.mark.filterwarnings("ignore:coroutine '_coroutine_of_opaque' was never awaited")
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kind=st.sampled_from(SITE_KINDS), plan=hook_plans())
def test_hostile_hook_results_never_touch_the_response_and_are_counted(
    hostile_sites: Sites, kind: str, plan: dict[str, tuple[Behaviour, bool]]
) -> None:
    box = hostile_sites.box
    box.plan = {name: behaviour for name, (behaviour, _) in plan.items()}
    box.user = f"{kind}-{next(_ids)}"
    sender = get_sender(hostile_sites.app_id, hostile_sites.url)
    errors_before = error_count()
    captured_before = capture_stats()["captured"]
    failed_before = sender.stats()["failed"]

    answer = hostile_sites.sites[kind].request(method="POST", body=b"payload")

    assert answer == hostile_sites.bare[kind]  # status, headers and body: the app's own
    hostile = any(is_hostile for hook, (_, is_hostile) in plan.items() if runs(hook, plan))
    if hostile:
        assert error_count() > errors_before
    else:
        assert error_count() == errors_before
        assert capture_stats()["captured"] == captured_before + 1
    # whatever was recorded is something the Users API accepts
    assert sender.flush(timeout=10) is True
    assert sender.stats()["failed"] == failed_before


# --- bugs found with hostile values (the suite stays green; remove xfail once fixed) ----------


@pytest.fixture
def capture_for(collector: CollectorHandle, app_id: str) -> Iterator[Callable[..., Capture]]:
    def make(**hooks: Any) -> Capture:
        options = {"application_id": app_id, "base_url": collector.url, "flush_interval": 3600}
        config, _ = build_config({**options, **hooks})
        return Capture(config)

    yield make
    _reset_senders_for_tests()


def plain_view(user: str | None = None) -> EnvironView:
    environ = {"REMOTE_ADDR": PUBLIC_PEER}
    return EnvironView(environ, None, None, auth_user=lambda: user)


def test_a_lone_surrogate_never_costs_other_users_their_updates(
    capture_for: Callable[..., Capture], collector: CollectorHandle, app_id: str
) -> None:
    capture = capture_for(
        identify_user=lambda request, response: request,
        get_metadata=lambda request, response: {"note": "x\udc80y"} if request == "b" else None,
    )
    sender = capture.sender
    sender.queue_user({"user_id": "before"})
    for user in ("a", "bad\ud800", "b", "c"):
        capture.capture(EnvironView({"REMOTE_ADDR": PUBLIC_PEER}, user, None))
    sender.flush(timeout=5)
    stored = {p["user_id"] for p in collector.list_users(app_id)}
    assert {"before", "a", "c"} <= stored


def test_queue_user_rejects_an_unserializable_int(collector: CollectorHandle, app_id: str) -> None:
    sender = get_sender(app_id, collector.url, flush_interval=3600)
    try:
        with pytest.raises(ValidationError, match="metadata"):
            sender.queue_user({"user_id": "u", "metadata": {"n": 10**5000}})
    finally:
        _reset_senders_for_tests()


def test_metadata_with_an_unserializable_int_costs_only_the_metadata(
    capture_for: Callable[..., Capture], collector: CollectorHandle, app_id: str
) -> None:
    capture = capture_for(
        identify_user=lambda request, response: "u",
        get_metadata=lambda request, response: {"n": 10**5000},
    )
    invalid = capture_stats()["invalid"]
    capture.capture(plain_view())
    capture.sender.flush(timeout=5)
    assert capture_stats()["invalid"] == invalid + 1
    assert collector.get_user(app_id, "u") is not None


@pytest.mark.parametrize("value", [10**5000, HostileInt(3)], ids=["10**5000", "HostileInt"])
def test_a_broken_company_id_costs_only_the_company(
    capture_for: Callable[..., Capture], collector: CollectorHandle, app_id: str, value: Any
) -> None:
    capture = capture_for(
        identify_user=lambda request, response: "u",
        identify_company=lambda request, response: value,
    )
    before = capture_stats()
    capture.capture(plain_view())
    after = capture_stats()
    assert after["internal_errors"] == before["internal_errors"]
    assert after["hook_errors"] == before["hook_errors"] + 1
    capture.sender.flush(timeout=5)
    assert collector.get_user(app_id, "u") is not None


class RaisingEqStr(str):
    """A str subclass (valid JSON) that cannot be compared."""

    __eq__ = _raise
    __hash__ = str.__hash__


def test_an_uncomparable_metadata_value_is_never_lost_silently(
    capture_for: Callable[..., Capture],
) -> None:
    capture = capture_for(
        identify_user=lambda request, response: "u",
        get_metadata=lambda request, response: {"k": RaisingEqStr("v")},
    )
    assert capture.capture(plain_view())
    errors = error_count()
    recorded = capture.capture(plain_view())
    assert recorded or error_count() > errors


# --- any header bytes, end to end --------------------------------------------------------

PEERS = [PUBLIC_PEER, "127.0.0.1", "10.1.2.3", "2001:db8::1", "::1", "not-an-ip", "", None]
TRUSTED = {"127.0.0.1", "10.1.2.3", "::1"}
header_bytes = st.binary(max_size=60) | st.sampled_from(
    [b"198.51.100.9", b"for=198.51.100.9", b"1.1.1.1, 198.51.100.9", b"unknown", b"\xff\xfe"]
)
authorizations = (
    st.binary(max_size=40)
    | st.builds(lambda token: b"Bearer " + token, st.binary(min_size=1, max_size=30))
    | st.builds(
        lambda scheme, secret: scheme + b" " + base64.b64encode(secret),
        st.sampled_from([b"Basic", b"basic", b"BASIC", b"Digest", b"NTLM", b"Negotiate"]),
        st.binary(min_size=1, max_size=30),
    )
)
queries = st.binary(max_size=60) | st.builds(
    lambda a, b: b"utm_source=" + a + b"&gclid=" + b,
    st.binary(max_size=30),
    st.binary(max_size=30),
)


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[str | None, dict[str, bytes], bytes]:
    headers = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "user-agent": header_bytes,
                "referer": header_bytes,
                "host": header_bytes,
                "x-forwarded-for": header_bytes,
                "forwarded": header_bytes,
                "x-real-ip": header_bytes,
                "authorization": authorizations,
                "x-api-key": header_bytes,
                "cookie": header_bytes,
            },
        )
    )
    return draw(st.sampled_from(PEERS)), headers, draw(queries)


def decoded(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def is_ignored_scheme(raw: bytes) -> bool:
    scheme = raw.split(None, 1)[0].lower() if raw.split() else b""
    return scheme in (b"basic", b"digest", b"ntlm", b"negotiate")


@pytest.fixture(scope="module")
def header_capture(collector: CollectorHandle) -> Iterator[tuple[Capture, str]]:
    app_id = "headers-" + uuid.uuid4().hex
    options = {"application_id": app_id, "base_url": collector.url, "flush_interval": 3600}
    config, _ = build_config({**options, "identify_user": lambda request, response: request})
    yield Capture(config), app_id
    _reset_senders_for_tests()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=raw_requests(), wsgi=st.booleans())
def test_any_header_bytes_are_captured_safely_and_accepted_by_the_api(
    header_capture: tuple[Capture, str],
    collector: CollectorHandle,
    raw: tuple[str | None, dict[str, bytes], bytes],
    wsgi: bool,
) -> None:
    capture, app_id = header_capture
    peer, headers, query = raw
    user = f"hdr-{next(_ids)}"
    if wsgi:  # PEP 3333: header bytes arrive as Latin-1 strings
        environ: dict[str, Any] = {"QUERY_STRING": query.decode("latin-1")}
        if peer is not None:
            environ["REMOTE_ADDR"] = peer
        for name, value in headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value.decode("latin-1")
        view: EnvironView | ScopeView = EnvironView(environ, user, None)
    else:
        pairs = [(name.encode(), value) for name, value in headers.items()]
        scope = {"headers": pairs, "query_string": query, "client": (peer, 1)}
        view = ScopeView(scope, user, None)
    internal = capture_stats()["internal_errors"]

    assert capture.capture(view) is True
    assert capture_stats()["internal_errors"] == internal
    assert capture.sender.flush(timeout=10) is True  # the API accepted what was captured
    profile = collector.get_user(app_id, user)
    assert profile is not None

    ip = profile.get("ip_address")
    assert ip is None or str(ipaddress.ip_address(ip)) == ip
    if peer not in TRUSTED and peer:
        # an untrusted peer is the client, whatever the forwarding headers claim
        assert ip == (str(ipaddress.ip_address(peer)) if peer != "not-an-ip" else None)
    agent = decoded(headers.get("user-agent", b""))
    assert profile.get("user_agent_string") == (agent[:512] if agent else None)
    for value in (profile.get("campaign") or {}).values():
        assert isinstance(value, str)
    stored = json.dumps(profile, ensure_ascii=False)
    authorization = headers.get("authorization", b"")
    if is_ignored_scheme(authorization):  # a Basic/Digest credential is never a token
        parts = authorization.split(None, 1)
        if len(parts) == 2:
            assert_not_leaked(parts[1].decode("latin-1"), "authorization", headers, query, stored)
        api_key = decoded(headers.get("x-api-key", b"")).strip()
        assert profile["session_tokens"] == ([api_key] if api_key else [])
    assert_not_leaked(decoded(headers.get("cookie", b"")), "cookie", headers, query, stored)


def assert_not_leaked(
    secret: str, source: str, headers: dict[str, bytes], query: bytes, stored: str
) -> None:
    """``secret`` (from header ``source``) is absent from ``stored``, unless sent elsewhere too."""
    secret = secret.strip()
    if len(secret) < 4:
        return
    elsewhere = [decoded(v) for k, v in headers.items() if k != source] + [decoded(query)]
    if any(secret in text for text in elsewhere) or secret in "hdr-0123456789":
        return
    assert secret not in stored


# --- the collector: a rejected request never changes a stored profile -------------------------

VICTIM = {"user_id": "victim", "session_token": "t0", "metadata": {"keep": {"me": 1}}}


def _body(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


update = json.dumps({"user_id": "victim", "session_token": "t-new", "metadata": {"keep": 2}})
BAD_BODIES: dict[str, tuple[bytes, str | None]] = {
    "batch-valid-then-missing-id": (_body(f'[{update}, {{"company_id": "c"}}]'), None),
    "batch-valid-then-nan": (_body(f'[{update}, {{"user_id": "v", "metadata": {{"a": NaN}}}}]'), None),
    "batch-valid-then-1e999": (_body(f'[{update}, {{"user_id": "v", "metadata": {{"a": 1e999}}}}]'), None),
    "batch-valid-then-surrogate": (_body(f'[{update}, {{"user_id": "\\ud800"}}]'), None),
    "batch-valid-then-deep": (_body(f'[{update}, {{"user_id": "v", "metadata": {json.dumps(nested(40))}}}]'), None),
    "batch-valid-then-unknown-field": (_body(f'[{update}, {{"user_id": "v", "nick": 1}}]'), None),
    "duplicate-key-last-invalid": (_body('{"user_id": "victim", "metadata": {"a": 1}, "metadata": 5}'), None),
    "huge-int": (_body('{"user_id": "victim", "metadata": {"n": ' + "9" * 5000 + "}}"), None),
    "invalid-utf8": (b'{"user_id": "victim", "metadata": {"a": "\xff\xfe"}}', None),
    "truncated-gzip": (gzip.compress(_body(update))[:-8], "gzip"),
    "gzip-then-junk": (gzip.compress(_body(update)) + b"junk", "gzip"),
    "bracket-bomb": (b"[" * 100_000, None),
}  # fmt: skip


@pytest.fixture(scope="module")
def victim(collector: CollectorHandle) -> tuple[str, dict[str, Any]]:
    app_id = "victim-" + uuid.uuid4().hex
    response = collector.client.post("/v1/users", json=VICTIM, headers={APP_ID_HEADER: app_id})
    assert response.status_code == 201
    stored = collector.get_user(app_id, "victim")
    assert stored is not None
    return app_id, stored


@functools.cache
def gzip_bomb(megabytes: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    return b"".join(packer.compress(zeros) for _ in range(megabytes)) + packer.flush()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from([*BAD_BODIES, "gzip-bomb"]),
    batch=st.booleans(),
    repeat=st.integers(1, 3),
)
def test_rejected_requests_never_change_a_stored_profile(
    collector: CollectorHandle,
    victim: tuple[str, dict[str, Any]],
    name: str,
    batch: bool,
    repeat: int,
) -> None:
    app_id, stored = victim
    encoding: str | None
    if name == "gzip-bomb":
        body, encoding = gzip_bomb(11), "gzip"
    else:
        body, encoding = BAD_BODIES[name]
    headers = {APP_ID_HEADER: app_id}
    if encoding:
        headers["Content-Encoding"] = encoding
    records = collector.stats(app_id)["records"]
    for _ in range(repeat):
        path = "/v1/users/batch" if batch or body.startswith(b"[") else "/v1/users"
        response = collector.client.post(path, content=body, headers=headers)
        assert response.status_code in (400, 413), (name, response.status_code, response.text)
        assert response.headers["content-type"] == "application/json"
        assert isinstance(response.json()["message"], str)
    assert collector.get_user(app_id, "victim") == stored  # modified_time included
    assert collector.stats(app_id)["records"] == records
    assert collector.get_user(app_id, "v") is None
