"""The collector's HTML pages: a list per record kind (users at ``/``, companies at
``/companies``) and a page per profile, every value escaped.

Plain HTML and inline CSS (the page's CSP allows nothing else): forms for search and the
application filter, ``<details>`` for long metadata, links for paging. Partitions are
shown by their hash; the pages have no way to show an application id (the store never
holds one), and session tokens appear only as a count or masked to their last characters.
A user's page links to its company's page, which lists the company's users.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .cells import LISTINGS, MEMBER_COLUMNS, Profile, fields, table
from .kinds import COMPANIES, USERS, Kind
from .markup import (
    DEFAULT_LIMIT,
    TITLE,
    clip,
    company_href,
    document,
    list_path,
    mask,
    pager,
    profile_href,
    profile_location,
    text,
    user_href,
)

__all__ = [
    "CompanySection",
    "ListView",
    "company_href",
    "list_path",
    "profile_href",
    "render_company",
    "render_not_found",
    "render_page",
    "render_user",
    "user_href",
]

_MAX_VALUE = 300  # characters of one history value


@dataclass
class ListView:
    """What a list page shows: one page of rows and where it sits among the rest."""

    rows: Sequence[tuple[str, Profile]]
    total: int  # profiles of the kind stored, every partition
    matching: int  # profiles the filters keep
    page: int  # 1-based
    limit: int
    search: str = ""
    partition: str = ""  # hash (prefix) of the filtered application, "" for all
    kind: Kind = USERS


@dataclass
class CompanySection:
    """A company as one partition holds it: its profile, history and a page of its users."""

    partition: str
    profile: Profile | None  # None: no company profile stored, only users naming it
    history: Sequence[Mapping[str, Any]]
    users: Sequence[Profile]  # this page of the company's users, newest first
    user_count: int
    page: int = 1
    limit: int = DEFAULT_LIMIT


# -- the list pages ------------------------------------------------------------------------


def render_page(view: ListView) -> str:
    """A list page: search and filter forms, a table of profiles, paging links."""
    listing = LISTINGS[view.kind.name]
    path = list_path(view.kind)
    pages = max(1, -(-view.matching // view.limit))
    first = (view.page - 1) * view.limit + 1

    def counted(number: int) -> str:
        return f"{number:,} {listing.one if number == 1 else listing.many}"

    if view.matching == view.total:
        summary = counted(view.total)
    else:
        summary = f"{view.matching:,} of {counted(view.total)} match"
    if view.rows:
        summary += f" · showing {first:,}&ndash;{first + len(view.rows) - 1:,}, newest first"
    filters = []
    if view.partition:
        filters.append(f"application partition <code>{text(view.partition)}</code>")
    if view.search:
        filters.append(f"{listing.searched} starting with <code>{text(view.search)}</code>")
    if filters:
        summary += f' · filtered by {" and ".join(filters)} · <a href="{path}">clear filters</a>'
    params = {"q": view.search, "partition": view.partition}
    profiles = table(
        listing.columns,
        view.rows,
        "No profiles stored yet." if not view.total else "No profiles on this page.",
    )
    content = (
        f'{_forms(path, listing.hint, view)}<p class="summary">{summary}</p>{profiles}'
        f"{pager(path, {k: v for k, v in params.items() if v}, view.page, pages, view.limit)}"
    )
    return document(TITLE, content, path)


def _forms(path: str, hint: str, view: ListView) -> str:
    hidden_partition = (
        f'<input type="hidden" name="partition" value="{text(view.partition)}">'
        if view.partition
        else ""
    )
    hidden_search = (
        f'<input type="hidden" name="q" value="{text(view.search)}">' if view.search else ""
    )
    return (
        '<div class="bar">'
        f'<form method="get" action="{path}" role="search">'
        f'<input type="search" name="q" value="{text(view.search)}" '
        f'placeholder="{hint}" aria-label="Search">'
        f"{hidden_partition}<button>Search</button></form>"
        f'<form method="post" action="{path}">'
        '<input type="password" name="app" autocomplete="off" '
        'placeholder="Application id" aria-label="Application id">'
        f"{hidden_search}<button>Filter by application</button></form>"
        "</div>"
    )


# -- the profile pages ---------------------------------------------------------------------


def render_user(
    user_id: str,
    found: Sequence[tuple[str, Profile, Sequence[Mapping[str, Any]]]],
) -> str:
    """A user's page: for each partition holding ``user_id``, the profile and its history."""
    sections = "".join(
        _section(
            partition,
            fields(USERS, partition, profile),
            history,
            several=len(found) > 1,
        )
        for partition, profile, history in found
    )
    return _profile_document(USERS, user_id, sections)


