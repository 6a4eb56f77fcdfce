"""The collector's HTML pages: the profile list and a page per user, every value escaped.

Plain HTML and inline CSS (the page's CSP allows nothing else): forms for search and the
application filter, ``<details>`` for long metadata, links for paging. Partitions are
shown by their hash; the pages have no way to show an application id (the store never
holds one), and session tokens appear only as a count or masked to their last characters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["ListView", "render_not_found", "render_page", "render_user", "user_href"]

TITLE = "Moesif users collector"
_MAX_PRETTY = 4000  # characters of metadata shown expanded
_MAX_SUMMARY = 70  # characters of one-line metadata
_MAX_VALUE = 300  # characters of one history value

_STYLE = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
header{background:#24292f;color:#fff;padding:12px 24px}
header h1{font-size:18px;margin:0;font-weight:600}
header a{color:#fff;text-decoration:none}
main{padding:16px 24px}
a{color:#0969da}
h1.user{font-size:20px;margin:4px 0 12px;word-break:break-all}
h2{font-size:16px;margin:20px 0 8px}
.scroll{overflow-x:auto}
.bar{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin-bottom:12px}
.bar form{display:flex;gap:6px;margin:0}
input{font:inherit;padding:5px 8px;border:1px solid #d0d7de;border-radius:6px;width:18em}
button{font:inherit;padding:5px 12px;border:1px solid #d0d7de;border-radius:6px;
background:#fff;cursor:pointer}
.summary{margin:0 0 10px;color:#57606a}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de}
th,td{border-bottom:1px solid #d8dee4;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f6f8fa;font-weight:600;white-space:nowrap;font-size:13px}
tbody tr:hover{background:#f6f8fa}
td{white-space:nowrap}
td.clip{max-width:12em;overflow:hidden;text-overflow:ellipsis}
td.num{text-align:right}
td.time{font-variant-numeric:tabular-nums;color:#57606a}
.kv td,.history td{white-space:normal;overflow-wrap:anywhere}
code,pre{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{margin:4px 0 0;white-space:pre-wrap;overflow-wrap:anywhere;max-width:48em}
details summary{cursor:pointer;overflow:hidden;text-overflow:ellipsis;max-width:18em}
details[open] summary{color:#57606a}
.muted{color:#57606a}
.pager{display:flex;gap:16px;align-items:center;margin:12px 0}
.kv th{width:11em;background:#f6f8fa}
ul.changes{margin:0;padding-left:1.1em}
.old{color:#a40e26}
.new{color:#116329}
"""


@dataclass
class ListView:
    """What the list page shows: one page of rows and where it sits among the rest."""

    rows: Sequence[tuple[str, Mapping[str, Any]]]
    total: int  # profiles stored, every partition
    matching: int  # profiles the filters keep
    page: int  # 1-based
    limit: int
    search: str = ""
    partition: str = ""  # hash (prefix) of the filtered application, "" for all


