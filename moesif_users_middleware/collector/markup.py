"""Building blocks of the collector's pages: the document shell, links, escaping, cell
contents and the pager. Every value a page shows goes through :func:`text` (HTML-escaped)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from urllib.parse import quote, urlencode

from .kinds import COMPANIES, KINDS, USERS, Kind

__all__ = [
    "DEFAULT_LIMIT",
    "TITLE",
    "campaign_line",
    "clip",
    "company_href",
    "document",
    "list_path",
    "mask",
    "metadata_cell",
    "pager",
    "pretty",
    "profile_href",
    "profile_location",
    "query",
    "text",
    "time_cell",
    "user_href",
]

TITLE = "Moesif users collector"
DEFAULT_LIMIT = 100  # rows a page shows unless ?limit= says otherwise
_MAX_PRETTY = 4000  # characters of metadata shown expanded
_MAX_SUMMARY = 70  # characters of one-line metadata

_STYLE = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
header{background:#24292f;color:#fff;padding:12px 24px}
header h1{font-size:18px;margin:0;font-weight:600}
header a{color:#fff;text-decoration:none}
header{display:flex;gap:24px;align-items:baseline}
header nav{display:flex;gap:16px}
header nav a{opacity:.75}
header nav a[aria-current]{opacity:1;text-decoration:underline}
main{padding:16px 24px}
a{color:#0969da}
h1.profile{font-size:20px;margin:4px 0 12px;word-break:break-all}
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


def document(title: str, content: str, tab: str = "") -> str:
    """A whole page: ``content`` under the header; ``tab`` ("/", "/companies") is the
    list the page belongs to, marked in the header's navigation."""
    current = ' aria-current="page"'
    tabs = "".join(
        f'<a href="{path}"{current if path == tab else ""}>{kind.name.capitalize()}</a>'
        for kind in KINDS.values()
        if (path := list_path(kind))
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{text(title)}</title><style>{_STYLE}</style></head><body>"
        f'<header><h1><a href="/">{TITLE}</a></h1><nav>{tabs}</nav></header>'
        f"<main>{content}</main></body></html>\n"
    )


def pager(
    path: str, params: Mapping[str, str], page: int, pages: int, limit: int = DEFAULT_LIMIT
) -> str:
    """Newer/older links around "Page n of m": ``path`` with ``params``, the page number
    and (unless it is the default) ``limit``."""

    def link(number: int, label: str, rel: str) -> str:
        target: dict[str, str | int] = {**params, "page": number}
        if limit != DEFAULT_LIMIT:
            target["limit"] = limit
        return f'<a rel="{rel}" href="{text(path + "?" + query(target))}">{label}</a>'

    newer = link(min(page - 1, pages), "← Newer", "prev") if page > 1 else ""
    older = link(page + 1, "Older →", "next") if page < pages else ""
    where = f"Page {page:,} of {pages:,}"
    return f'<nav class="pager">{newer}<span class="muted">{where}</span>{older}</nav>'


def list_path(kind: Kind) -> str:
    """Where the list of ``kind`` is served."""
    return "/" if kind is USERS else f"/{kind.name}"


def profile_href(kind: Kind, record_id: str, partition: str = "") -> str:
    """The URL of a profile's page (every character of the id percent-encoded)."""
    path, params = profile_location(kind, record_id)
    if partition:
        params["partition"] = partition
    return path + ("?" + query(params) if params else "")


def profile_location(kind: Kind, record_id: str) -> tuple[str, dict[str, str]]:
    """A profile page's path, and the query that names the id when the path cannot."""
    base = f"/{kind.name}/"
    if record_id in (".", ".."):  # a browser would resolve these path segments away
        return base, {"id": record_id}
    return base + quote(record_id, safe="", errors=UNENCODABLE), {}


def user_href(user_id: str, partition: str = "") -> str:
    """The URL of a user's page."""
    return profile_href(USERS, user_id, partition)


def company_href(company_id: str, partition: str = "") -> str:
    """The URL of a company's page."""
    return profile_href(COMPANIES, company_id, partition)


# A stored value with a lone surrogate (not UTF-8) still renders; its link leads nowhere.
UNENCODABLE = "backslashreplace"


def query(params: Mapping[str, object]) -> str:
    """``params`` as a URL query string (without the ``?``)."""
    return urlencode(params, errors=UNENCODABLE)


def time_cell(stamp: object) -> str:
    """``2026-12-02 23:51:48`` for ``2026-12-02T23:51:48.123Z`` (the full value as title)."""
    value = "" if stamp is None else str(stamp)
    short = value[:19].replace("T", " ") if len(value) == 24 and value.endswith("Z") else value
    return f'<td class="time" title="{text(value)}">{text(short)}</td>'


def metadata_cell(metadata: object) -> str:
    """Metadata on one line, folded into ``<details>`` when long."""
    if not metadata:
        return ""
    line = json.dumps(metadata, ensure_ascii=False, separators=(", ", ": "))
    if len(line) <= _MAX_SUMMARY:
        return f"<code>{text(line)}</code>"
    return (
        f"<details><summary><code>{text(clip(line, _MAX_SUMMARY))}</code></summary>"
        f"<pre>{text(pretty(metadata))}</pre></details>"
    )


def pretty(value: object) -> str:
    """Indented JSON, clipped."""
    return clip(json.dumps(value, ensure_ascii=False, indent=2), _MAX_PRETTY)


def campaign_line(campaign: object) -> str:
    """``utm_source=google · utm_medium=cpc``."""
    if not isinstance(campaign, Mapping):
        return ""
    return " · ".join(f"{key}={value}" for key, value in campaign.items())


def mask(token: str) -> str:
    """A session token as its last four characters (or dots, when it is short)."""
    return "…" + token[-4:] if len(token) > 8 else "•" * 4


def clip(value: object, width: int) -> str:
    """``value`` as text of at most ``width`` characters."""
    shown = "" if value is None else str(value)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def text(value: object) -> str:
    """``value`` as escaped HTML text (also safe in a quoted attribute)."""
    return "" if value is None else escape(str(value), quote=True)
