"""The capture pipeline end to end: a view -> Capture -> the real sender -> the real collector."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import threading
import uuid
import warnings
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from moesif_users_middleware._capture.config import build_config
from moesif_users_middleware._capture.pipeline import MAX_METADATA_LENGTH, Capture, capture_stats
from moesif_users_middleware._capture.request_view import EnvironView, ScopeView, SnapshotSpec
from moesif_users_middleware.models import Campaign

PUBLIC_PEER = "203.0.113.5"
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"


class Request:
    """Stands in for a framework's request object: hooks read what they need from it."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)

    def __getattr__(self, name: str) -> Any:  # typing: any attribute may be set
        raise AttributeError(name)


def view(
    *,
    user: Any = None,
    headers: dict[str, str] | None = None,
    query: str = "",
    peer: str | None = PUBLIC_PEER,
    request: Any = None,
    response: Any = None,
) -> EnvironView:
    """A WSGI-style view; ``user`` is what the framework reports as authenticated."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": query}
    if peer is not None:
        environ["REMOTE_ADDR"] = peer
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return EnvironView(environ, request, response, auth_user=lambda: user)


Make = Callable[..., Capture]


@pytest.fixture
def delivered(collector: Any, app_id: str) -> Callable[[Capture, str], dict[str, Any] | None]:
    def get(capture: Capture, user_id: str) -> dict[str, Any] | None:
        capture.sender.flush(timeout=10)
        profile: dict[str, Any] | None = collector.get_user(app_id, user_id)
        return profile

    return get


def nothing_stored(capture: Capture, collector: Any, app_id: str) -> bool:
    capture.sender.flush(timeout=10)
    users: list[Any] = collector.list_users(app_id)
    return users == []


class Delta:
    """Counter changes since construction (the counters are process-wide)."""

    def __init__(self) -> None:
        self.before = capture_stats()

    def __getitem__(self, name: str) -> int:
        return capture_stats()[name] - self.before[name]


def make_jwt(payload: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{body}.c2ln"


# -- defaults, with zero hooks ----------------------------------------------------------


def test_defaults_record_a_full_profile(make: Make, delivered: Any) -> None:
    capture = make()
    counts = Delta()
    assert capture.capture(
        view(
            user=Request(pk=41, is_authenticated=True),
            headers={
                "Authorization": "Bearer tok-abc",
                "User-Agent": UA,
                "Referer": "https://news.example.org/post/1",
                "Host": "api.example.com",
            },
            query="utm_source=newsletter&utm_medium=email&gclid=G-1&page=2",
        )
    )
    assert counts["captured"] == 1
    profile = delivered(capture, "41")
    assert profile is not None
    assert profile["user_id"] == "41"
    assert profile["session_tokens"] == ["tok-abc"]
    assert profile["ip_address"] == PUBLIC_PEER
    assert profile["user_agent_string"] == UA
    assert profile["campaign"] == {
        "utm_source": "newsletter",
        "utm_medium": "email",
        "gclid": "G-1",
        "referrer": "https://news.example.org/post/1",
        "referring_domain": "news.example.org",
    }
    assert "company_id" not in profile or profile["company_id"] is None
    assert not profile.get("metadata")


def test_anonymous_requests_record_nothing(make: Make, collector: Any, app_id: str) -> None:
    capture = make()
    counts = Delta()
    anonymous_user = Request(pk=None, is_authenticated=False)
    assert not capture.capture(view(user=anonymous_user, headers={"User-Agent": UA}))
    assert not capture.capture(view(user=None, headers={"Authorization": "Bearer t"}))
    assert counts["anonymous"] == 2
    assert counts["captured"] == 0
    assert nothing_stored(capture, collector, app_id)


def test_x_api_key_is_the_session_token_without_bearer(make: Make, delivered: Any) -> None:
    capture = make()
    capture.capture(view(user="u-key", headers={"X-Api-Key": " key-123 "}))
    assert delivered(capture, "u-key")["session_tokens"] == ["key-123"]


def test_basic_credentials_are_never_sent(make: Make, delivered: Any, collector: Any) -> None:
    capture = make()
    secret = base64.b64encode(b"alice:hunter2-password").decode()
    capture.capture(view(user="u-basic", headers={"Authorization": f"Basic {secret}"}))
    profile = delivered(capture, "u-basic")
    assert profile is not None
    assert profile["session_tokens"] == []
    assert secret not in json.dumps(profile)
    # With an API key beside it, the key is the token and the Basic credential still is not.
    capture.capture(
        view(user="u-basic", headers={"Authorization": f"Basic {secret}", "X-Api-Key": "k-2"})
    )
    profile = delivered(capture, "u-basic")
    assert profile["session_tokens"] == ["k-2"]
    assert secret not in json.dumps(profile)


def test_other_schemes_give_their_credential(make: Make, delivered: Any) -> None:
    capture = make()
    capture.capture(view(user="u-drf", headers={"Authorization": "Token drf-abc"}))
    assert delivered(capture, "u-drf")["session_tokens"] == ["drf-abc"]


def test_session_token_headers_are_configurable(make: Make, delivered: Any) -> None:
    capture = make(session_token_headers=["X-Auth-Token", "X-Api-Key"])
    capture.capture(view(user="u-hdr", headers={"X-Api-Key": "second", "X-Auth-Token": "first"}))
    assert delivered(capture, "u-hdr")["session_tokens"] == ["first"]


def test_user_agent_is_cut(make: Make, delivered: Any) -> None:
    capture = make(max_user_agent_length=20)
    counts = Delta()
    capture.capture(view(user="u-ua", headers={"User-Agent": "x" * 500}))
    assert delivered(capture, "u-ua")["user_agent_string"] == "x" * 20
    assert counts["invalid"] == 1


def test_forwarded_address_from_a_trusted_proxy(make: Make, delivered: Any) -> None:
    capture = make()
    capture.capture(
        view(user="u-xff", peer="10.0.0.2", headers={"X-Forwarded-For": "198.51.100.7, 10.0.0.9"})
    )
    assert delivered(capture, "u-xff")["ip_address"] == "198.51.100.7"
    # From an untrusted peer the header is not believed.
    capture.capture(view(user="u-xff2", headers={"X-Forwarded-For": "198.51.100.7"}))
    assert delivered(capture, "u-xff2")["ip_address"] == PUBLIC_PEER


def test_trusted_proxies_and_client_ip_headers_options(make: Make, delivered: Any) -> None:
    capture = make(trusted_proxies=["203.0.113.0/24"], client_ip_headers=["CF-Connecting-IP"])
    capture.capture(view(user="u-cf", headers={"CF-Connecting-IP": "192.0.2.44"}))
    assert delivered(capture, "u-cf")["ip_address"] == "192.0.2.44"


def test_campaign_can_be_turned_off(make: Make, delivered: Any) -> None:
    capture = make(capture_campaign=False)
    capture.capture(view(user="u-nocamp", query="utm_source=x"))
    assert not delivered(capture, "u-nocamp").get("campaign")


def test_jwt_claim_is_off_by_default(make: Make, collector: Any, app_id: str) -> None:
    capture = make()
    token = make_jwt({"sub": "jwt-user"})
    assert not capture.capture(view(headers={"Authorization": f"Bearer {token}"}))
    assert nothing_stored(capture, collector, app_id)


def test_jwt_claim_gives_the_user_id_when_enabled(make: Make, delivered: Any) -> None:
    capture = make(jwt_user_id_claim="sub")
    token = make_jwt({"sub": "jwt-user", "exp": 1})
    assert capture.capture(view(headers={"Authorization": f"Bearer {token}"}))
    profile = delivered(capture, "jwt-user")
    assert profile["session_tokens"] == [token]
    # The framework's user wins over the token.
    capture.capture(view(user="framework-user", headers={"Authorization": f"Bearer {token}"}))
    assert delivered(capture, "framework-user") is not None


def test_remote_user_is_used_by_plain_wsgi(make: Make, delivered: Any) -> None:
    capture = make()
    environ = {"REMOTE_ADDR": PUBLIC_PEER, "REMOTE_USER": "server-user"}
    assert capture.capture(EnvironView(environ, None, None))
    assert delivered(capture, "server-user") is not None


def test_scope_view_defaults(make: Make, delivered: Any) -> None:
    capture = make()
    scope = {
        "type": "http",
        "path": "/",
        "query_string": b"utm_campaign=spring",
        "client": (PUBLIC_PEER, 1234),
        "headers": [(b"user-agent", UA.encode()), (b"x-api-key", b"scope-key")],
        "user": Request(identity="scope-user", is_authenticated=True),
    }
    assert capture.capture(ScopeView(scope, None, None))
    profile = delivered(capture, "scope-user")
    assert profile["session_tokens"] == ["scope-key"]
    assert profile["user_agent_string"] == UA
    assert profile["campaign"] == {"utm_campaign": "spring"}
    assert profile["ip_address"] == PUBLIC_PEER


# -- hooks ------------------------------------------------------------------------------


def full_hooks() -> dict[str, Any]:
    def identify_user(request: Request, response: Any) -> str:
        return str(request.user_id)

    def identify_company(request: Request, response: Any) -> str:
        return "company-" + str(request.user_id)

    def get_session_token(request: Request, response: Any) -> str:
        return "hook-token"

    def get_metadata(request: Request, response: Any) -> dict[str, Any]:
        return {"email": f"{request.user_id}@example.com", "plan": {"name": "pro", "seats": 3}}

    def get_campaign(request: Request, response: Any) -> Campaign:
        return Campaign(utm_source="partner", referrer="https://partner.example/")

    return {
        "identify_user": identify_user,
        "identify_company": identify_company,
        "get_session_token": get_session_token,
        "get_metadata": get_metadata,
        "get_campaign": get_campaign,
    }


def test_every_hook_is_used(make: Make, delivered: Any) -> None:
    seen: list[Any] = []
    request, response = Request(user_id="h1"), object()

    def skip(req: Any, res: Any) -> bool:
        seen.append((req, res))
        return False

    capture = make(**full_hooks(), skip=skip)
    assert capture.capture(
        view(
            request=request,
            response=response,
            headers={"Authorization": "Bearer ignored", "User-Agent": UA},
            query="utm_source=ignored",
        )
    )
    assert seen == [(request, response)]
    profile = delivered(capture, "h1")
    assert profile["company_id"] == "company-h1"
    assert profile["session_tokens"] == ["hook-token"]
    assert profile["metadata"] == {"email": "h1@example.com", "plan": {"name": "pro", "seats": 3}}
    assert profile["campaign"] == {"utm_source": "partner", "referrer": "https://partner.example/"}
    assert profile["user_agent_string"] == UA
    assert profile["ip_address"] == PUBLIC_PEER


def test_hooks_as_dotted_paths(make: Make, delivered: Any) -> None:
    capture = make(
        identify_user=f"{__name__}:path_identify", get_metadata=f"{__name__}.path_metadata"
    )
    assert capture.capture(view(request=Request(user_id="dotted")))
    assert delivered(capture, "dotted")["metadata"] == {"via": "path"}


def path_identify(request: Request, response: Any) -> str:
    return str(request.user_id)


def path_metadata(request: Any, response: Any) -> dict[str, str]:
    return {"via": "path"}


def test_identify_user_replaces_the_default(make: Make, collector: Any, app_id: str) -> None:
    capture = make(identify_user=lambda req, res: None)
    counts = Delta()
    assert not capture.capture(view(user="framework-user"))
    assert counts["anonymous"] == 1
    assert nothing_stored(capture, collector, app_id)


def test_skip(make: Make, collector: Any, app_id: str) -> None:
    capture = make(skip=lambda req, res: req.path == "/health")
    counts = Delta()
    assert not capture.capture(view(user="u-skip", request=Request(path="/health")))
    assert counts["skipped"] == 1
    assert nothing_stored(capture, collector, app_id)
    assert capture.capture(view(user="u-skip", request=Request(path="/api")))


class Untruthful:
    """A result whose truth value raises."""

    def __bool__(self) -> bool:
        raise RuntimeError("no truth")


async def _async_false() -> bool:
    return False


def _raise_key_error() -> bool:
    raise KeyError("path")


# What a broken skip hook does; each one skips the request (skip fails closed).
BROKEN_SKIPS: dict[str, Callable[[], Any]] = {
    "raises": _raise_key_error,
    "truth raises": Untruthful,
    "coroutine": _async_false,  # an async hook under a synchronous server
}


@pytest.mark.parametrize("failure", list(BROKEN_SKIPS))
def test_a_failing_skip_hook_skips_the_request(
    make: Make, collector: Any, app_id: str, failure: str
) -> None:
    def skip(request: Any, response: Any) -> Any:
        return BROKEN_SKIPS[failure]()

    capture = make(skip=skip)
    counts = Delta()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine is closed, never left unawaited
        assert not capture.capture(view(user="u-skipfail"))
        gc.collect()
    assert (counts["skipped"], counts["hook_errors"], counts["captured"]) == (1, 1, 0)
    assert nothing_stored(capture, collector, app_id)


@pytest.mark.parametrize(
    "failure", ["raises", "async raises", "truth raises", "async truth raises"]
)
def test_a_failing_skip_hook_skips_the_request_in_acapture(
    make: Make, collector: Any, app_id: str, failure: str
) -> None:
    def sync_skip(request: Any, response: Any) -> Any:
        if failure.endswith("truth raises"):
            return Untruthful()
        raise KeyError("path")

    async def async_skip(request: Any, response: Any) -> Any:
        return sync_skip(request, response)

    capture = make(skip=async_skip if failure.startswith("async") else sync_skip)
    counts = Delta()
    assert not asyncio.run(capture.acapture(view(user="u-askipfail")))
    assert (counts["skipped"], counts["hook_errors"], counts["captured"]) == (1, 1, 0)
    assert nothing_stored(capture, collector, app_id)


def test_a_skip_hook_returning_false_or_none_captures(make: Make, delivered: Any) -> None:
    results = iter([False, None])
    capture = make(skip=lambda req, res: next(results))
    counts = Delta()
    assert capture.capture(view(user="u-keep"))
    assert asyncio.run(capture.acapture(view(user="u-keep")))
    assert (counts["skipped"], counts["hook_errors"]) == (0, 0)
    assert delivered(capture, "u-keep") is not None


@pytest.mark.parametrize(
    ("returned", "stored"),
    [
        (42, "42"),
        (uuid.UUID(int=7), str(uuid.UUID(int=7))),
        ("  spaced ", "  spaced "),
    ],
)
def test_user_ids_are_coerced(make: Make, delivered: Any, returned: Any, stored: str) -> None:
    capture = make(identify_user=lambda req, res: returned)
    assert capture.capture(view())
    assert delivered(capture, stored)["user_id"] == stored


@pytest.mark.parametrize(
    ("returned", "counter"),
    [
        (True, "hook_errors"),
        (1.5, "hook_errors"),
        (["u"], "hook_errors"),
        ("", "anonymous"),
        ("   ", "anonymous"),
        ("x" * 1025, "invalid"),
    ],
)
def test_unusable_user_ids_record_nothing(
    make: Make, collector: Any, app_id: str, returned: Any, counter: str
) -> None:
    capture = make(identify_user=lambda req, res: returned)
    counts = Delta()
    assert not capture.capture(view())
    assert counts[counter] == 1
    assert nothing_stored(capture, collector, app_id)


def test_a_raising_identify_user_records_nothing(make: Make, collector: Any, app_id: str) -> None:
    def identify_user(request: Any, response: Any) -> str:
        raise AttributeError("no user on request")

    capture = make(identify_user=identify_user)
    counts = Delta()
    for _ in range(3):
        assert not capture.capture(view(user="ignored"))
    assert counts["hook_errors"] == 3
    assert nothing_stored(capture, collector, app_id)


def test_failing_optional_hooks_lose_only_their_field(make: Make, delivered: Any) -> None:
    def boom(request: Any, response: Any) -> Any:
        raise RuntimeError("broken hook")

    capture = make(
        identify_user=lambda req, res: "u-partial",
        identify_company=boom,
        get_session_token=lambda req, res: ["not", "a", "token"],
        get_metadata=lambda req, res: ["a", "list"],
        get_campaign=lambda req, res: "utm_source=x",
    )
    counts = Delta()
    assert capture.capture(view(headers={"User-Agent": UA, "X-Api-Key": "default-key"}))
    assert counts["hook_errors"] == 4
    profile = delivered(capture, "u-partial")
    assert profile["user_agent_string"] == UA
    assert profile["session_tokens"] == []  # the hook decides; its failure is not replaced
    assert not profile.get("company_id")
    assert not profile.get("metadata")
    assert not profile.get("campaign")


def test_company_id_and_token_coercion(make: Make, delivered: Any) -> None:
    capture = make(
        identify_user=lambda req, res: "u-coerce",
        identify_company=lambda req, res: 900,
        get_session_token=lambda req, res: "  tok-strip  ",
    )
    capture.capture(view())
    profile = delivered(capture, "u-coerce")
    assert profile["company_id"] == "900"
    assert profile["session_tokens"] == ["tok-strip"]


def test_invalid_metadata_is_dropped(make: Make, delivered: Any) -> None:
    capture = make(
        identify_user=lambda req, res: "u-nan", get_metadata=lambda req, res: {"x": float("nan")}
    )
    counts = Delta()
    assert capture.capture(view())
    assert counts["invalid"] == 1
    assert delivered(capture, "u-nan")["user_id"] == "u-nan"
    assert not delivered(capture, "u-nan").get("metadata")


def test_oversize_metadata_is_dropped(make: Make, delivered: Any) -> None:
    big = {"blob": "y" * (MAX_METADATA_LENGTH + 1)}
    capture = make(identify_user=lambda req, res: "u-big", get_metadata=lambda req, res: big)
    counts = Delta()
    assert capture.capture(view())
    assert counts["invalid"] == 1
    profile = delivered(capture, "u-big")
    assert profile is not None
    assert not profile.get("metadata")


def test_large_but_acceptable_metadata_is_kept(make: Make, delivered: Any) -> None:
    # Over the cheap estimate, under the real limit: measured, then kept.
    value = "z" * (MAX_METADATA_LENGTH // 2)
    capture = make(
        identify_user=lambda req, res: "u-large", get_metadata=lambda req, res: {"v": value}
    )
    counts = Delta()
    assert capture.capture(view())
    assert counts["invalid"] == 0
    assert delivered(capture, "u-large")["metadata"] == {"v": value}


def test_hook_metadata_is_never_mutated(make: Make, delivered: Any) -> None:
    inner = MappingProxyType({"deep": 1})
    metadata = {"plain": "v", "proxy": inner, "list": [1, 2]}
    capture = make(identify_user=lambda req, res: "u-mut", get_metadata=lambda req, res: metadata)
    capture.capture(view())
    capture.capture(view())
    assert metadata == {"plain": "v", "proxy": inner, "list": [1, 2]}
    assert metadata["proxy"] is inner
    assert delivered(capture, "u-mut")["metadata"] == {
        "plain": "v",
        "proxy": {"deep": 1},
        "list": [1, 2],
    }


def test_invalid_campaign_from_a_hook_is_dropped(make: Make, delivered: Any) -> None:
    capture = make(
        identify_user=lambda req, res: "u-badcamp",
        get_campaign=lambda req, res: {"utm_source": "x", "not_a_field": "y"},
    )
    counts = Delta()
    assert capture.capture(view(query="utm_source=default"))
    assert counts["invalid"] == 1
    assert not delivered(capture, "u-badcamp").get("campaign")


def test_campaign_dict_from_a_hook(make: Make, delivered: Any) -> None:
    capture = make(
        identify_user=lambda req, res: "u-campdict",
        get_campaign=lambda req, res: {"utm_term": "api", "gclid": None},
    )
    capture.capture(view())
    assert delivered(capture, "u-campdict")["campaign"] == {"utm_term": "api"}


def test_async_hook_on_the_sync_path_is_closed_and_counted(make: Make, delivered: Any) -> None:
    async def get_metadata(request: Any, response: Any) -> dict[str, str]:
        return {"never": "used"}

    capture = make(identify_user=lambda req, res: "u-coro", get_metadata=get_metadata)
    assert capture.has_async_hooks
    counts = Delta()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "coroutine was never awaited" would fail here
        assert capture.capture(view())
        gc.collect()
    assert counts["hook_errors"] == 1
    assert not delivered(capture, "u-coro").get("metadata")


def test_acapture_awaits_async_hooks(make: Make, delivered: Any) -> None:
    async def identify_user(request: Request, response: Any) -> str:
        await asyncio.sleep(0)
        return str(request.user_id)

    async def get_metadata(request: Any, response: Any) -> dict[str, Any]:
        return {"async": True}

    async def skip(request: Any, response: Any) -> bool:
        return False

    capture = make(
        identify_user=identify_user,
        identify_company=lambda req, res: "sync-company",
        get_metadata=get_metadata,
        skip=skip,
    )
    assert capture.has_async_hooks
    assert asyncio.run(capture.acapture(view(request=Request(user_id="u-async"))))
    profile = delivered(capture, "u-async")
    assert profile["company_id"] == "sync-company"
    assert profile["metadata"] == {"async": True}


def test_acapture_handles_failures_like_capture(make: Make, collector: Any, app_id: str) -> None:
    async def identify_user(request: Any, response: Any) -> str:
        raise ValueError("async failure")

    async def skip(request: Any, response: Any) -> bool:
        return True

    counts = Delta()
    assert not asyncio.run(make(identify_user=identify_user).acapture(view()))
    assert counts["hook_errors"] == 1
    assert not asyncio.run(make(skip=skip).acapture(view(user="u")))
    assert counts["skipped"] == 1
    capture = make()
    assert not asyncio.run(capture.acapture(view()))
    assert counts["anonymous"] == 1
    assert nothing_stored(capture, collector, app_id)


def test_acapture_without_async_hooks(make: Make, delivered: Any) -> None:
    capture = make(get_metadata=lambda req, res: {"k": "v"})
    assert not capture.has_async_hooks
    assert asyncio.run(capture.acapture(view(user="u-async-sync")))
    assert delivered(capture, "u-async-sync")["metadata"] == {"k": "v"}


def test_disabled_capture_does_nothing(app_id: str) -> None:
    config, _ = build_config({"enabled": False})
    capture = Capture(config)
    assert not capture.capture(view(user="u"))
    assert not asyncio.run(capture.acapture(view(user="u")))
    assert capture._sender is None


def test_a_broken_view_never_raises(make: Make) -> None:
    class BrokenView(EnvironView):
        def header(self, name: str) -> str | None:
            raise RuntimeError("adapter bug")

        def snapshot(self, spec: SnapshotSpec) -> tuple[Any, ...]:
            raise RuntimeError("adapter bug")

    capture = make()
    counts = Delta()
    broken = BrokenView({"REMOTE_ADDR": PUBLIC_PEER}, None, None, auth_user=lambda: "u-broken")
    assert not capture.capture(broken)
    assert counts["internal_errors"] == 1


def test_a_failing_user_loader_is_counted(make: Make, collector: Any, app_id: str) -> None:
    def load() -> Any:
        raise ConnectionError("database down")

    capture = make()
    counts = Delta()
    assert not capture.capture(EnvironView({"REMOTE_ADDR": PUBLIC_PEER}, None, None, load))
    assert counts["hook_errors"] == 1
    assert counts["anonymous"] == 0
    assert nothing_stored(capture, collector, app_id)


def test_an_oversize_default_user_id_records_nothing(
    make: Make, collector: Any, app_id: str
) -> None:
    capture = make()
    counts = Delta()
    assert not capture.capture(EnvironView({"REMOTE_USER": "r" * 1025}, None, None))
    assert not capture.capture(view(user=Request(pk="p" * 1025, is_authenticated=True)))
    assert counts["invalid"] == 2
    assert counts["anonymous"] == 0
    assert nothing_stored(capture, collector, app_id)


def test_each_request_gets_its_own_campaign(make: Make, delivered: Any) -> None:
    capture = make()
    for _ in range(2):  # the second round is served from the campaign cache
        capture.capture(view(user="u-c1", query="utm_source=one"))
        capture.capture(view(user="u-c2", query="utm_source=two&utm_term=t"))
        capture.capture(
            view(
                user="u-c3",
                headers={"Referer": "https://api.example.com/docs", "Host": "api.example.com"},
            )
        )
    assert delivered(capture, "u-c1")["campaign"] == {"utm_source": "one"}
    assert delivered(capture, "u-c2")["campaign"] == {"utm_source": "two", "utm_term": "t"}
    assert not delivered(capture, "u-c3").get("campaign")  # same-site navigation


def test_concurrent_captures_from_many_threads(make: Make, collector: Any, app_id: str) -> None:
    capture = make(
        identify_company=lambda req, res: "c",
        get_metadata=lambda req, res: {"thread": req.thread},
    )
    counts = Delta()

    def work(thread: int) -> None:
        for i in range(200):
            capture.capture(view(request=Request(thread=thread), user=f"t{thread}-{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts["captured"] == 800
    capture.sender.flush(timeout=20)
    profiles = collector.list_users(app_id)
    assert len(profiles) == 800
    assert {p["metadata"]["thread"] for p in profiles} == {0, 1, 2, 3}


def test_the_sender_is_the_shared_one(make: Make, collector: Any, app_id: str) -> None:
    from moesif_users_middleware.sender import get_sender

    capture = make(batch_size=7)
    assert capture.sender is get_sender(application_id=app_id, base_url=collector.url)
