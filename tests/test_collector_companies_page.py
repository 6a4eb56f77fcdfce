"""The collector's companies pages: the list at ``/companies`` (search, paging, the
application filter) and a page per company listing its users, linked both ways with the
user pages; every value escaped. Over loopback HTTP, and in a real headless Chromium."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import pytest
from chromium import NEEDS_CHROMIUM, browse
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import APP_ID_HEADER, CollectorHandle, ServerThread

pytest.importorskip("starlette")

from moesif_users_middleware.collector.html import (
    CompanySection,
    ListView,
    company_href,
    render_company,
    render_page,
)
from moesif_users_middleware.collector.kinds import COMPANIES


def prefix_of(application_id: str) -> str:
    return hashlib.sha256(application_id.encode()).hexdigest()[:16]


def store(
    collector: CollectorHandle, app_id: str, kind: str, records: list[dict[str, Any]]
) -> None:
    response = collector.client.post(
        f"/v1/{kind}/batch", json=records, headers={APP_ID_HEADER: app_id}
    )
    assert response.status_code == 201, response.text


def html_at(collector: CollectorHandle, path: str, **params: str) -> str:
    response = collector.client.get(path, params=params)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    return response.text


def href_of(html: str, text: str) -> str:
    """The href of the one link whose text is ``text`` (as the page escapes it)."""
    found = re.findall(rf'<a href="([^"]*)">{re.escape(escape(text))}</a>', html)
    assert len(found) == 1, (text, found)
    return found[0].replace("&amp;", "&")


def test_the_list_shows_companies_with_their_fields(
    collector: CollectorHandle, app_id: str
) -> None:
    store(collector, app_id, "companies", [
        {"company_id": "list-co", "company_domain": "acme.example", "ip_address": "203.0.113.4",
         "session_token": "secret-api-key-1", "campaign": {"utm_source": "partner"},
         "metadata": {"plan_name": "Enterprise"}},
        {"company_id": "list-co", "session_token": "secret-api-key-2"},
    ])  # fmt: skip

    html = html_at(collector, "/companies", partition=prefix_of(app_id))

    for text in ("list-co", "acme.example", "203.0.113.4", "utm_source=partner", "Enterprise"):
        assert text in html
    # Other tests' companies share the collector: the count is of this partition's.
    assert re.search(r'"summary">1 (company|of [\d,]+ companies match) · showing 1&ndash;1', html)
    assert '<td class="num">2</td>' in html  # two tokens, counted, never shown
    assert "secret-api-key" not in html
    assert '<a href="/companies" aria-current="page">Companies</a>' in html
    assert 'placeholder="Company id or domain prefix"' in html
    assert '<a href="/" aria-current="page">Users</a>' in html_at(collector, "/")


def test_the_list_searches_ids_and_domains_and_pages(
    collector: CollectorHandle, app_id: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    store(collector, app_id, "companies", [
        {"company_id": f"co-{tag}-{n}", "company_domain": f"d{n}-{tag}.example",
         "modified_time": f"2026-03-01T00:00:0{n}Z"} for n in range(5)
    ])  # fmt: skip
    key = prefix_of(app_id)

    by_id = html_at(collector, "/companies", q=f"co-{tag}-3")
    by_domain = html_at(collector, "/companies", q=f"d4-{tag}")
    first = html_at(collector, "/companies", partition=key, limit="2")
    second = html_at(collector, "/companies", partition=key, limit="2", page="2")

    assert "1 of " in by_id
    assert f">co-{tag}-3</a>" in by_id
    assert f">co-{tag}-4</a>" in by_domain
    assert "company id or domain starting with" in by_domain
    assert f'rel="next" href="/companies?partition={key}&amp;page=2&amp;limit=2"' in first
    assert f'rel="prev" href="/companies?partition={key}&amp;page=1&amp;limit=2"' in second
    assert first.index(f">co-{tag}-4<") < first.index(f">co-{tag}-3<")  # newest first
    assert "Page 1 of 3" in first
    assert f">co-{tag}-2</a>" in second


def test_the_application_filter_redirects_within_the_companies_list(
    collector: CollectorHandle,
) -> None:
    app_id = "app-id-must-not-appear-" + uuid.uuid4().hex
    store(collector, app_id, "companies", [{"company_id": "c"}])

    posted = collector.client.post("/companies", data={"app": app_id, "q": "c"})
    linked = collector.client.get("/companies", params={"app": app_id})

    assert posted.status_code == linked.status_code == 303
    assert posted.headers["location"] == f"/companies?q=c&partition={prefix_of(app_id)}"
    assert linked.headers["location"] == f"/companies?partition={prefix_of(app_id)}"
    for html in (html_at(collector, "/companies"), posted.text, linked.text):
        assert app_id[-32:] not in html


def test_a_company_page_lists_its_users_and_each_links_to_the_other(
    collector: CollectorHandle, app_id: str
) -> None:
    key = prefix_of(app_id)
    store(collector, app_id, "companies", [
        {"company_id": "acme", "company_domain": "acme.example", "metadata": {"mrr": 24000},
         "modified_time": "2026-04-01T00:00:00Z"},
        {"company_id": "acme", "metadata": {"mrr": 30000}, "modified_time": "2026-04-02T00:00:00Z"},
        {"company_id": "acme-2"},
    ])  # fmt: skip
    store(collector, app_id, "users", [
        {"user_id": "ann", "company_id": "acme", "modified_time": "2026-04-03T00:00:00Z",
         "user_agent_string": "agent/ann"},
        {"user_id": "bob", "company_id": "acme", "modified_time": "2026-04-04T00:00:00Z"},
        {"user_id": "cid", "company_id": "acme-2"},  # another company, same prefix
        {"user_id": "dan"},
    ])  # fmt: skip

    listing = html_at(collector, "/companies", partition=key)
    company = collector.client.get(href_of(listing, "acme")).text

    assert "Company <code>acme</code>" in company
    assert "acme.example" in company
    assert "&quot;mrr&quot;: 30000" in company
    assert 'Users <span class="muted">(2, newest first)' in company
    assert company.index(">bob</a>") < company.index(">ann</a>")
    assert "agent/ann" in company
    assert ">cid</a>" not in company
    assert ">dan</a>" not in company
    assert '<code>metadata.mrr</code>: <code class="old">24000</code>' in company  # history
    user = collector.client.get(href_of(company, "ann"))
    assert user.status_code == 200
    assert href_of(user.text, "acme") == company_href("acme", key)
    by_prefix = html_at(collector, "/companies/acme", partition=key[:6])  # as the filter takes
    assert "acme.example" in by_prefix
    assert 'Users <span class="muted">(2, newest first)' in by_prefix
    users_list = html_at(collector, "/", partition=key)
    assert href_of(users_list.split(">ann</a>")[1], "acme") == company_href("acme", key)


def test_a_company_only_its_users_name_still_has_a_page(
    collector: CollectorHandle, app_id: str
) -> None:
    store(collector, app_id, "users", [{"user_id": "u", "company_id": "named-only"}])

    response = collector.client.get(company_href("named-only", prefix_of(app_id)))

    assert response.status_code == 200
    assert "No company profile is stored; its users name it." in response.text
    assert ">u</a>" in response.text


def test_a_company_page_pages_through_its_users(collector: CollectorHandle, app_id: str) -> None:
    key = prefix_of(app_id)
    store(collector, app_id, "users", [
        {"user_id": f"m-{n:03d}", "company_id": "big", "modified_time": f"2026-02-01T00:{n // 60:02d}:{n % 60:02d}Z"}
        for n in range(120)
    ])  # fmt: skip

    first = html_at(collector, "/companies/big", partition=key)
    older = re.search(r'rel="next" href="([^"]+)"', first)
    assert older is not None
    second = collector.client.get(older.group(1).replace("&amp;", "&")).text

    assert len(re.findall(r">m-\d{3}</a>", first)) == 100
    assert first.index(">m-119<") < first.index(">m-020<")
    assert len(re.findall(r">m-\d{3}</a>", second)) == 20
    assert ">m-000</a>" in second
    assert 'Users <span class="muted">(120, newest first)' in second
    assert older.group(1) == f"/companies/big?partition={key}&amp;page=2"


COMPANY_IDS = ["a/b", "100%", "ünï 🎉", '<script>alert("x")</script>', "..", ".", "?#&="]


def test_odd_company_ids_are_linked_and_safe(collector: CollectorHandle, app_id: str) -> None:
    store(collector, app_id, "companies", [{"company_id": cid, "session_token": f"secret-{n}-value"}
                                          for n, cid in enumerate(COMPANY_IDS)])  # fmt: skip
    store(collector, app_id, "users", [{"user_id": f"of-{n}", "company_id": cid}
                                      for n, cid in enumerate(COMPANY_IDS)])  # fmt: skip
    listing = html_at(collector, "/companies", partition=prefix_of(app_id))

    for n, company_id in enumerate(COMPANY_IDS):
        response = collector.client.get(href_of(listing, company_id))
        assert response.status_code == 200, company_id
        assert f"<code>{escape(company_id)}</code>" in response.text
        assert f">of-{n}</a>" in response.text
        assert "<script" not in response.text
        assert f"secret-{n}-value" not in response.text


@pytest.mark.parametrize(
    "path", ["/companies/nobody-here", "/companies/%3Cscript%3E", "/companies/"]
)
def test_an_unknown_company_is_an_html_404(collector: CollectorHandle, path: str) -> None:
    response = collector.client.get(path)

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Company not found" in response.text
    assert "<script>" not in response.text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/companies", {"partition": "<b>"}),
        ("/companies", {"page": "0"}),
        ("/companies", {"limit": "100000"}),
        ("/companies", {"q": "x" * 201}),
        ("/companies/acme", {"partition": "xyz"}),
        ("/companies/acme", {"page": "-1"}),
    ],
)
def test_bad_page_parameters_are_json_400(
    collector: CollectorHandle, path: str, params: dict[str, str]
) -> None:
    response = collector.client.get(path, params=params)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid parameter"
    assert "<b>" not in response.text


text_values = st.text(
    alphabet=st.sampled_from(list("<>&\"'/=x ü\n")) | st.characters(), max_size=20
)


FIELDS = ("partition", "company_id", "company_domain", "ip_address", "modified_time",
          "meta_key", "meta_value", "campaign_value", "user_id", "search")  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(values=st.fixed_dictionaries(dict.fromkeys(FIELDS, text_values)))
def test_the_companies_pages_escape_every_value(values: dict[str, str]) -> None:
    def pages(v: dict[str, str]) -> str:
        company = {
            "company_id": v["company_id"],
            "company_domain": v["company_domain"],
            "ip_address": v["ip_address"],
            "modified_time": v["modified_time"],
            "campaign": {"utm_source": v["campaign_value"]},
            "metadata": {v["meta_key"]: [v["meta_value"]]},
            "session_tokens": [v["company_id"]],
        }
        user = {
            "user_id": v["user_id"],
            "company_id": v["company_id"],
            "modified_time": v["modified_time"],
        }
        history = [
            {
                "applied_time": v["modified_time"],
                "modified_time": v["modified_time"],
                "changes": {v["meta_key"]: [None, v["meta_value"]], "session_token": v["user_id"]},
            }
        ]
        view = ListView(
            [(v["partition"], company)], 1, 1, 1, 10, v["search"], v["partition"], COMPANIES
        )
        section = CompanySection(v["partition"], company, history, [user], 1)
        html = render_page(view) + render_company(v["company_id"], [section])
        return re.sub(r"</?(details|summary|pre)>", "", html)  # fmt: skip

    html = pages(values)
    blank = pages({key: "x" if value else "" for key, value in values.items()})
    for char in "<>":  # markup comes from the template only
        assert html.count(char) == blank.count(char)


# --- in a real browser --------------------------------------------------------------------


@NEEDS_CHROMIUM
def test_companies_tab_search_paging_and_company_page_in_chromium(
    fresh_collector: Callable[..., ServerThread], tmp_path: Path
) -> None:
    server = fresh_collector()
    handle = CollectorHandle(server)
    base = server.url + "/"
    try:
        store(handle, "browser-app", "companies", [
            {"company_id": f"co-{n:03d}", "company_domain": f"c{n}.example",
             "modified_time": f"2026-05-01T{n // 60:02d}:{n % 60:02d}:00Z"} for n in range(105)
        ])  # fmt: skip
        store(handle, "browser-app", "users", [
            {"user_id": f"user-{n}", "company_id": "co-104", "modified_time": f"2026-05-02T00:00:0{n}Z"}
            for n in range(3)
        ])  # fmt: skip
    finally:
        handle.close()
    profile_dir = tmp_path / "chromium-profile"

    users = browse(base, profile_dir)
    companies = browse(urljoin(base, users.link(text="Companies")["href"]), profile_dir)
    assert "105 companies" in companies.text
    assert len(companies.rows_with(8)) == 100
    assert companies.rows_with(8)[0][:2] == ["co-104", "c104.example"]
    assert "Page 1 of 2" in companies.text

    second = browse(urljoin(base, companies.link(rel="next")["href"]), profile_dir)
    assert [row[0] for row in second.rows_with(8)] == [f"co-{n:03d}" for n in range(4, -1, -1)]

    form = next(form for form in companies.forms if form.get("method") == "get")
    searched = browse(urljoin(base, form["action"]) + "?" + urlencode({"q": "c7."}), profile_dir)
    assert re.search(r"(?<!\d)1 of 105 companies match", searched.text)  # the domain c7.example
    assert [row[0] for row in searched.rows_with(8)] == ["co-007"]

    company = browse(urljoin(base, companies.link(text="co-104")["href"]), profile_dir)
    assert "Company co-104" in company.text
    assert "Users (3, newest first)" in company.text
    assert [row[0] for row in company.rows_with(6)] == ["user-2", "user-1", "user-0"]
    user = browse(urljoin(base, company.link(text="user-1")["href"]), profile_dir)
    assert "User user-1" in user.text
    back = browse(urljoin(base, user.link(text="co-104")["href"]), profile_dir)
    assert "Company co-104" in back.text

    missing = browse(urljoin(base, "/companies/nobody"), profile_dir)
    assert "Company not found" in missing.text