def render_company(company_id: str, found: Sequence[CompanySection]) -> str:
    """A company's page: for each partition holding the company (or users naming it),
    its profile, a page of its users and its history."""
    sections = "".join(
        _section(
            found_in.partition,
            fields(COMPANIES, found_in.partition, found_in.profile)
            if found_in.profile is not None
            else '<p class="muted">No company profile is stored; its users name it.</p>',
            found_in.history,
            several=len(found) > 1,
            between=_members(company_id, found_in),
        )
        for found_in in found
    )
    return _profile_document(COMPANIES, company_id, sections)


def render_not_found(record_id: str, kind: Kind = USERS) -> str:
    """The 404 page for an id nobody stored."""
    noun = kind.noun
    return document(
        f"Not found · {TITLE}",
        f'<p><a href="{list_path(kind)}">← All {LISTINGS[kind.name].many}</a></p>'
        f'<h1 class="profile">{noun.capitalize()} not found</h1>'
        f"<p>No profile is stored for {noun} id <code>{text(record_id)}</code>.</p>",
        list_path(kind),
    )


def _profile_document(kind: Kind, record_id: str, sections: str) -> str:
    noun = kind.noun.capitalize()
    return document(
        f"{noun} {record_id} · {TITLE}",
        f'<p><a href="{list_path(kind)}">← All {LISTINGS[kind.name].many}</a></p>'
        f'<h1 class="profile">{noun} <code>{text(record_id)}</code></h1>{sections}',
        list_path(kind),
    )


def _members(company_id: str, section: CompanySection) -> str:
    """The company's users: a table, newest first, and its pager."""
    count = section.user_count
    pages = max(1, -(-count // section.limit))
    rows = [(section.partition, user) for user in section.users]
    empty = "No users name this company." if not count else "No users on this page."
    path, params = profile_location(COMPANIES, company_id)
    params["partition"] = section.partition
    return (
        f'<h2>Users <span class="muted">({count:,}, newest first)</span></h2>'
        f"{table(MEMBER_COLUMNS, rows, empty)}"
        f"{pager(path, params, section.page, pages, section.limit)}"
    )


def _section(
    partition: str,
    fields: str,
    history: Sequence[Mapping[str, Any]],
    *,
    several: bool,
    between: str = "",
) -> str:
    if history:
        entries = "".join(
            f'<tr><td class="time">{text(entry.get("applied_time"))}</td>'
            f'<td class="time">{text(entry.get("modified_time"))}</td>'
            f"<td>{_changes(entry.get('changes') or {})}</td></tr>"
            for entry in history
        )
    else:
        entries = '<tr><td colspan="3" class="muted">No recorded changes.</td></tr>'
    heading = f"<h2>Partition <code>{text(partition)}</code></h2>" if several else ""
    return (
        f"<section>{heading}{fields}{between}"
        f'<h2>History <span class="muted">({len(history)}, newest first)</span></h2>'
        '<table class="history"><thead><tr><th>applied (server time)</th><th>modified_time</th>'
        f"<th>changed</th></tr></thead><tbody>{entries}</tbody></table></section>"
    )


def _changes(changes: Mapping[str, Any]) -> str:
    items = []
    for path, change in changes.items():
        if path == "session_token":
            items.append(f"<li>session token added <code>{text(mask(str(change)))}</code></li>")
        elif isinstance(change, list) and len(change) == 2:
            old, new = change
            was = "—" if old is None else f'<code class="old">{text(_value(old))}</code>'
            now = "—" if new is None else f'<code class="new">{text(_value(new))}</code>'
            items.append(f"<li><code>{text(path)}</code>: {was} → {now}</li>")
    return f'<ul class="changes">{"".join(items)}</ul>'


def _value(value: object) -> str:
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return clip(shown, _MAX_VALUE)
