"""The Django adapter through Django's own test clients, delivering to the real collector.

Every behaviour runs twice: with ``Client`` (WSGI handler, the middleware in sync mode)
and with ``AsyncClient`` (ASGI handler, the middleware in async mode).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import django_settings
import pytest

pytest.importorskip("django")

import django
from servers import CollectorHandle

django_settings.configure()

from django.contrib.auth.models import User  # noqa: E402
from django.http.response import HttpResponseBase  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from django_views import issue_token  # noqa: E402

from moesif_users_middleware._capture.pipeline import Capture, capture_stats  # noqa: E402
from moesif_users_middleware.sender import _reset_senders_for_tests, get_sender  # noqa: E402

HOOKS = "django_views."
PASSWORD = "correct horse battery staple"
# The test views that call ``request.auser()``: Django 4.2 has no such method.
AUSER_VIEWS = ("/awhoami", "/astream")


@pytest.fixture(autouse=True)
def _no_sender_left() -> Iterator[None]:
    yield
    _reset_senders_for_tests()


class PeerAsyncClient(AsyncClient):
    """``AsyncClient`` whose requests come from ``peer`` (the ASGI scope's ``client``)."""

    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer

    async def request(self, **request: Any) -> Any:
        return await super().request(**request, client=[self.peer, 50000])


class Site:
    """The test site with one ``MOESIF_USERS``, driven by ``Client`` or ``AsyncClient``."""

    def __init__(self, mode: str, moesif: dict[str, Any], peer: str | None, **settings: Any):
        self.mode = mode
        self._override = override_settings(MOESIF_USERS=moesif, **settings)
        self._override.enable()
        # A client loads the middleware (reading MOESIF_USERS) on its first request.
        self.client: Client | AsyncClient
        if mode == "sync":
            self.client = Client(REMOTE_ADDR=peer) if peer else Client()
        else:
            self.client = PeerAsyncClient(peer) if peer else AsyncClient()

    def get(self, path: str, **kwargs: Any) -> HttpResponseBase:
        if path in AUSER_VIEWS and django.VERSION < (5, 0):
            pytest.skip("the test view uses request.auser(), new in Django 5.0")
        if isinstance(self.client, AsyncClient):
            response: HttpResponseBase = asyncio.run(self.client.get(path, **kwargs))
        else:
            response = self.client.get(path, **kwargs)
        return response

    def login(self, user: Any) -> None:
        """A real session login (password checked, session cookie set)."""
        if isinstance(self.client, AsyncClient) and django.VERSION >= (5, 0):
            ok = asyncio.run(self.client.alogin(username=user.username, password=PASSWORD))
        else:
            # Django 4.2 has no AsyncClient.alogin(): its sync login() (shared with Client)
            # checks the password the same way and sets the session cookie on this client.
            ok = self.client.login(username=user.username, password=PASSWORD)
        assert ok

    def body(self, response: HttpResponseBase) -> bytes:
        """The full body; a streaming response is consumed the way its client needs."""
        if not response.streaming:
            return bytes(response.content)  # type: ignore[attr-defined]

        async def consume() -> bytes:
            return b"".join([chunk async for chunk in response])  # type: ignore[attr-defined]

        if response.is_async:  # type: ignore[attr-defined]
            return asyncio.run(consume())
        return b"".join(response.streaming_content)  # type: ignore[attr-defined]

    def close(self) -> None:
        self._override.disable()


SiteFactory = Callable[..., Site]


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def site(mode: str, app_id: str, collector: CollectorHandle) -> Iterator[SiteFactory]:
    """``site(peer=None, middleware=None, **MOESIF_USERS)`` -> a configured :class:`Site`."""
    sites: list[Site] = []

    def make(peer: str | None = None, middleware: list[str] | None = None, **moesif: Any) -> Site:
        options = {
            "APPLICATION_ID": app_id,
            "BASE_URL": collector.url,
            "FLUSH_INTERVAL": 0.2,
            **moesif,
        }
        extra = {} if middleware is None else {"MIDDLEWARE": middleware}
        sites.append(Site(mode, options, peer, **extra))
        return sites[-1]

    yield make
    for made in reversed(sites):
        made.close()


def make_user(domain: str = "acme.test") -> User:
    name = "u" + uuid.uuid4().hex[:12]
    user: User = User.objects.create_user(
        username=name, email=f"{name}@{domain}", password=PASSWORD, first_name="Ada"
    )
    return user


def delivered(collector: CollectorHandle, app_id: str, user_id: Any) -> dict[str, Any] | None:
    """Flush what the adapter queued, then read the stored profile."""
    assert get_sender(application_id=app_id, base_url=collector.url).flush(5)
    return collector.get_user(app_id, str(user_id))


def flushed_users(collector: CollectorHandle, app_id: str) -> list[str]:
    assert get_sender(application_id=app_id, base_url=collector.url).flush(5)
    return [profile["user_id"] for profile in collector.list_users(app_id)]


def headers_of(response: HttpResponseBase) -> dict[str, str]:
    return dict(response.headers.items())


# --- what arrives ------------------------------------------------------------------------------
def test_token_user_profile_has_every_field(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site(
        IDENTIFY_COMPANY=HOOKS + "company_from_user", GET_METADATA=HOOKS + "metadata_from_user"
    )
    user = make_user("acme.test")
    token = issue_token(user)
    path = "/token/awhoami" if web.mode == "async" else "/token/whoami"

    response = web.get(
        path + "?utm_source=newsletter&utm_campaign=spring",
        headers={"authorization": f"Bearer {token}", "user-agent": "pytest-agent/1.0"},
    )

    assert response.status_code == 200
    profile = delivered(collector, app_id, user.pk)
    assert profile is not None
    assert profile["user_id"] == str(user.pk)
    assert profile["company_id"] == "acme.test"
    assert profile["session_tokens"] == [token]
    assert profile["ip_address"] == "127.0.0.1"
    assert profile["user_agent_string"] == "pytest-agent/1.0"
    assert profile["campaign"]["utm_source"] == "newsletter"
    assert profile["campaign"]["utm_campaign"] == "spring"
    assert profile["metadata"] == {"email": user.email, "first_name": "Ada", "status": 200}


def test_session_user_is_recorded_with_its_company(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site(IDENTIFY_COMPANY=HOOKS + "company_from_user")
    user = make_user("globex.test")
    web.login(user)

    response = web.get("/awhoami" if web.mode == "async" else "/whoami")

    assert response.json() == {"user": user.pk}  # type: ignore[attr-defined]
    profile = delivered(collector, app_id, user.pk)
    assert profile is not None
    assert profile["company_id"] == "globex.test"
    assert "session_tokens" not in profile or profile["session_tokens"] == []


def test_user_loaded_by_an_async_view_is_recorded_under_both_handlers(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site()
    user = make_user()
    web.login(user)

    web.get("/awhoami")

    assert flushed_users(collector, app_id) == [str(user.pk)]


def test_ip_is_the_socket_peer_without_forwarding_headers(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site(peer="203.0.113.9")
    user = make_user()

    web.get("/token/whoami", headers={"authorization": f"Bearer {issue_token(user)}"})

    profile = delivered(collector, app_id, user.pk)
    assert profile is not None
    assert profile["ip_address"] == "203.0.113.9"


@pytest.mark.parametrize(
    ("peer", "expected"),
    [("127.0.0.1", "198.51.100.7"), ("10.1.2.3", "198.51.100.7"), ("203.0.113.9", "203.0.113.9")],
    ids=["loopback-proxy", "private-proxy", "untrusted-peer"],
)
def test_x_forwarded_for_is_believed_only_from_a_trusted_peer(
    site: SiteFactory, app_id: str, collector: CollectorHandle, peer: str, expected: str
) -> None:
    web = site(peer=peer)
    user = make_user()

    web.get(
        "/token/whoami",
        headers={
            "authorization": f"Bearer {issue_token(user)}",
            "x-forwarded-for": "198.51.100.7",
        },
    )

    profile = delivered(collector, app_id, user.pk)
    assert profile is not None
    assert profile["ip_address"] == expected


def test_async_hooks_are_awaited(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site(
        IDENTIFY_COMPANY=HOOKS + "acompany_from_user", GET_METADATA=HOOKS + "ametadata_from_user"
    )
    user = make_user("initech.test")

    web.get("/token/whoami", headers={"authorization": f"Bearer {issue_token(user)}"})

    profile = delivered(collector, app_id, user.pk)
    assert profile is not None
    assert profile["company_id"] == "async-initech.test"
    assert profile["metadata"] == {"email": user.email, "async_hook": True}


# --- nothing recorded ----------------------------------------------------------------------------
def test_skip_and_anonymous_requests_record_nothing(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site(SKIP=HOOKS + "skip_health")
    user = make_user()
    token = issue_token(user)

    web.get("/whoami")  # anonymous: AnonymousUser
    web.get("/token/whoami")  # the view answers 401, no user set
    web.get("/health", headers={"authorization": f"Bearer {token}"})  # skipped
    web.login(user)
    web.get("/health")  # skipped, though the user is logged in
    assert flushed_users(collector, app_id) == []

    web.get("/whoami")  # the control: a recorded request
    assert flushed_users(collector, app_id) == [str(user.pk)]


def test_untouched_lazy_user_is_not_loaded(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site()
    user = make_user()
    web.login(user)

    response = web.get("/hello")

    assert response.status_code == 201
    assert "Cookie" not in response.get("Vary", "")  # the session was never read
    assert flushed_users(collector, app_id) == []


def test_force_user_load_records_the_untouched_user(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site(FORCE_USER_LOAD=True)
    user = make_user()
    web.login(user)

    response = web.get("/hello")

    assert response.status_code == 201
    assert "Cookie" in response.get("Vary", "")  # loading the user read the session
    assert flushed_users(collector, app_id) == [str(user.pk)]


def test_force_user_load_records_nothing_for_anonymous(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site(FORCE_USER_LOAD=True)

    assert web.get("/hello").status_code == 201

    assert flushed_users(collector, app_id) == []


# --- the response is never touched -----------------------------------------------------------
@pytest.fixture
def baseline(mode: str) -> Iterator[HttpResponseBase]:
    """``/hello`` served without the middleware (``ENABLED: False`` -> MiddlewareNotUsed)."""
    bare = Site(mode, {"ENABLED": False}, None)
    try:
        yield bare.get("/hello")
    finally:
        bare.close()


@pytest.mark.parametrize("failing", ["skip", "identify_user", "the other hooks"])
def test_raising_hooks_leave_the_response_untouched(
    site: SiteFactory,
    app_id: str,
    collector: CollectorHandle,
    baseline: HttpResponseBase,
    failing: str,
) -> None:
    names = ["IDENTIFY_COMPANY", "GET_SESSION_TOKEN", "GET_METADATA", "GET_CAMPAIGN"]
    if failing == "identify_user":
        names.append("IDENTIFY_USER")
    elif failing == "skip":
        names = ["SKIP"]
    # FORCE_USER_LOAD: /hello does not load the user; the default user id then does.
    web = site(**dict.fromkeys(names, HOOKS + "explode"), FORCE_USER_LOAD=True)
    user = make_user()
    web.login(user)
    errors_before = capture_stats()["hook_errors"]
    skipped_before = capture_stats()["skipped"]

    response = web.get("/hello?utm_source=x", headers={"authorization": "Bearer t"})

    assert response.status_code == baseline.status_code == 201
    assert response.content == baseline.content == b"hello"  # type: ignore[attr-defined]
    errors = capture_stats()["hook_errors"] - errors_before
    skipped = capture_stats()["skipped"] - skipped_before
    stored = flushed_users(collector, app_id)
    if failing == "skip":  # fails closed: the request is skipped, nothing else runs
        # (under ASGI, FORCE_USER_LOAD loads the user before the hooks run)
        assert headers_of(response) in (
            headers_of(baseline),
            headers_of(baseline) | {"Vary": "Cookie"},
        )
        assert (errors, skipped) == (1, 1)
        assert stored == []
    elif failing == "identify_user":
        assert headers_of(response) == headers_of(baseline)
        assert (errors, skipped) == (1, 0)  # identify_user: the rest never ran
        assert stored == []
    else:  # loading the user read the session: only that may add to Vary
        assert headers_of(response) == headers_of(baseline) | {"Vary": "Cookie"}
        assert (errors, skipped) == (4, 0)
        assert stored == [str(user.pk)]  # each failing hook loses only its own field
        profile = collector.get_user(app_id, str(user.pk))
        assert profile is not None
        assert not profile.get("company_id")
        assert not profile.get("metadata")
        assert not profile.get("session_tokens")
        assert not profile.get("campaign")


def test_an_internal_failure_leaves_the_response_untouched(
    site: SiteFactory, baseline: HttpResponseBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault no real request can cause: the capture core itself raising.
    def broken(self: Capture, view: Any) -> bool:
        raise RuntimeError("capture is broken")

    async def abroken(self: Capture, view: Any) -> bool:
        raise RuntimeError("capture is broken")

    monkeypatch.setattr(Capture, "capture", broken)
    monkeypatch.setattr(Capture, "acapture", abroken)
    web = site()
    before = capture_stats()["internal_errors"]

    response = web.get("/hello")

    assert response.status_code == 201
    assert response.content == baseline.content  # type: ignore[attr-defined]
    assert headers_of(response) == headers_of(baseline)
    assert capture_stats()["internal_errors"] == before + 1


def test_streaming_response_still_streams(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site(GET_METADATA=HOOKS + "stream_metadata")
    user = make_user()
    web.login(user)

    response = web.get("/astream" if web.mode == "async" else "/stream")

    assert response.streaming
    assert web.body(response) == b"chunk0\nchunk1\nchunk2\n"
    profile = delivered(collector, app_id, user.pk)
    assert profile is not None
    # The capture ran before the first chunk was produced: nothing was buffered.
    assert profile["metadata"] == {"chunks_before_capture": 0, "streaming": True}


def test_a_request_with_a_company_updates_the_company_too(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site(
        IDENTIFY_COMPANY=HOOKS + "company_from_user",
        GET_COMPANY_DOMAIN=HOOKS + "company_domain_from_user",
        GET_COMPANY_METADATA=HOOKS + "acompany_metadata",  # async def: awaited in both modes
    )
    domain = "co" + uuid.uuid4().hex[:8] + ".test"
    user = make_user(domain)
    web.login(user)

    web.get("/awhoami" if web.mode == "async" else "/whoami", REMOTE_ADDR="203.0.113.9")

    assert delivered(collector, app_id, user.pk) is not None
    company = collector.client.get(
        f"/v1/companies/{domain}", headers={"X-Moesif-Application-Id": app_id}
    ).json()
    assert company["company_domain"] == "www." + domain
    assert company["metadata"] == {"plan": "enterprise", "seats": 12}
    if web.mode == "sync":
        assert company["ip_address"] == "203.0.113.9"


def test_update_companies_false_sends_no_company(
    site: SiteFactory, app_id: str, collector: CollectorHandle
) -> None:
    web = site(IDENTIFY_COMPANY=HOOKS + "company_from_user", UPDATE_COMPANIES=False)
    domain = "co" + uuid.uuid4().hex[:8] + ".test"
    user = make_user(domain)
    web.login(user)

    web.get("/awhoami" if web.mode == "async" else "/whoami")

    profile = delivered(collector, app_id, user.pk)
    assert profile is not None
    assert profile["company_id"] == domain
    answer = collector.client.get(
        f"/v1/companies/{domain}", headers={"X-Moesif-Application-Id": app_id}
    )
    assert answer.status_code == 404
