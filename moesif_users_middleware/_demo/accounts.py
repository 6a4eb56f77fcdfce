"""The account records the example apps sign users in with (no framework needed).

A real app loads these from its database and stores hashed passwords; the examples keep
a small dict per app: email -> (password, account).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

__all__ = [
    "Account",
    "Accounts",
    "check_password",
    "company_domain",
    "company_metadata",
    "sample_accounts",
]


@dataclass(frozen=True)
class Account:
    """A user record, as a real app would load it from its database."""

    id: str
    email: str
    name: str
    company_id: str
    plan: str = "free"


Accounts = dict[str, tuple[str, Account]]


def sample_accounts(*rows: tuple[str, Account]) -> Accounts:
    """A fresh account store holding ``(password, account)`` rows, keyed by email."""
    return {account.email: (password, account) for password, account in rows}


def check_password(accounts: Accounts, email: str, password: str) -> Account | None:
    """The account whose password this is (compared in constant time), else ``None``."""
    entry = accounts.get(email)
    if entry is None or not hmac.compare_digest(entry[0].encode(), password.encode()):
        return None
    return entry[1]


# What a real app keeps in its companies table: id -> (name, website domain, revenue, plan).
_COMPANIES: dict[str, tuple[str, str, int, str]] = {
    "acme": ("Acme, Inc", "acmeinc.com", 24000, "enterprise"),
    "globex": ("Globex Corporation", "globex.example", 12500, "pro"),
    "initech": ("Initech", "initech.example", 3200, "pro"),
    "umbrella": ("Umbrella Corp", "umbrella.example", 48000, "enterprise"),
    "hooli": ("Hooli", "hooli.example", 99000, "free"),
}


def company_domain(company_id: str) -> str | None:
    """The company's website domain (Moesif enriches the company profile from it)."""
    row = _COMPANIES.get(company_id)
    return row[1] if row else None


def company_metadata(company_id: str) -> dict[str, object]:
    """The company's custom properties: its name, monthly revenue and plan."""
    name, _, mrr, plan = _COMPANIES.get(company_id, (company_id, "", 0, "free"))
    return {"org_name": name, "mrr": mrr, "plan_name": plan}
