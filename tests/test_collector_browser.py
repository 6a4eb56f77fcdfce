"""The collector's page in a real headless Chromium: search, paging and the user page.

Each step loads a URL in ``chromium --headless --dump-dom`` and reads what the browser
rendered (the DOM after parsing). The search is the GET form's URL as the browser would
submit it; paging follows the ``rel=next`` link's href from the rendered DOM. Skips only
where no Chromium is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import pytest
from chromium import NEEDS_CHROMIUM, browse
from servers import APP_ID_HEADER, CollectorHandle, ServerThread

pytest.importorskip("starlette")

pytestmark = NEEDS_CHROMIUM


def seed(handle: CollectorHandle, app_id: str, users: list[dict[str, Any]]) -> None:
    response = handle.client.post("/v1/users/batch", json=users, headers={APP_ID_HEADER: app_id})
    assert response.status_code == 201, response.text


WEIRD_ID = 'a/b %2F ünï <script>alert("x")</script>'


def test_search_paging_and_user_page_in_chromium(
    fresh_collector: Callable[..., ServerThread], tmp_path: Path
) -> None:
    server = fresh_collector()
    handle = CollectorHandle(server)
    base = server.url + "/"
    try:
        seed(
            handle,
            "browser-app",
            [
                {
                    "user_id": f"user-{n:03d}",
                    "company_id": "acme" if n % 10 == 0 else "globex",
                    "modified_time": f"2026-05-01T{n // 60:02d}:{n % 60:02d}:00Z",
                    "metadata": {"n": n},
                }
                for n in range(130)
            ],
        )
        seed(handle, "browser-app", [{"user_id": WEIRD_ID, "company_id": "weird",
                                      "modified_time": "2026-04-01T00:00:00Z",
                                      "session_token": "secret-token-1234"}])  # fmt: skip
        seed(handle, "browser-app", [{"user_id": WEIRD_ID, "ip_address": "192.0.2.7",
                                      "modified_time": "2026-04-02T00:00:00Z"}])  # fmt: skip
    finally:
        handle.close()
    profile_dir = tmp_path / "chromium-profile"

    # The first page: the true total, newest first, a link to the next page.
    first = browse(base, profile_dir)
    assert "131 profiles" in first.text
    assert len(first.profile_rows) == 100
    assert first.profile_rows[0][0] == "user-129"
    assert "Page 1 of 2" in first.text

    # Paging: follow the rendered "Older" link.
    older = first.link(rel="next")
    second = browse(urljoin(base, older["href"]), profile_dir)
    assert [row[0] for row in second.profile_rows][:2] == ["user-029", "user-028"]
    assert second.profile_rows[-1][0] == WEIRD_ID  # the oldest profile comes last
    assert len(second.profile_rows) == 31
    assert "Page 2 of 2" in second.text
    assert second.link(rel="prev")["text"] == "← Newer"

    # Search: what the page's GET form submits for "acme".
    form = next(form for form in first.forms if form.get("method") == "get")
    searched = browse(urljoin(base, form["action"]) + "?" + urlencode({"q": "acme"}), profile_dir)
    assert "13 of 131 profiles match" in searched.text
    assert {row[1] for row in searched.profile_rows} == {"acme"}
    assert searched.inputs["q"] == "acme"  # the box keeps the query

    # The user page of an id with "/", "%", unicode and markup, through its rendered link.
    link = second.link(text=WEIRD_ID)
    user = browse(urljoin(base, link["href"]), profile_dir)
    assert f"User {WEIRD_ID}" in user.text
    assert "192.0.2.7" in user.text
    assert "secret-token-1234" not in user.text
    assert "History (2, newest first)" in user.text
    history = [row for row in user.rows if len(row) == 3]
    assert history[0][1] == "2026-04-02T00:00:00.000Z"
    assert "ip_address: — → 192.0.2.7" in history[0][2]
    assert "session token added …1234" in history[1][2]

    # An unknown user: the browser shows the 404 page.
    missing = browse(urljoin(base, "/users/nobody%2Fhere"), profile_dir)
    assert "User not found" in missing.text
    assert "nobody/here" in missing.text
