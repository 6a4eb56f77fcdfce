"""What the collector's tables show, per record kind: the list's columns, a company's
users, and the rows of a profile's page. Each cell is a function of (partition, profile)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .kinds import COMPANIES, USERS, Kind
from .markup import (
    campaign_line,
    company_href,
    mask,
    metadata_cell,
    pretty,
    profile_href,
    text,
    time_cell,
)

__all__ = ["LISTINGS", "MEMBER_COLUMNS", "Cell", "Listing", "Profile", "fields", "table"]

Profile = Mapping[str, Any]
Cell = Callable[[str, Profile], str]  # (partition, profile) -> its HTML


def _id_cell(kind: Kind) -> Cell:
    def cell(partition: str, profile: Profile) -> str:
        record_id = str(profile.get(kind.id_field, ""))
        link = f'<a href="{text(profile_href(kind, record_id, partition))}">{text(record_id)}</a>'
        return f'<td class="clip" title="{text(record_id)}">{link}</td>'

    return cell


def _company_cell(partition: str, profile: Profile) -> str:
    company = text(profile.get("company_id"))
    return f'<td class="clip" title="{company}">{_company_link(partition, profile)}</td>'


def _clipped(field: str) -> Cell:
    return lambda partition, profile: (
        f'<td class="clip" title="{text(profile.get(field))}">{text(profile.get(field))}</td>'
    )


def _partition_cell(partition: str, profile: Profile) -> str:
    return f'<td><code title="{text(partition)}">{text(partition[:8])}</code></td>'


def _ip_cell(partition: str, profile: Profile) -> str:
    return f"<td>{text(profile.get('ip_address'))}</td>"


def _campaign_cell(partition: str, profile: Profile) -> str:
    campaign = campaign_line(profile.get("campaign"))
    return f'<td class="clip" title="{text(campaign)}">{text(campaign)}</td>'


def _metadata_cell(partition: str, profile: Profile) -> str:
    return f"<td>{metadata_cell(profile.get('metadata'))}</td>"


def _tokens_cell(partition: str, profile: Profile) -> str:
    return f'<td class="num">{len(profile.get("session_tokens") or ())}</td>'


def _modified_cell(partition: str, profile: Profile) -> str:
    return time_cell(profile.get("modified_time"))


@dataclass(frozen=True)
class Listing:
    """What tells the users' list from the companies' list."""

    one: str  # "profile": what the summary counts
    many: str  # "profiles"
    hint: str  # the search box's placeholder
    searched: str  # what the search matches, in the summary
    columns: tuple[tuple[str, Cell], ...]  # (header, cell) per column


LISTINGS = {
    USERS.name: Listing(
        "profile",
        "profiles",
        "User id or company id prefix",
        "user or company id",
        (
            ("user id", _id_cell(USERS)),
            ("company", _company_cell),
            ("partition", _partition_cell),
            ("ip address", _ip_cell),
            ("user agent", _clipped("user_agent_string")),
            ("campaign", _campaign_cell),
            ("metadata", _metadata_cell),
            ("tokens", _tokens_cell),
            ("modified (UTC)", _modified_cell),
        ),
    ),
    COMPANIES.name: Listing(
        "company",
        "companies",
        "Company id or domain prefix",
        "company id or domain",
        (
            ("company id", _id_cell(COMPANIES)),
            ("domain", _clipped("company_domain")),
            ("partition", _partition_cell),
            ("ip address", _ip_cell),
            ("campaign", _campaign_cell),
            ("metadata", _metadata_cell),
            ("tokens", _tokens_cell),
            ("modified (UTC)", _modified_cell),
        ),
    ),
}
# A company's users, on its page: the partition and company are the page's own.
MEMBER_COLUMNS: tuple[tuple[str, Cell], ...] = (
    ("user id", _id_cell(USERS)),
    ("ip address", _ip_cell),
    ("user agent", _clipped("user_agent_string")),
    ("metadata", _metadata_cell),
    ("tokens", _tokens_cell),
    ("modified (UTC)", _modified_cell),
)


def table(
    columns: Sequence[tuple[str, Cell]], rows: Sequence[tuple[str, Profile]], empty: str
) -> str:
    """A table with a row per (partition, profile) (``empty`` when there is none)."""
    if rows:
        body = "".join(
            "<tr>" + "".join(cell(partition, profile) for _, cell in columns) + "</tr>"
            for partition, profile in rows
        )
    else:
        body = f'<tr><td colspan="{len(columns)}" class="muted">{empty}</td></tr>'
    heads = "".join(f"<th>{header}</th>" for header, _ in columns)
    return (
        f'<div class="scroll"><table><thead><tr>{heads}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def fields(kind: Kind, partition: str, profile: Profile) -> str:
    """A profile's page: a row per field, as the kind shows them."""
    rows = "".join(
        f"<tr><th>{name}</th><td>{value(partition, profile)}</td></tr>"
        for name, value in _FIELDS[kind.name]
    )
    return f'<table class="kv">{rows}</table>'


def _company_link(partition: str, profile: Profile) -> str:
    company = profile.get("company_id")
    if not company:
        return ""
    return f'<a href="{text(company_href(str(company), partition))}">{text(company)}</a>'


def _plain(field: str) -> Cell:
    return lambda partition, profile: text(profile.get(field))


def _session_tokens(partition: str, profile: Profile) -> str:
    tokens = profile.get("session_tokens") or []
    masked = " (" + ", ".join(mask(str(token)) for token in tokens) + ")" if tokens else ""
    return text(f"{len(tokens)}{masked}")


def _metadata_block(partition: str, profile: Profile) -> str:
    metadata = profile.get("metadata")
    return f"<pre>{text(pretty(metadata))}</pre>" if metadata else ""


def _partition_code(partition: str, profile: Profile) -> str:
    return f"<code>{text(partition)}</code>"


def _campaign_text(partition: str, profile: Profile) -> str:
    return text(campaign_line(profile.get("campaign")))


_FIELDS: dict[str, tuple[tuple[str, Cell], ...]] = {
    USERS.name: (
        ("partition", _partition_code),
        ("company id", _company_link),
        ("created", _plain("created_time")),
        ("modified", _plain("modified_time")),
        ("ip address", _plain("ip_address")),
        ("user agent", _plain("user_agent_string")),
        ("campaign", _campaign_text),
        ("session tokens", _session_tokens),
        ("metadata", _metadata_block),
    ),
    COMPANIES.name: (
        ("partition", _partition_code),
        ("company domain", _plain("company_domain")),
        ("created", _plain("created_time")),
        ("modified", _plain("modified_time")),
        ("ip address", _plain("ip_address")),
        ("campaign", _campaign_text),
        ("session tokens", _session_tokens),
        ("metadata", _metadata_block),
    ),
}
