"""``moesif-users demo``: the example apps, simulated users, an embedded collector.

Starts the local collector on a free loopback port, drives traffic from simulated users
through the Django, Flask, FastAPI and Starlette example apps in this process (their own
test clients; UTM links, API tokens, requests through a trusted proxy), flushes the
shared sender, and prints the merged user and company profiles the collector stored.
Needs the ``[all]`` extra; the apps ship with the package (``_demo/``), so any install
can run it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..sender import get_sender

__all__ = ["run_demo"]

APPLICATION_ID = "demo-application-id"
CAMPAIGNS: tuple[dict[str, str], ...] = (
    {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "autumn-launch"},
    {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "api-tools", "gclid": "Cj0KCQ"},
    {"utm_source": "hackernews", "utm_medium": "social"},
    {},
)
USER_AGENTS: tuple[str, ...] = (
    "python-httpx/0.28 acme-sync/2.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "curl/8.5.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0 Safari/537.36",
    "okhttp/4.12.0 (Android 14)",
)
COMPANIES: tuple[str, ...] = ("acme", "globex", "initech", "umbrella", "hooli")


@dataclass
class SimulatedUser:
    """One demo user: who they are and how their client looks from the server."""

    number: int
    email: str
    name: str
    company: str
    client_ip: str
    user_agent: str
    campaign: dict[str, str]
    token: str = ""
    via_proxy: bool = False
    token_header: str = "authorization"
    extra: dict[str, Any] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        headers = {"user-agent": self.user_agent}
        if self.token_header == "authorization":
            headers["authorization"] = f"Bearer {self.token}"
        else:
            headers[self.token_header] = self.token
        if self.via_proxy:  # the peer is then 127.0.0.1, a trusted proxy by default
            headers["x-forwarded-for"] = f"{self.client_ip}, 10.0.0.7"
        else:  # a direct connection from the client
            headers["x-demo-peer"] = self.client_ip
        return headers

    def landing_query(self) -> str:
        return "&".join(f"{key}={value}" for key, value in self.campaign.items())


def _simulated_users(count: int) -> list[SimulatedUser]:
    users = []
    for number in range(1, count + 1):
        users.append(
            SimulatedUser(
                number=number,
                email=f"user{number:02d}@{COMPANIES[number % len(COMPANIES)]}.example",
                name=f"Demo User {number:02d}",
                company=COMPANIES[number % len(COMPANIES)],
                client_ip=f"203.0.113.{10 + number}" if number % 2 else f"198.51.100.{10 + number}",
                user_agent=USER_AGENTS[number % len(USER_AGENTS)],
                campaign=CAMPAIGNS[number % len(CAMPAIGNS)],
                via_proxy=number % 3 != 0,
                token_header="x-api-key" if number % 4 == 0 else "authorization",
            )
        )
    return users


Request = Callable[[str, str, dict[str, str], Any], int]  # method, path, headers, json -> status


def _flask_driver(users: list[SimulatedUser], base_url: str) -> tuple[str, Request]:
    from .flask_app import create_app

    client = create_app(APPLICATION_ID, base_url).test_client()

    def request(method: str, path: str, headers: dict[str, str], body: Any) -> int:
        peer = headers.pop("x-demo-peer", "127.0.0.1")
        response = client.open(
            path, method=method, headers=headers, json=body, environ_base={"REMOTE_ADDR": peer}
        )
        response.close()  # a WSGI server closes the response; the extension records then
        return response.status_code

    for user in users:
        body = {**_signup(user), "plan": "pro" if user.number % 2 else "free"}
        user.token = client.post("/signup", json=body).get_json()["token"]
    return "Flask", request


def _signup(user: SimulatedUser) -> dict[str, str]:
    """The sign-up form of a simulated user (the apps that have one)."""
    return {"email": user.email, "password": "demo", "name": user.name, "company_id": user.company}


def _asgi_driver(
    name: str, module: str, users: list[SimulatedUser], base_url: str
) -> tuple[str, Request]:
    """``module``: ``fastapi_app`` or ``starlette_app`` (of ``_demo``)."""
    with warnings.catch_warnings():  # newer Starlette suggests httpx2 for its test client
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    app = importlib.import_module(f"{__package__}.{module}").create_app(APPLICATION_ID, base_url)
    clients: dict[str, TestClient] = {}

    def request(method: str, path: str, headers: dict[str, str], body: Any) -> int:
        peer = headers.pop("x-demo-peer", "127.0.0.1")
        if peer not in clients:
            clients[peer] = TestClient(app, client=(peer, 50000))
        status: int = clients[peer].request(method, path, headers=headers, json=body).status_code
        return status

    client = TestClient(app, client=("127.0.0.1", 50000))

    for user in users:
        if module == "fastapi_app":
            user.token = client.post("/signup", json=_signup(user)).json()["token"]
            user.token_header = "authorization"  # the FastAPI example takes Bearer tokens
    return name, request


def _django_driver(users: list[SimulatedUser], base_url: str, workdir: str) -> tuple[str, Request]:
    os.environ["DJANGO_SETTINGS_MODULE"] = f"{__package__}.django_app.settings"
    os.environ["EXAMPLE_DB_PATH"] = str(Path(workdir) / "django-example.sqlite3")
    import django
    from django.core.management import call_command
    from django.test import Client

    django.setup()
    call_command("migrate", verbosity=0)
    out = io.StringIO()
    call_command("seed_demo", users=len(users), password="demo", stdout=out)
    rows = json.loads(out.getvalue())
    for user, row in zip(users, rows, strict=True):
        user.token = row["token"]
        user.token_header = "authorization"  # the Django example takes Bearer tokens
        user.extra["username"] = row["username"]
    client = Client()

    def request(method: str, path: str, headers: dict[str, str], body: Any) -> int:
        peer = headers.pop("x-demo-peer", "127.0.0.1")
        path = {"/me": "/api/me", "/projects": "/api/company"}.get(path.split("?")[0], path) + (
            "?" + path.split("?", 1)[1] if "?" in path else ""
        )
        response = client.generic(
            method,
            path,
            json.dumps(body) if body is not None else "",
            content_type="application/json",
            headers=headers,
            REMOTE_ADDR=peer,
        )
        return response.status_code

    return "Django", request


def _drive(request: Request, user: SimulatedUser, api_path: str) -> int:
    """A short session: a landing request with the campaign, then a few API calls."""
    requests = 0
    query = user.landing_query()
    for path in (f"/me?{query}" if query else "/me", api_path, "/me", api_path):
        request("GET", path, user.headers(), None)
        requests += 1
    return requests


@contextlib.contextmanager
def _embedded_collector(db_path: Path, port: int) -> Iterator[str]:
    from ..collector import create_app
    from ..collector.server_thread import ServerThread

    app = create_app(db_path)
    with ServerThread(app, port=port) as server:
        yield server.url
    app.state.store.close()


def _print_profiles(profiles: list[dict[str, Any]], out: Any) -> None:
    columns = ("user_id", "company", "ip_address", "tokens", "campaign", "user agent", "metadata")
    rows = []
    for profile in profiles:
        rows.append(
            (
                str(profile["user_id"]),
                str(profile.get("company_id") or "-"),
                str(profile.get("ip_address") or "-"),
                str(len(profile.get("session_tokens") or [])),
                _campaign(profile),
                _shorten(str(profile.get("user_agent_string") or "-"), 28),
                _metadata(profile, 60),
            )
        )
    _print_table(columns, rows, out)


def _print_companies(
    companies: list[dict[str, Any]], profiles: list[dict[str, Any]], out: Any
) -> None:
    members: dict[str, int] = {}
    for profile in profiles:
        company_id = profile.get("company_id")
        if company_id:
            members[company_id] = members.get(company_id, 0) + 1
    columns = ("company_id", "domain", "users", "ip_address", "tokens", "campaign", "metadata")
    rows = [
        (
            str(company["company_id"]),
            str(company.get("company_domain") or "-"),
            str(members.get(company["company_id"], 0)),
            str(company.get("ip_address") or "-"),
            str(len(company.get("session_tokens") or [])),
            _campaign(company),
            _metadata(company, 60),
        )
        for company in companies
    ]
    _print_table(columns, rows, out)


def _campaign(profile: dict[str, Any]) -> str:
    campaign = profile.get("campaign") or {}
    return "/".join(filter(None, (campaign.get("utm_source"), campaign.get("utm_medium")))) or "-"


def _metadata(profile: dict[str, Any], width: int) -> str:
    metadata = profile.get("metadata") or {}
    return _shorten(", ".join(f"{k}={v}" for k, v in metadata.items()), width) or "-"


def _print_table(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]], out: Any) -> None:
    widths = [max(len(col), *(len(row[i]) for row in rows)) for i, col in enumerate(columns)]
    line = "  ".join(col.ljust(widths[i]) for i, col in enumerate(columns))
    print(line, file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)), file=out)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def run_demo(*, serve: bool = False, port: int = 0, users: int = 20, out: Any = None) -> int:
    """Run the demo; returns the exit status (0 when every simulated user arrived).

    With ``serve`` the embedded collector keeps running afterwards, its page URL printed,
    until Ctrl-C.
    """
    out = out or sys.stdout

    with tempfile.TemporaryDirectory(prefix="moesif-users-demo-") as workdir:
        db_path = Path(workdir) / "collector.sqlite3"
        with _embedded_collector(db_path, port) as base_url:
            os.environ["MOESIF_APPLICATION_ID"] = APPLICATION_ID
            os.environ["MOESIF_BASE_URL"] = base_url
            print(f"Embedded collector: {base_url}/  (SQLite at {db_path})", file=out)
            groups = _four_groups(_simulated_users(users))
            started = time.perf_counter()
            total = _drive_apps(groups, base_url, workdir, out)
            delivered = get_sender(application_id=APPLICATION_ID, base_url=base_url).flush(10)
            elapsed = time.perf_counter() - started
            profiles = _stored(base_url, "/v1/users")
            print(
                f"\n{total} requests in {elapsed:.2f}s; sender flushed: {delivered}; "
                f"{len(profiles)} profiles stored:\n",
                file=out,
            )
            _print_profiles(profiles, out)
            companies = _stored(base_url, "/v1/companies")
            print(f"\n{len(companies)} companies stored:\n", file=out)
            _print_companies(companies, profiles, out)
            _serve_or_sign_off(serve, base_url, out)
    return 0 if delivered and profiles and companies else 1


def _four_groups(simulated: list[SimulatedUser]) -> list[list[SimulatedUser]]:
    """A quarter of the users per app; the last group takes the rest."""
    quarter = max(1, len(simulated) // 4)
    groups = [simulated[i * quarter : (i + 1) * quarter] for i in range(3)]
    groups.append(simulated[3 * quarter :])
    return groups


def _drive_apps(groups: list[list[SimulatedUser]], base_url: str, workdir: str, out: Any) -> int:
    """Each group's sessions through its app; returns the number of requests made."""
    drivers = [
        (_flask_driver(groups[0], base_url), "/projects", groups[0]),
        (
            _asgi_driver("FastAPI", "fastapi_app", groups[1], base_url),
            "/projects",
            groups[1],
        ),
        (_django_driver(groups[3], base_url, workdir), "/projects", groups[3]),
    ]
    total = 0
    for (name, request), api_path, members in drivers:
        count = sum(_drive(request, user, api_path) for user in members)
        _print_driven(name, members, count, out)
        total += count
    name, request = _asgi_driver("Starlette", "starlette_app", groups[2], base_url)
    count = _drive_starlette(request, groups[2])
    _print_driven(name, groups[2], count, out)
    return total + count


