"""The collector's HTML page, and how the collector is started (serve, imports)."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import sys
import time
import uuid
from html import escape as html_escape
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("starlette")

from servers import APP_ID_HEADER, CollectorHandle

from moesif_users_middleware import collector as collector_module

ROOT = Path(__file__).resolve().parents[1]


def prefix_of(application_id: str) -> str:
    return hashlib.sha256(application_id.encode()).hexdigest()[:16]


def store(collector: CollectorHandle, app_id: str, users: list[dict[str, Any]]) -> None:
    response = collector.client.post("/v1/users/batch", json=users, headers={APP_ID_HEADER: app_id})
    assert response.status_code == 201


def page(collector: CollectorHandle, **params: str) -> httpx.Response:
    response = collector.client.get("/", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    return response


def test_page_lists_profiles_with_their_fields(collector: CollectorHandle, app_id: str) -> None:
    store(
        collector,
        app_id,
        [
            {
                "user_id": "page-user-1",
                "company_id": "acme-corp",
                "session_token": "secret-token-value",
                "ip_address": "203.0.113.7",
                "user_agent_string": "Mozilla/5.0 PageTest",
                "campaign": {"utm_source": "newsletter"},
                "metadata": {"email": "john@acmeinc.com"},
            },
            {"user_id": "page-user-1", "session_token": "second-token"},
        ],
    )

    html = page(collector, partition=prefix_of(app_id)).text

    for text in (
        "page-user-1",
        "acme-corp",
        "203.0.113.7",
        "Mozilla/5.0 PageTest",
        "utm_source=newsletter",
        "john@acmeinc.com",
        prefix_of(app_id),
    ):
        assert text in html
    assert '<td class="num">2</td>' in html  # two session tokens, counted
    assert "secret-token-value" not in html
    assert "second-token" not in html


def test_page_escapes_everything(collector: CollectorHandle, app_id: str) -> None:
    evil = '<script>alert("x")</script>'
    store(
        collector,
        app_id,
        [
            {
                "user_id": f"{evil}&id",
                "company_id": f"<b>{evil}</b>",
                "user_agent_string": f"'\"><img src=x onerror=alert(1)>{evil}",
                "campaign": {"utm_source": evil},
                "metadata": {evil: evil, "nested": {"k": f"</pre>{evil}"}},
            }
        ],
    )

    response = page(collector, partition=prefix_of(app_id))

    html = response.text
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert "<b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;id" in html
    assert "&lt;/pre&gt;" in html
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_page_never_shows_an_application_id(collector: CollectorHandle) -> None:
    app_id = "app-id-must-not-appear-" + uuid.uuid4().hex
    store(collector, app_id, [{"user_id": "u", "metadata": {"m": 1}}])

    everything = page(collector).text
    filtered = page(collector, partition=prefix_of(app_id)).text
    posted = collector.client.post("/", data={"app": app_id})
    linked = collector.client.get("/", params={"app": app_id})

    assert prefix_of(app_id) in filtered
    for response in (posted, linked):  # hashed on the server, then forgotten
        assert response.status_code == 303
        assert response.headers["location"] == f"/?partition={prefix_of(app_id)}"
    for html in (everything, filtered, posted.text, linked.text):
        assert app_id not in html
        assert app_id[-32:] not in html


def test_page_filters_by_partition_prefix(collector: CollectorHandle) -> None:
    first, second = "page-a-" + uuid.uuid4().hex, "page-b-" + uuid.uuid4().hex
    store(collector, first, [{"user_id": "only-in-first-" + first[-8:]}])
    store(collector, second, [{"user_id": "only-in-second-" + second[-8:]}])

    html = page(collector, partition=prefix_of(first)[:10]).text

    assert "only-in-first-" + first[-8:] in html
    assert "only-in-second-" + second[-8:] not in html
    assert prefix_of(second) not in html


def test_page_limit_paging_and_empty_filter(collector: CollectorHandle, app_id: str) -> None:
    store(collector, app_id, [{"user_id": f"lim-{i}"} for i in range(5)])
    key = prefix_of(app_id)

    first = page(collector, partition=key, limit="2").text
    second = page(collector, partition=key, limit="2", page="2").text
    last = page(collector, partition=key, limit="2", page="3").text
    beyond = page(collector, partition=key, limit="2", page="99").text
    empty = page(collector, partition=uuid.uuid4().hex[:16]).text  # a partition nobody has

    assert first.count("<tr><td") - first.count("<tr><td colspan") == 2
    assert f'rel="next" href="/?partition={key}&amp;page=2&amp;limit=2"' in first
    assert 'rel="prev"' not in first
    assert "5 of " in first
    assert "Page 1 of 3" in first
    assert f'rel="prev" href="/?partition={key}&amp;page=1&amp;limit=2"' in second
    assert len(re.findall(r">lim-\d</a>", second)) == 2
    assert "Page 3 of 3" in last
    assert 'rel="next"' not in last
    assert "No profiles on this page" in beyond
    assert "No profiles" in empty
    shown = [first, second, last]
    for n in range(5):  # each user on exactly one page
        assert sum(f">lim-{n}</a>" in html for html in shown) == 1


def test_page_counts_every_profile_and_searches(collector: CollectorHandle, app_id: str) -> None:
    tag = uuid.uuid4().hex[:8]
    store(
        collector,
        app_id,
        [{"user_id": f"s-{tag}-{i:03d}", "company_id": f"co-{tag}"} for i in range(120)]
        + [{"user_id": f"other-{tag}", "company_id": f"zz-{tag}"}],
    )

    everything = page(collector).text
    by_user = page(collector, q=f"s-{tag}-11").text
    by_company = page(collector, q=f"zz-{tag}").text
    both = page(collector, q=f"co-{tag}", partition=prefix_of(app_id)).text

    one_row = page(collector, limit="1").text
    for html in (everything, one_row):  # the true total, not the rows shown
        match = re.search(r'class="summary">([\d,]+) profiles', html)
        assert match, html
        assert int(match.group(1).replace(",", "")) >= 121
    assert "10 of " in by_user
    assert len(re.findall(rf">s-{tag}-11\d</a>", by_user)) == 10
    assert f">other-{tag}</a>" in by_company
    assert "1 of " in by_company
    assert "120 of " in both
    assert "Page 1 of 2" in both
    assert f'value="co-{tag}"' in both  # the search box keeps the query


def test_page_shows_newest_modified_first(collector: CollectorHandle, app_id: str) -> None:
    store(
        collector,
        app_id,
        [
            {"user_id": "b-middle", "modified_time": "2026-01-02T00:00:00Z"},
            {"user_id": "c-oldest", "modified_time": "2026-01-01T00:00:00Z"},
            {"user_id": "a-newest", "modified_time": "2026-01-03T00:00:00Z"},
        ],
    )

    html = page(collector, partition=prefix_of(app_id)).text

    assert html.index(">a-newest<") < html.index(">b-middle<") < html.index(">c-oldest<")


def test_page_metadata_is_one_line_with_details(collector: CollectorHandle, app_id: str) -> None:
    long = {f"key{i}": f"value number {i}" for i in range(20)}
    store(collector, app_id, [{"user_id": "meta", "metadata": long}, {"user_id": "tiny",
                                                                      "metadata": {"a": 1}}])  # fmt: skip

    html = page(collector, partition=prefix_of(app_id)).text

    assert html.count("<details>") == 1
    assert "<summary><code>{&quot;key0&quot;: &quot;value number 0&quot;" in html
    assert "<pre>{\n  &quot;key0&quot;" in html
    assert "<code>{&quot;a&quot;: 1}</code>" in html


USER_IDS = ["a/b", "100%", "ünïcødé 🎉", '<script>alert("x")</script>', "..", "?#&=", "sp ace"]


def test_user_pages_are_linked_and_safe(collector: CollectorHandle, app_id: str) -> None:
    store(collector, app_id, [{"user_id": uid, "session_token": f"secret-{n}-tokenvalue",
                               "metadata": {"n": n}} for n, uid in enumerate(USER_IDS)])  # fmt: skip
    store(collector, app_id, [{"user_id": uid, "metadata": {"n": -1}} for uid in USER_IDS])
    listing = page(collector, partition=prefix_of(app_id)).text

    for n, user_id in enumerate(USER_IDS):
        escaped = html_escape(user_id)
        start = listing.index(f">{escaped}</a>")
        href = listing[
            listing.rindex('href="', 0, start) + 6 : listing.index(
                '"', listing.rindex('href="', 0, start) + 6
            )
        ]
        response = collector.client.get(href.replace("&amp;", "&"))
        assert response.status_code == 200, (user_id, href)
        html = response.text
        assert f"<code>{escaped}</code>" in html
        assert "<script" not in html
        assert f"secret-{n}-tokenvalue" not in html  # tokens are masked
        assert "session token added <code>…alue</code>" in html
        assert "<code>metadata.n</code>" in html  # the second update, in the history
        assert "default-src 'none'" in response.headers["content-security-policy"]


def test_user_page_shows_profile_and_history(collector: CollectorHandle, app_id: str) -> None:
    store(collector, app_id, [{"user_id": "hist", "company_id": "first-co",
                               "modified_time": "2026-03-01T00:00:00Z"}])  # fmt: skip
    store(collector, app_id, [{"user_id": "hist", "company_id": "second-co",
                               "modified_time": "2026-03-02T00:00:00Z"}])  # fmt: skip
    store(collector, app_id, [{"user_id": "hist", "ip_address": "10.1.2.3",
                               "modified_time": "2026-02-01T00:00:00Z"}])  # fmt: skip
    store(collector, app_id, [{"user_id": "hist", "company_id": "second-co",
                               "modified_time": "2026-03-02T00:00:00Z"}])  # fmt: skip

    html = collector.client.get(f"/users/hist?partition={prefix_of(app_id)}").text

    assert 'History <span class="muted">(3, newest first)' in html
    rows = html.split('<table class="history">')[1].split("<tr>")[2:]
    assert "2026-02-01T00:00:00.000Z" in rows[0]
    assert '<code>ip_address</code>: — → <code class="new">10.1.2.3</code>' in rows[0]
    assert 'first-co</code> → <code class="new">second-co' in rows[1]
    assert "<code>user_id</code>: — → " in rows[2]
    assert "2026-02-01T00:00:00.000Z</td></tr>" in html  # created_time moved back
    assert "2026-03-02T00:00:00.000Z</td></tr>" in html  # modified_time: the newest


@pytest.mark.parametrize("path", ["/users/nobody-" + "x" * 10, "/users/%3Cscript%3E", "/users/"])
def test_unknown_user_page_is_html_404(collector: CollectorHandle, path: str) -> None:
    response = collector.client.get(path)

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "User not found" in response.text
    assert "<script>" not in response.text


@pytest.mark.parametrize(
    "params",
    [
        {"partition": "<script>"},
        {"partition": "x" * 17},
        {"limit": "zero"},
        {"limit": "100000"},
        {"page": "-1"},
        {"page": "abc"},
        {"page": "0"},
        {"page": "9" * 40},
        {"q": "x" * 201},
    ],
)
def test_page_rejects_bad_parameters_as_json(
    collector: CollectorHandle, params: dict[str, str]
) -> None:
    response = collector.client.get("/", params=params)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "invalid parameter"
    assert "<script>" not in response.text


def test_user_page_rejects_a_bad_partition(collector: CollectorHandle) -> None:
    response = collector.client.get("/users/u", params={"partition": "<b>"})

    assert response.status_code == 400
    assert "<b>" not in response.text


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert collector_module.is_loopback_host(host) is loopback


def test_serve_warns_when_not_on_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Tests never listen beyond loopback, so uvicorn.run is replaced by a recorder.
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))

    collector_module.serve("0.0.0.0", 9999, tmp_path / "x.db")
    assert "non-loopback" in capsys.readouterr().err
    collector_module.serve("127.0.0.1", 9999, tmp_path / "y.db")
    assert capsys.readouterr().err == ""

    assert [(c["host"], c["port"]) for c in calls] == [("0.0.0.0", 9999), ("127.0.0.1", 9999)]


def test_serve_runs_a_real_collector(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db_path = tmp_path / "served.db"
    code = (
        "from moesif_users_middleware.collector import serve; "
        f"serve('127.0.0.1', {port}, {str(db_path)!r})"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.post(
                    f"{url}/v1/users", json={"user_id": "served"}, headers={APP_ID_HEADER: "s"}
                )
                break
            except httpx.TransportError:
                assert process.poll() is None, "collector exited"
                assert time.monotonic() < deadline, "collector did not start"
                time.sleep(0.05)
        assert response.status_code == 201
        assert httpx.get(f"{url}/v1/users/served", headers={APP_ID_HEADER: "s"}).status_code == 200
    finally:
        process.terminate()
        process.wait(10)
    assert db_path.exists()


def test_importing_the_package_does_not_import_the_collector() -> None:
    code = (
        "import sys, moesif_users_middleware, moesif_users_middleware.models; "
        "bad = [m for m in ('moesif_users_middleware.collector', 'starlette', 'uvicorn')"
        " if m in sys.modules]; "
        "assert not bad, bad; "
        "import moesif_users_middleware.collector; "
        "assert 'uvicorn' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_application_filter_form_rejects_bad_bodies(collector: CollectorHandle) -> None:
    not_a_form = collector.client.post("/", json={"app": "x"})
    too_big = collector.client.post("/", data={"app": "x" * 20_000})
    not_utf8 = collector.client.post(
        "/", content=b"app=%ff\xff", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    cleared = collector.client.post("/", data={"app": "  ", "q": "abc"})

    assert not_a_form.status_code == 415
    assert too_big.status_code == 413
    assert not_utf8.status_code == 400
    assert "x" * 100 not in too_big.text
    assert cleared.status_code == 303
    assert cleared.headers["location"] == "/?q=abc"
