"""The record kinds the collector stores (users, companies): one table row each.

Everything else in the collector (body parsing, ordering, storage, routes, pages) is
written once and reads what differs from here: the id field, the second indexed column,
the order of a stored profile's fields, the table names and the validation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..models import normalize_company, normalize_user

__all__ = ["COMPANIES", "KINDS", "USERS", "Kind"]


@dataclass(frozen=True)
class Kind:
    """One kind of record, as the collector serves and stores it."""

    name: str  # "users": the API path (/v1/users) and the profile table
    noun: str  # "user": in messages and page titles
    id_field: str  # "user_id": required in updates; the table's key column
    label_field: str  # "company_id": kept in its own column, indexed for the page's search
    fields: tuple[str, ...]  # a stored profile's fields, in the order they are shown
    history_table: str  # where the profile's changes are kept
    normalize: Callable[[object, str], dict[str, Any]]  # validation: the wire dict

    @property
    def table(self) -> str:
        """The SQLite table of this kind's profiles."""
        return self.name


USERS = Kind(
    name="users",
    noun="user",
    id_field="user_id",
    label_field="company_id",
    fields=(
        "user_id",
        "company_id",
        "session_tokens",
        "modified_time",
        "created_time",
        "ip_address",
        "user_agent_string",
        "campaign",
        "metadata",
    ),
    history_table="history",  # its name before companies existed: old databases keep it
    normalize=normalize_user,
)
COMPANIES = Kind(
    name="companies",
    noun="company",
    id_field="company_id",
    label_field="company_domain",
    fields=(
        "company_id",
        "company_domain",
        "session_tokens",
        "modified_time",
        "created_time",
        "ip_address",
        "campaign",
        "metadata",
    ),
    history_table="company_history",
    normalize=normalize_company,
)
KINDS: dict[str, Kind] = {USERS.name: USERS, COMPANIES.name: COMPANIES}
