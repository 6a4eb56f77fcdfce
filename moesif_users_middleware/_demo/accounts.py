"""The account records the example apps sign users in with (no framework needed).

A real app loads these from its database and stores hashed passwords; the examples keep
a small dict per app: email -> (password, account).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

__all__ = ["Account", "Accounts", "check_password", "sample_accounts"]


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