def _print_driven(name: str, members: list[SimulatedUser], count: int, out: Any) -> None:
    print(f"  {name:<9} {len(members):>3} users, {count:>4} requests", file=out)


def _stored(base_url: str, path: str) -> list[dict[str, Any]]:
    """The profiles the collector stored, from its list endpoint ``path``."""
    stored: list[dict[str, Any]] = httpx.get(
        f"{base_url}{path}", headers={"X-Moesif-Application-Id": APPLICATION_ID}
    ).json()
    return stored


def _serve_or_sign_off(serve: bool, base_url: str, out: Any) -> None:
    """With ``serve``, keep the collector up until Ctrl-C; else say how to do that."""
    if serve:
        print(f"\nProfiles page: {base_url}/  (serving until Ctrl-C)", file=out)
        out.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
        print("Collector stopped.", file=out)
    else:
        print(
            "\nThe embedded collector stops with the demo (its database was temporary)."
            "\nTo browse the profiles page afterwards, run: moesif-users demo --serve",
            file=out,
        )


def _drive_starlette(request: Request, users: list[SimulatedUser]) -> int:
    """The Starlette example has two fixed accounts, each used by several clients."""
    logins = [("carol@initech.example", "tps-report"), ("dave@initrode.example", "stapler")]
    count = 0
    for index, user in enumerate(users):
        email, password = logins[index % len(logins)]
        reply_status = request("POST", "/login", {}, {"email": email, "password": password})
        count += 1
        if reply_status != 200:
            continue
        user.token = f"key-{email.split('@')[0]}"
        user.token_header = "x-api-key"
        count += _drive(request, user, "/reports")
    return count
