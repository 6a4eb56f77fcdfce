"""The collector's HTML page, and how the collector is started (serve, imports)."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import uuid
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

    html = page(collector, app=prefix_of(app_id)).text

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
    assert "<td>2</td>" in html  # two session tokens, counted
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

    response = page(collector, app=prefix_of(app_id))

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
    filtered = page(collector, app=prefix_of(app_id)).text

    assert prefix_of(app_id) in filtered
    for html in (everything, filtered):
        assert app_id not in html
        assert app_id[-32:] not in html


def test_page_filters_by_partition_prefix(collector: CollectorHandle) -> None:
    first, second = "page-a-" + uuid.uuid4().hex, "page-b-" + uuid.uuid4().hex
    store(collector, first, [{"user_id": "only-in-first-" + first[-8:]}])
    store(collector, second, [{"user_id": "only-in-second-" + second[-8:]}])

    html = page(collector, app=prefix_of(first)[:10]).text

    assert "only-in-first-" + first[-8:] in html
    assert "only-in-second-" + second[-8:] not in html
    assert prefix_of(second) not in html


def test_page_limit_and_empty_filter(collector: CollectorHandle, app_id: str) -> None:
    store(collector, app_id, [{"user_id": f"lim-{i}"} for i in range(5)])

    limited = page(collector, app=prefix_of(app_id), limit="2").text
    rest = page(collector, app=prefix_of(app_id), offset="2").text
    empty = page(collector, app=uuid.uuid4().hex[:16]).text  # a partition nobody has

    assert limited.count("<tr><td>") == 2
    assert "?offset=" in limited
    assert rest.count("<tr><td>") == 3
    assert "lim-4" not in rest  # newest first; equal times: highest id first
    assert "No profiles" in empty
    assert "<tr><td>" not in empty


@pytest.mark.parametrize("params", [{"app": "<script>"}, {"app": "x" * 17}, {"limit": "zero"}])
def test_page_rejects_bad_parameters_as_json(
    collector: CollectorHandle, params: dict[str, str]
) -> None:
    response = collector.client.get("/", params=params)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "invalid parameter"
    assert "<script>" not in response.text


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