def render_page(view: ListView) -> str:
    """The list page: search and filter forms, a table of profiles, paging links."""
    pages = max(1, -(-view.matching // view.limit))
    first = (view.page - 1) * view.limit + 1
    if view.matching == view.total:
        counted = f"{view.total:,} profile{'' if view.total == 1 else 's'}"
    else:
        counted = f"{view.matching:,} of {view.total:,} profiles match"
    shown = (
        f" · showing {first:,}&ndash;{first + len(view.rows) - 1:,}, newest first"
        if view.rows
        else ""
    )
    filters = []
    if view.partition:
        filters.append(f"application partition <code>{_text(view.partition)}</code>")
    if view.search:
        filters.append(f"user or company id starting with <code>{_text(view.search)}</code>")
    filtered = ""
    if filters:
        filtered = f' · filtered by {" and ".join(filters)} · <a href="/">clear filters</a>'
    hidden_partition = (
        f'<input type="hidden" name="partition" value="{_text(view.partition)}">'
        if view.partition
        else ""
    )
    hidden_search = (
        f'<input type="hidden" name="q" value="{_text(view.search)}">' if view.search else ""
    )
    forms = (
        '<div class="bar">'
        '<form method="get" action="/" role="search">'
        f'<input type="search" name="q" value="{_text(view.search)}" '
        'placeholder="User id or company id prefix" aria-label="Search">'
        f"{hidden_partition}<button>Search</button></form>"
        '<form method="post" action="/">'
        '<input type="password" name="app" autocomplete="off" '
        'placeholder="Application id" aria-label="Application id">'
        f"{hidden_search}<button>Filter by application</button></form>"
        "</div>"
    )
    if view.rows:
        body = "".join(_row(partition, profile) for partition, profile in view.rows)
    else:
        message = "No profiles stored yet." if not view.total else "No profiles on this page."
        body = f'<tr><td colspan="9" class="muted">{message}</td></tr>'
    table = (
        '<div class="scroll"><table><thead><tr><th>user id</th><th>company</th><th>partition</th>'
        "<th>ip address</th><th>user agent</th><th>campaign</th><th>metadata</th>"
        "<th>tokens</th><th>modified (UTC)</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )
    return _document(
        TITLE,
        f'{forms}<p class="summary">{counted}{shown}{filtered}</p>{table}{_pager(view, pages)}',
    )


def render_user(
    user_id: str,
    found: Sequence[tuple[str, Mapping[str, Any], Sequence[Mapping[str, Any]]]],
) -> str:
    """A user's page: for each partition holding ``user_id``, the profile and its history."""
    sections = "".join(
        _user_section(partition, profile, history, several=len(found) > 1)
        for partition, profile, history in found
    )
    return _document(
        f"User {user_id} · {TITLE}",
        f'<p><a href="/">← All profiles</a></p>'
        f'<h1 class="user">User <code>{_text(user_id)}</code></h1>{sections}',
    )


def render_not_found(user_id: str) -> str:
    """The 404 page for a user id nobody stored."""
    return _document(
        f"Not found · {TITLE}",
        '<p><a href="/">← All profiles</a></p><h1 class="user">User not found</h1>'
        f"<p>No profile is stored for user id <code>{_text(user_id)}</code>.</p>",
    )


def user_href(user_id: str, partition: str = "") -> str:
    """The URL of a user's page (every character of the id percent-encoded)."""
    query = {"partition": partition} if partition else {}
    if user_id in (".", ".."):  # a browser would resolve these path segments away
        return "/users/?" + _query({"id": user_id, **query})
    path = "/users/" + quote(user_id, safe="", errors=_UNENCODABLE)
    return path + ("?" + _query(query) if query else "")


# A stored value with a lone surrogate (not UTF-8) still renders; its link leads nowhere.
_UNENCODABLE = "backslashreplace"


def _query(query: Mapping[str, object]) -> str:
    return urlencode(query, errors=_UNENCODABLE)


def _document(title: str, content: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_text(title)}</title><style>{_STYLE}</style></head><body>"
        f'<header><h1><a href="/">{TITLE}</a></h1></header><main>{content}</main>'
        "</body></html>\n"
    )


def _pager(view: ListView, pages: int) -> str:
    def link(page: int, label: str, rel: str) -> str:
        query: dict[str, str | int] = {}
        if view.search:
            query["q"] = view.search
        if view.partition:
            query["partition"] = view.partition
        query["page"] = page
        if view.limit != 100:
            query["limit"] = view.limit
        return f'<a rel="{rel}" href="/?{_text(_query(query))}">{label}</a>'

    newer = link(min(view.page - 1, pages), "← Newer", "prev") if view.page > 1 else ""
    older = link(view.page + 1, "Older →", "next") if view.page < pages else ""
    where = f"Page {view.page:,} of {pages:,}"
    return f'<nav class="pager">{newer}<span class="muted">{where}</span>{older}</nav>'


def _row(partition: str, profile: Mapping[str, Any]) -> str:
    user_id = str(profile.get("user_id", ""))
    company = profile.get("company_id")
    company_cell = (
        f'<a href="/?{_text(_query({"q": company}))}">{_text(company)}</a>' if company else ""
    )
    agent = profile.get("user_agent_string")
    campaign = _campaign_line(profile.get("campaign"))
    cells = [
        f'<td class="clip" title="{_text(user_id)}">'
        f'<a href="{_text(user_href(user_id, partition))}">{_text(user_id)}</a></td>',
        f'<td class="clip" title="{_text(company)}">{company_cell}</td>',
        f'<td><code title="{_text(partition)}">{_text(partition[:8])}</code></td>',
        f"<td>{_text(profile.get('ip_address'))}</td>",
        f'<td class="clip" title="{_text(agent)}">{_text(agent)}</td>',
        f'<td class="clip" title="{_text(campaign)}">{_text(campaign)}</td>',
        f"<td>{_metadata_cell(profile.get('metadata'))}</td>",
        f'<td class="num">{len(profile.get("session_tokens") or ())}</td>',
        _time_cell(profile.get("modified_time")),
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _time_cell(stamp: object) -> str:
    """``2026-12-02 23:51:48`` for ``2026-12-02T23:51:48.123Z`` (the full value as title)."""
    text = "" if stamp is None else str(stamp)
    short = text[:19].replace("T", " ") if len(text) == 24 and text.endswith("Z") else text
    return f'<td class="time" title="{_text(text)}">{_text(short)}</td>'


def _user_section(
    partition: str,
    profile: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    *,
    several: bool,
) -> str:
    tokens = profile.get("session_tokens") or []
    token_text = f"{len(tokens)}" + (
        " (" + ", ".join(_mask(str(token)) for token in tokens) + ")" if tokens else ""
    )
    metadata = profile.get("metadata")
    fields = [
        ("partition", f"<code>{_text(partition)}</code>"),
        ("company id", _text(profile.get("company_id"))),
        ("created", _text(profile.get("created_time"))),
        ("modified", _text(profile.get("modified_time"))),
        ("ip address", _text(profile.get("ip_address"))),
        ("user agent", _text(profile.get("user_agent_string"))),
        ("campaign", _text(_campaign_line(profile.get("campaign")))),
        ("session tokens", _text(token_text)),
        ("metadata", f"<pre>{_text(_pretty(metadata))}</pre>" if metadata else ""),
    ]
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in fields)
    if history:
        entries = "".join(
            f'<tr><td class="time">{_text(entry.get("applied_time"))}</td>'
            f'<td class="time">{_text(entry.get("modified_time"))}</td>'
            f"<td>{_changes(entry.get('changes') or {})}</td></tr>"
            for entry in history
        )
    else:
        entries = '<tr><td colspan="3" class="muted">No recorded changes.</td></tr>'
    heading = f"<h2>Partition <code>{_text(partition)}</code></h2>" if several else ""
    return (
        f'<section>{heading}<table class="kv">{rows}</table>'
        f'<h2>History <span class="muted">({len(history)}, newest first)</span></h2>'
        '<table class="history"><thead><tr><th>applied (server time)</th><th>modified_time</th>'
        f"<th>changed</th></tr></thead><tbody>{entries}</tbody></table></section>"
    )


def _changes(changes: Mapping[str, Any]) -> str:
    items = []
    for path, change in changes.items():
        if path == "session_token":
            items.append(f"<li>session token added <code>{_text(_mask(str(change)))}</code></li>")
        elif isinstance(change, list) and len(change) == 2:
            old, new = change
            was = "—" if old is None else f'<code class="old">{_text(_value(old))}</code>'
            now = "—" if new is None else f'<code class="new">{_text(_value(new))}</code>'
            items.append(f"<li><code>{_text(path)}</code>: {was} → {now}</li>")
    return f'<ul class="changes">{"".join(items)}</ul>'


def _metadata_cell(metadata: object) -> str:
    if not metadata:
        return ""
    line = json.dumps(metadata, ensure_ascii=False, separators=(", ", ": "))
    if len(line) <= _MAX_SUMMARY:
        return f"<code>{_text(line)}</code>"
    return (
        f"<details><summary><code>{_text(_clip(line, _MAX_SUMMARY))}</code></summary>"
        f"<pre>{_text(_pretty(metadata))}</pre></details>"
    )


def _pretty(value: object) -> str:
    return _clip(json.dumps(value, ensure_ascii=False, indent=2), _MAX_PRETTY)


def _value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return _clip(text, _MAX_VALUE)


def _campaign_line(campaign: object) -> str:
    if not isinstance(campaign, Mapping):
        return ""
    return " · ".join(f"{key}={value}" for key, value in campaign.items())


def _mask(token: str) -> str:
    return "…" + token[-4:] if len(token) > 8 else "•" * 4


def _clip(text: object, width: int) -> str:
    value = "" if text is None else str(text)
    return value if len(value) <= width else value[: width - 1] + "…"


def _text(value: object) -> str:
    return "" if value is None else escape(str(value), quote=True)
